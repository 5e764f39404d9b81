"""The one exception type for user mistakes; the CLI turns it into one line and exit code 2."""

import difflib


class UsageError(Exception):
    """A user mistake: bad option value, missing file, mismatched dataset.

    The message is a single line naming what was wrong and what is allowed.
    """


def suggest(word: str, choices) -> str:
    """Return " did you mean 'x'?" for the nearest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class RunFailed(Exception):
    """A run that started but could not finish (e.g. the loss diverged): one line, exit code 1."""
