"""The JSON sidecar of an exported ``.onnx`` file: what it was made from and how, sealed.

``model.onnx`` gets ``model.json`` beside it (the convention of adversarial sets): the source
model's reference and hashes, the format and its settings, the onnx/onnxruntime versions, the
operators ONNX Runtime executes, the ``.onnx`` file's sha256 (``onnx_sha256``) and a seal over
the whole sidecar (``sha256``). A JSON beside an ``.onnx`` without ``onnx_sha256`` is not ours
and is ignored; ours must match, or the model is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annt.errors import AnntError
from annt.inputs.files import read_json_object
from annt.inputs.hashing import file_digest
from annt.store.adversarial_set import set_seal
from annt.store.atomic import atomic_write_json
from annt.version import __version__

KIND = "annt-onnx-export"
FILE_HASH = "onnx_sha256"
SEAL = "sha256"


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def check_sidecar_target(path: str | Path) -> Path:
    """The sidecar path of ``path``; refuses to overwrite a JSON that is not an export sidecar."""
    side = sidecar_path(path)
    if side.exists():
        try:
            meta = read_json_object(side, "file")
        except AnntError:
            meta = {}
        if meta.get("kind") != KIND:
            raise AnntError(f"{side} exists and is not an ANNT export sidecar (a checkpoint's model.json?);"
                            " choose another --out name or folder")
    return side


def write_sidecar(path: str | Path, meta: dict[str, Any]) -> Path:
    """Seal and write ``meta`` beside the (already written) ``.onnx`` file ``path``."""
    body = {k: v for k, v in meta.items() if k not in (FILE_HASH, SEAL)}
    body.update(kind=KIND, annt_version=__version__, **{FILE_HASH: file_digest(path)})
    body[SEAL] = set_seal(body)
    return atomic_write_json(sidecar_path(path), body)


def verify_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The checked export sidecar of ``path``, or ``None`` when it has none."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        return None
    meta = read_json_object(side, "ONNX export sidecar")
    if FILE_HASH not in meta:
        return None
    if meta.get(SEAL) != set_seal(meta):
        raise AnntError(f"ONNX export sidecar {side} was changed after export (its sha256 does not match its"
                        " fields); restore it or export the model again")
    if file_digest(path) != meta[FILE_HASH]:
        raise AnntError(f"ONNX model {path} was changed after export (its sha256 does not match {side.name});"
                        f" export it again, or remove {side.name} to load it as an unverified ONNX model")
    return meta
