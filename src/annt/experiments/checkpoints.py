"""A study's given checkpoints: the checks they pass when the plan is built and when loaded.

A ``zoo:NAME`` checkpoint must match the zoo manifest; a folder must carry a valid seal
unless the spec sets ``trust_unverified`` for its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.experiments.plan import ModelSlot


def verify_slot_checkpoint(text: str, path: Path, trust: bool) -> dict[str, Any]:
    """The verified sidecar of the checkpoint the spec names as ``text`` (resolved to ``path``)."""
    from annt.store.checkpoint import verify_checkpoint
    from annt.zoo import verify_zoo_checkpoint

    if text.startswith("zoo:"):
        return verify_zoo_checkpoint(text[4:])
    return verify_checkpoint(path, trust_unverified=trust)


def load_slot_model(slot: ModelSlot, folder: Path, device: torch.device) -> nn.Module:
    """Load a study model: zoo entries against their manifest, given folders against their seal.

    Models the study trained itself were checked against the weights hash in its database
    (``intact_model``) or have just been written, so their seal is not required.
    """
    from annt.store.checkpoint import load_checkpoint
    from annt.zoo import zoo_entry

    if slot.zoo_name is not None and slot.checkpoint is not None:
        entry = zoo_entry(slot.zoo_name[4:])
        return load_checkpoint(folder, device=device, expected_seal=entry["checkpoint_sha256"])
    trust = slot.trust_unverified or slot.checkpoint is None
    return load_checkpoint(folder, device=device, trust_unverified=trust)


def check_deployed_twin(path: Path, sha256: str) -> None:
    """A deployed twin the study exported: the file must still hash to ``sha256`` and its sidecar
    must still carry its seal (and name that sha256).

    A missing file is not checked here (the export cell is then computed again); one that was
    changed is refused in one line, since the study never edits a file it sealed.
    """
    from annt.deploy.sidecar import sidecar_path, verify_sidecar
    from annt.errors import AnntError
    from annt.inputs.hashing import file_digest

    side = sidecar_path(path)
    if not path.is_file() or file_digest(path) != sha256:
        what = f"{path} was changed after the study exported it (its sha256 is not the one the study recorded)"
    else:
        try:
            meta = verify_sidecar(path)
        except AnntError:
            meta = None
        if meta is not None and meta.get("onnx_sha256") == sha256:
            return
        what = f"{path}: its sidecar {side.name} is missing or was changed after the study exported it"
    raise AnntError(f"deployed model {what}; delete {path.name} and {side.name} to export it again")


def load_deployed_twin(path: Path, sha256: str) -> nn.Module:
    """The study's deployed twin at ``path``, checked against the sha256 the study recorded."""
    from annt.deploy.runtime import load_deployed

    check_deployed_twin(path, sha256)
    return load_deployed(path)
