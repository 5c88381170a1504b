"""The one exception type for user mistakes; cli.py turns it into a message and an exit code."""

from __future__ import annotations

import errno
import re
from pathlib import Path


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


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.part$")
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded",
                   "file write failed")


def _user_path(path: str) -> str:
    """The file the user knows: ``dir/.name.x1y2.part`` (an atomic write's temp file) -> ``dir/name``."""
    p = Path(path)
    m = _TEMP_NAME.match(p.name)
    return str(p.with_name(m.group("name"))) if m else str(p)


def os_error(e: BaseException, out: str | None = None) -> MedsynthError | None:
    """The one-line error for an operating-system failure (read-only folder, full disk, ...).

    ``e`` is an :class:`OSError`, or a library error that only carries the OS message (torch and
    safetensors report a full disk that way; ``out``, the command's output folder, then names the
    place). Returns None for anything else, which is a bug and keeps its traceback.
    """
    if isinstance(e, OSError):
        code = e.errno
        reason = e.strerror or str(e)
        path = e.filename if e.filename is not None else out
        if e.filename2 is not None:
            path = f"{path} -> {e.filename2}"
    elif any(t in str(e) for t in _DISK_FULL_TEXT):
        code, reason, path = errno.ENOSPC, "No space left on device", out
    else:
        return None
    where = f"{_user_path(str(path))}: " if path is not None else ""
    hint = None
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "choose an --out folder you can write to (or fix its permissions)"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some disk space or choose an --out on another disk; finished work is kept " \
               "(rerun with --resume where the command has it)"
    return MedsynthError(f"{where}{reason}", hint=hint)
