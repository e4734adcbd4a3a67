"""Resumable training state (optimizer, RNG, epoch) stored as safetensors + JSON, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from annt.store.atomic import atomic_write_bytes, atomic_write_json

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def save_train_state(folder: Path, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, Any] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    atomic_write_bytes(folder / STATE_TENSORS, save(tensors))
    atomic_write_json(
        folder / STATE_JSON,
        {"param_groups": sd["param_groups"], "scalars": scalars, "info": info},
    )


def load_train_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    tensors = load_file(folder / STATE_TENSORS)
    meta = json.loads((folder / STATE_JSON).read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta["info"]


def has_train_state(folder: Path) -> bool:
    return (folder / STATE_TENSORS).is_file() and (folder / STATE_JSON).is_file()
