"""User-facing errors.

Every problem a user can cause (bad names, bad files, bad specs) is raised as an
``AnntError`` with a one-line message that names the problem and what to do. The CLI
prints exactly that line and exits non-zero, never a traceback.
"""

from __future__ import annotations


class AnntError(Exception):
    """A problem the user can fix; its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ChecksumError(AnntError):
    """A file's content does not match its recorded checksum."""
