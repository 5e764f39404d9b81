"""captchalab: synthetic captcha datasets, CTC recognizers and robustness studies."""

__version__ = "0.1.0"
