"""Errors the CLI turns into one line on stderr: UsageError exits 2, DataError and RunFailed exit 1."""

import difflib


class UsageError(Exception):
    """A user mistake: bad option value, missing file, mismatched dataset.

    The message is a single line naming what was wrong and what is allowed. `param`: the
    parameter at fault; the message then starts with its name, as a Python caller knows it
    (`shard_size: 0; …`), and the CLI shows the flag instead (`--shard-size: 0; …`).
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def for_cli(self) -> str:
        """The message with a leading parameter name written as its command-line flag."""
        text = str(self)
        if self.param and text.startswith(self.param):
            return "--" + self.param.replace("_", "-") + text[len(self.param):]
        return text


def suggest(word: str, choices) -> str:
    """Return " did you mean 'x'?" for the nearest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class RunFailed(Exception):
    """A run that started but could not finish (e.g. the loss diverged): one line, exit code 1."""


class DataError(Exception):
    """Damaged data met while reading (a corrupt shard or record, an unreadable file): one line
    naming the file, exit code 1."""
