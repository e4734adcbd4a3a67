"""The one rule by which a setting added in a later release keeps stored results valid.

A study cell is keyed with the validated settings of what it computes (an attack's parameters,
a training recipe). A field added after results were first stored is declared with
:func:`later`, which records the release that added it in the field's metadata; :func:`identity`
leaves such a field out of the key while it holds its default, so that a key written before the
field existed is the key it still gets. No other list of "new" fields is kept anywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

SINCE = "annt_since"  # json_schema_extra key: the release that added the field


def later(default: Any, since: str, **constraints: Any) -> Any:
    """A pydantic field with ``default`` added in release ``since`` (``Field`` ``constraints``)."""
    return Field(default, json_schema_extra={SINCE: str(since)}, **constraints)


def later_fields(model: type[BaseModel]) -> dict[str, Any]:
    """``{name: default}`` of the fields of ``model`` declared with :func:`later`."""
    return {
        name: info.default
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and SINCE in info.json_schema_extra
    }


def identity(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a dump of ``model``) without the later fields that hold their defaults."""
    added = later_fields(model)
    return {k: v for k, v in values.items() if k not in added or v != added[k]}
