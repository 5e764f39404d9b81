"""Errors the CLI turns into one line on stderr: UsageError exits 2, DataError and RunFailed exit 1."""

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


class DataError(Exception):
    """Damaged data met while reading (a corrupt shard or record, an unreadable file): one line
    naming the file, exit code 1."""
