"""Files from users: regular files of bounded size, npz archives checked before they are read."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from annt.errors import AnntError

GiB = 1 << 30
MAX_JSON_BYTES = 16 << 20  # sidecars and manifests are a few kB
MAX_NPZ_BYTES = 8 * GiB  # on disk
MAX_NPZ_UNPACKED = 16 * GiB  # all members together, after decompression
MAX_YAML_BYTES = 1 << 20


def regular_file(path: str | Path, what: str, max_bytes: int | None = None) -> Path:
    """``path`` if it is a regular file (links followed) of at most ``max_bytes``.

    Devices, FIFOs and sockets are refused before anything reads them: a link to
    ``/dev/zero`` would otherwise hash or decompress forever.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AnntError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise AnntError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AnntError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise AnntError(f"{what} {path} is not a regular file (a device, pipe or socket); refusing to read it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise AnntError(f"{what} {path} is {st.st_size} bytes, more than the limit of {max_bytes}")
    return path


def read_text(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> str:
    """UTF-8 text of a small regular file."""
    path = regular_file(path, what, max_bytes)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AnntError(f"{what} {path} is not UTF-8 text") from None


def read_npz(path: str | Path, what: str, *, max_bytes: int = MAX_NPZ_BYTES,
             max_unpacked: int = MAX_NPZ_UNPACKED) -> dict[str, np.ndarray]:
    """All arrays of an npz without pickles, after checking its zip directory.

    The declared sizes are summed before any member is inflated, so a zip bomb is refused
    instead of filling memory; any damage (truncation, bad CRC, not a zip) is one line.
    """
    path = regular_file(path, what, max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        unpacked = sum(i.file_size for i in infos)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AnntError(f"corrupt {what} {path}: not a readable npz (zip) file ({exc})") from None
    if unpacked > max_unpacked:
        raise AnntError(f"{what} {path} unpacks to {unpacked} bytes, more than the limit of {max_unpacked}")
    bad = [i.filename for i in infos if not i.filename.endswith(".npy")]
    if bad:
        raise AnntError(f"corrupt {what} {path}: member {bad[0]!r} is not an .npy array")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        # zlib.error is a subclass of Exception only; catch it by module below
        raise AnntError(f"corrupt {what} {path}: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - zlib.error, struct.error: damaged members
        if type(exc).__module__ in ("zlib", "struct", "zipfile", "_struct"):
            raise AnntError(f"corrupt {what} {path}: {_one_line(exc)}") from None
        raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def output_dir(path: str | Path, what: str) -> Path:
    """A folder to write into: absent (it will be created) or a directory, never a file."""
    path = Path(path).expanduser()
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise AnntError(f"{what} {path}: {parent} exists and is not a directory")
            break
    return path


def output_file(path: str | Path, what: str, suffix: str) -> Path:
    """A file to (over)write: ends in ``suffix``, is not a directory, its folder can be made."""
    path = Path(path).expanduser()
    if path.suffix.lower() != suffix:
        raise AnntError(f"{what} {path} must end in {suffix}")
    if path.is_dir():
        raise AnntError(f"{what} {path} is a directory")
    if path.exists() and not path.is_file():
        raise AnntError(f"{what} {path} exists and is not a regular file")
    output_dir(path.parent, what)
    return path


def read_json_object(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """A JSON object from a small regular file; bad syntax or absurd nesting is one line."""
    import json

    text = read_text(path, what, max_bytes)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnntError(f"corrupt {what} {path}: {exc}") from None
    except RecursionError:
        raise AnntError(f"corrupt {what} {path}: nested too deeply") from None
    if not isinstance(value, dict):
        raise AnntError(f"corrupt {what} {path}: expected a JSON object, got {type(value).__name__}")
    return value
