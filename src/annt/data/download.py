"""Download with checksum verification and atomic rename (never used by tests)."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

from annt.errors import AnntError
from annt.inputs.hashing import file_digest


def download(urls: list[str], dest: Path, md5: str) -> Path:
    """Fetch ``dest`` from the first working mirror, verify its md5, rename it into place."""
    if os.environ.get("ANNT_OFFLINE") == "1":
        raise AnntError(
            f"{dest} is missing and ANNT_OFFLINE=1 forbids downloading it;"
            " put the file there or set --data-dir / ANNT_DATA_DIR to a folder that has it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            actual = file_digest(tmp, "md5")
            if actual != md5:
                errors.append(f"{url}: md5 {actual} != {md5}")
                continue
            os.replace(tmp, dest)
            return dest
        except OSError as exc:
            errors.append(f"{url}: {exc}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise AnntError(
        f"could not download {dest.name} ({'; '.join(errors)}); you may be offline:"
        f" copy the file to {dest} or point --data-dir / ANNT_DATA_DIR at a folder that has it"
    )
