"""Bitwidth specifications: ``"W,A,G"``, a single integer, or ``fp``/``32``."""

from __future__ import annotations

from dataclasses import dataclass

from annt.errors import AnntError

FULL = 32
VALID_BITS = tuple(range(1, 17)) + (FULL,)


@dataclass(frozen=True)
class BitSpec:
    """Bitwidths of weights, activations and gradients; 32 means full precision."""

    w: int = FULL
    a: int = FULL
    g: int = FULL

    def __post_init__(self) -> None:
        for name, value in (("weight", self.w), ("activation", self.a), ("gradient", self.g)):
            if value not in VALID_BITS:
                raise AnntError(
                    f"bad {name} bitwidth {value!r}: use 1..16, or 32 for full precision"
                )

    @property
    def is_full_precision(self) -> bool:
        return self.w == FULL and self.a == FULL and self.g == FULL

    @property
    def tag(self) -> str:
        """Short, file-name-safe label: ``fp``, ``1bit``, or ``w2a4g32``."""
        if self.is_full_precision:
            return "fp"
        if self.w == self.a and self.g == FULL:
            return f"{self.w}bit"
        return f"w{self.w}a{self.a}g{self.g}"

    def __str__(self) -> str:
        return f"{self.w},{self.a},{self.g}"


def _parse_int(text: str, whole: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AnntError(
            f"bad bitwidth {whole!r}: use 'fp', one integer (1..16, 32), or 'W,A,G' such as '8,8,32'"
        ) from None


def parse_bits(spec: BitSpec | str | int | None) -> BitSpec:
    """Parse a user's bitwidth: ``"W,A,G"``, ``n`` (W = A = n, G = 32), ``fp`` or ``32``."""
    if isinstance(spec, BitSpec):
        return spec
    if spec is None:
        return BitSpec()
    if isinstance(spec, bool):
        raise AnntError(f"bad bitwidth {spec!r}: use 'fp', 1..16, 32 or 'W,A,G'")
    if isinstance(spec, int):
        return BitSpec(spec, spec, FULL)
    if not isinstance(spec, str):
        raise AnntError(f"bad bitwidth {spec!r}: use 'fp', 1..16, 32 or 'W,A,G'")
    text = spec.strip().lower()
    if not text:
        raise AnntError("bad bitwidth '': use 'fp', one integer (1..16, 32), or 'W,A,G' such as '8,8,32'")
    if text in ("fp", "full", "32"):
        return BitSpec()
    if text.endswith("bit") and text[:-3].isdigit():
        text = text[:-3]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        n = _parse_int(parts[0], str(spec))
        return BitSpec(n, n, FULL)
    if len(parts) == 3:
        w, a, g = (_parse_int(p, str(spec)) if p else FULL for p in parts)
        return BitSpec(w, a, g)
    raise AnntError(
        f"bad bitwidth {spec!r}: use 'fp', one integer (1..16, 32), or 'W,A,G' such as '8,8,32'"
    )
