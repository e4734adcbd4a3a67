"""Every kind of study cell, each one unit (``CellKind``: table, inputs, step, integrity check).

A kind's module holds all of it: ``models`` (``train``, ``load``), ``deployed`` (``export``), ``sets`` (``craft``),
``evaluations`` (``evaluate``, ``transfer``), ``progressions`` (``progression``). Adding a kind is
a module here, one line in ``KINDS`` and its place in the cell graph (``annt.experiments.plan``).
The ``report`` cell is not stored and has no kind here.
"""

from __future__ import annotations

from annt.experiments.kinds.base import SET_SHA256, CellKind
from annt.experiments.kinds.deployed import EXPORT
from annt.experiments.kinds.evaluations import EVALUATE, TRANSFER
from annt.experiments.kinds.models import LOAD, TRAIN
from annt.experiments.kinds.progressions import PROGRESSION
from annt.experiments.kinds.sets import CRAFT

KINDS: dict[str, CellKind] = {k.name: k for k in (TRAIN, LOAD, EXPORT, CRAFT, EVALUATE, TRANSFER, PROGRESSION)}
"""Every stored cell kind by name, in the order their tables are created."""


def kind_of(name: str) -> CellKind:
    """The kind named ``name``; an unknown kind (or the unstored ``report``) is an error, never a default."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"cells of kind {name!r} are not stored (known kinds: {', '.join(KINDS)})") from None


__all__ = ["KINDS", "SET_SHA256", "CellKind", "kind_of"]
