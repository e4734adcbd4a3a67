"""YAML from users: safe tags only, ``1e-3`` read as a number, expansion bounded.

PyYAML's safe loader builds shared objects for anchors, so a "billion laughs" alias bomb
loads quickly but explodes in anything that walks it (JSON, pydantic, printing). We walk
the loaded value once, counting every visit, and stop at ``max_nodes``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from annt.errors import AnntError

MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``5E+2`` (no dot) as floats, like YAML 1.2."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def check_size(value: Any, source: str, max_nodes: int = MAX_NODES) -> None:
    """Raise when ``value`` expands to more than ``max_nodes`` nodes (aliases counted each time)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > max_nodes:
            raise AnntError(f"{source}: YAML expands to more than {max_nodes} values"
                            " (an alias bomb?); refusing to read it")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)


def load_yaml(text: str, source: str, max_nodes: int = MAX_NODES) -> Any:
    """Parse ``text`` with the safe loader, then bound its expanded size."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise AnntError(f"{source}: YAML nested too deeply; refusing to read it") from None
    check_size(value, source, max_nodes)
    return value
