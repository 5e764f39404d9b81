"""`python -m captchalab` runs the CLI."""

from captchalab.cli import main

main()
