"""The one exception type for user mistakes; cli.py turns it into a message and an exit code."""

from __future__ import annotations


class MedsynthError(Exception):
    """A problem the user can fix (bad input file, wrong class name, ...). Exit code 1."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class BadUsageError(MedsynthError):
    """Options that contradict each other or are out of range. Exit code 2."""

    exit_code = 2
