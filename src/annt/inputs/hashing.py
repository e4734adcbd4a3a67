"""File checksums (streamed, so large files do not sit in memory twice)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from annt.errors import ChecksumError


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hash of a regular file; devices and pipes (e.g. a link to /dev/zero) are refused, not read forever."""
    from annt.inputs.files import regular_file

    h = hashlib.new(algorithm)
    with open(regular_file(path, "file"), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, expected: str, algorithm: str = "md5") -> None:
    """Raise a one-line ChecksumError when ``path`` does not hash to ``expected``."""
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {path}: {algorithm} is {actual}, expected {expected};"
            " delete the file and download it again"
        )
