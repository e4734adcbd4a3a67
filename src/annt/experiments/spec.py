"""The study specification: a typed, validated description of one experiment grid.

A spec is a YAML file (or the equivalent dict / ``StudySpec``). Structural problems are
caught by pydantic; names, bitwidths, attack parameters and checkpoint files are checked
by :mod:`annt.experiments.builder` before any work starts. Every problem becomes one
``SpecError`` line naming the key path, e.g.
``study.yaml: attacks[2].params.eps: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from annt.errors import AnntError
from annt.inputs.files import MAX_YAML_BYTES, regular_file
from annt.inputs.numbers import SEED_MAX
from annt.inputs.yaml_safe import load_yaml
from annt.metrics.flags import FlagCriterion
from annt.robustness import defaults as diagnose_defaults
from annt.store.naming import slug  # noqa: F401  (re-exported: studies name files with it)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SpecError(AnntError):
    """A spec problem: ``SOURCE: key.path: message``."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source, self.key_path, self.problem = source, path, message
        super().__init__(f"{source}: {path}: {message}" if path else f"{source}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(value: Any) -> Any:
    """Let YAML say ``bits: fp`` or ``datasets: mnist`` for a one-element list."""
    return value if isinstance(value, list) or value is None else [value]


class TrainSettings(BaseModel):
    """How to train a model that has no checkpoint: epochs, data limit, seed, recipe fields.

    Any further key overrides a field of :class:`annt.train.Recipe` (``lr``, ``batch_size``...)
    and is checked against it.
    """

    model_config = ConfigDict(extra="allow")

    epochs: int | None = Field(None, ge=1)
    train_limit: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSpec(_Strict):
    """One architecture at one or more bitwidths; each bitwidth is trained or loaded."""

    name: str
    bits: list[str | int] = Field(default_factory=lambda: ["fp"], min_length=1)
    datasets: list[str] | None = Field(None, min_length=1)
    train: TrainSettings = Field(default_factory=TrainSettings)
    checkpoints: dict[str, str] = Field(default_factory=dict)
    checkpoint: str | None = None
    trust_unverified: bool = False  # load checkpoints that carry no sha256 seal

    _lists = field_validator("bits", "datasets", mode="before")(_as_list)

    @field_validator("bits", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        """YAML reads ``yes``/``true`` as booleans; neither they nor ``3.5`` are bitwidths."""
        for item in value if isinstance(value, list) else []:
            if isinstance(item, (bool, float)) or not isinstance(item, (str, int)):
                raise ValueError(f"{item!r} is not a bitwidth: use fp, 1..16, 32 or 'W,A,G'")
        return value

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        """YAML reads ``1: path`` with an integer key; bitwidth keys are text here."""
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value


class AttackSpec(_Strict):
    """One attack configuration; ``per_dataset`` overrides parameters for named datasets."""

    name: str
    label: str | None = Field(None, pattern=NAME_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)
    per_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backend: Literal["annt", "art"] = "annt"
    batch_size: int | Literal["auto"] = Field(
        100, description="images per attack call; auto: 100 on a CPU, as many as fit on a GPU")

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("Input should be greater than or equal to 1")
        return value

    @property
    def key(self) -> str:
        return self.label or self.name


class ProgressionSpec(_Strict):
    """Boundary Attack progression figure (paper Figure 3): images at growing iteration counts."""

    enabled: bool = True
    images: int = Field(5, ge=1, le=20)
    iterations: list[int] | None = None

    @field_validator("iterations")
    @classmethod
    def _sorted_unique(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(v < 0 for v in value):
            raise ValueError("iterations must be a non-empty list of counts >= 0")
        return sorted(set(value))


class ReportSpec(_Strict):
    enabled: bool = True
    grid_images: int = Field(8, ge=1, le=32)
    progression: ProgressionSpec = Field(default_factory=ProgressionSpec)


class ExecutorSpec(_Strict):
    """Where cells run (never part of a result): ``serial``, local ``processes`` or ``ray``."""

    kind: Literal["serial", "processes", "ray"] = "serial"
    workers: int | None = Field(None, ge=1, le=4096)
    address: str = "local"  # ray: ``local`` starts one for the run, else ``HOST:PORT`` / ``auto``
    gpus_per_cell: float = Field(1.0, gt=0, le=64)  # ray on CUDA: GPUs a cell asks for (0.25: 4 per GPU)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``executor: processes`` is ``executor: {kind: processes}``."""
        return {"kind": value} if isinstance(value, str) else value


class DiagnoseSpec(_Strict):
    """Gradient-masking checklist (``annt diagnose``) on every model of the study."""

    eps: list[float] = Field(min_length=1)
    norm: Literal["inf", "2"] = diagnose_defaults.DEFAULT_NORM
    samples: int = Field(diagnose_defaults.DEFAULT_SAMPLES, ge=1)
    attacks: list[str] | None = None  # default: diagnose_defaults.DEFAULT_ATTACKS that are registered
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per attack
    surrogate: str | None = None  # checkpoint or zoo:NAME to craft transfer attacks on
    grow: bool = diagnose_defaults.DEFAULT_GROW
    tolerance: float = Field(diagnose_defaults.DEFAULT_TOLERANCE, ge=0, le=1)

    _lists = field_validator("eps", mode="before")(_as_list)

    @field_validator("eps")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("eps values must be positive")
        return value

    @field_validator("attacks", "params")
    @classmethod
    def _known_attacks(cls, value: Any) -> Any:
        """Attack names and parameters are checked before any work starts."""
        from annt.attacks import validate_params
        from annt.errors import AnntError

        for name in value or []:
            try:
                validate_params(name, value[name] if isinstance(value, dict) else {})
            except AnntError as err:
                raise ValueError(str(err)) from None
        return value


class StudySpec(_Strict):
    """A grid of datasets x models x bitwidths x attacks x runs, direct and transfer."""

    name: str = Field("study", pattern=NAME_PATTERN)
    datasets: list[str] = Field(min_length=1)
    data_dir: str | None = None
    models: list[ModelSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(min_length=1)
    samples: int = Field(1000, ge=1)
    runs: int = Field(3, ge=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    transfer: Literal["none", "bitwidths", "all"] = "none"
    output: str | None = None
    device: str = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    flag: FlagCriterion = Field(default_factory=FlagCriterion)
    report: ReportSpec = Field(default_factory=ReportSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    diagnose: DiagnoseSpec | None = None

    _lists = field_validator("datasets", mode="before")(_as_list)


# ---------------------------------------------------------------------------- loading


def key_path(loc: tuple[Any, ...]) -> str:
    """pydantic ``loc`` -> ``attacks[2].params.eps``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(source: str, exc: ValidationError) -> SpecError:
    errors = exc.errors()
    err = errors[0]
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return SpecError(source, key_path(tuple(err["loc"])), message)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; one-line errors for missing files and bad YAML."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AnntError(f"study spec {path} does not exist")
    regular_file(path, "study spec", MAX_YAML_BYTES)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), path.name)
    except UnicodeDecodeError:
        raise SpecError(path.name, "", "not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(path.name, "", f"invalid YAML: {where}{problem}") from None
    if data is None:
        raise SpecError(path.name, "", "the file is empty")
    if not isinstance(data, dict):
        raise SpecError(path.name, "", f"expected a mapping of keys at the top, got {type(data).__name__}")
    return data


def parse_spec(data: dict[str, Any] | StudySpec, source: str = "study spec") -> StudySpec:
    """Validate the structure of a spec (names and files are checked later, also up front)."""
    if isinstance(data, StudySpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping, got {type(data).__name__}")
    data = dict(data)
    if "dataset" in data and "datasets" not in data:  # friendly singular form
        data["datasets"] = data.pop("dataset")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(source, exc) from None


def load_spec(spec: str | Path | dict[str, Any] | StudySpec) -> tuple[StudySpec, str]:
    """A validated spec and the name to prefix its errors with (the YAML file's name)."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        return parse_spec(read_yaml(path), path.name), path.name
    return parse_spec(spec), "study spec"
