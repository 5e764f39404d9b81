"""The bottom layer: charset, errors, storage, metrics, CTC decoding, model-side layers.

Imports nothing else from captchalab."""

__version__ = "0.1.0"  # keep in step with pyproject.toml
