"""Matplotlib for writing PNG files: the Agg backend, no display needed."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it costs ~0.3 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
