"""File-name rules shared by the writers (studies) and readers (reports) of an output folder."""

from __future__ import annotations

import re


def slug(text: str) -> str:
    """File-name-safe form of a label or model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"
