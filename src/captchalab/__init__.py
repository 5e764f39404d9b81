"""captchalab: synthetic captcha datasets, CTC recognizers and robustness studies."""

from captchalab.core import __version__

__all__ = ["__version__", "load"]


def load(run_dir=None, scales=None, blurs=None, length=None, charset=None):
    """The trained model in `run_dir`, ready to read captchas: `load(run).predict(images)`.
    Without `run_dir` (or with "pretrained"): the generalist model shipped with captchalab.
    scales: widths (shares of the image's width) every image is read at, the most confident
    reading kept; default: the run's own (the shipped model: 1, 0.85, 0.7), else 1 alone.
    blurs: Gaussian blurs (sigma, px) every width is also read at, likewise (the shipped
    model: 0, 1; else 0 alone).
    length: N, (min, max) or "MIN-MAX" when the captchas are known to have that many
    characters: each is read as the most probable reading of that length (CTC models).
    charset: the only characters the captchas use ("0-9", "digits", "abcde2345678"), a subset
    of the model's: no reading uses the others.

    See captchalab.eval.predictor.Recognizer. TensorFlow loads on this call, not on import.
    """
    from captchalab.core.runconfig import resolve_run
    from captchalab.eval.predictor import load as _load

    return _load(resolve_run(run_dir), scales, blurs, length, charset)
