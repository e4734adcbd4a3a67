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
from annt.inputs.identity import later
from annt.inputs.numbers import SEED_MAX
from annt.inputs.yaml_safe import load_yaml
from annt.metrics.flags import FlagCriterion
from annt.quant.bits import BitSpec, parse_bits
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

    epochs: int | None = Field(None, ge=1, description="training epochs (default: the recipe's)")
    train_limit: int | None = Field(None, ge=1, description="train on the first N training images only")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="training seed")

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


USER_SOURCES = ("factory", "torchscript", "onnx")
"""The keys that name a user's own model, loaded as it is (full precision), instead of ``name``."""
_A = {"factory": "a factory", "torchscript": "a TorchScript", "onnx": "an ONNX"}


class DeploySpec(_Strict):
    """The deployed twins of a model entry: each bitwidth exported to ONNX (``annt export``) by the study.

    A twin is a transfer target of the model it is exported from: every set crafted on the
    PyTorch model is evaluated on it too. It is an attack source only for the attack labels in
    ``attacks`` (score- or decision-based; ONNX Runtime gives no gradients), whose sets are then
    also evaluated on the PyTorch model. ``deploy: [int8, dorefa]`` is the short form.
    """

    formats: list[Literal["fp32", "int8", "dorefa"]] = Field(
        min_length=1, description="fp32, int8 (ONNX Runtime static quantization) or dorefa (integer DoReFa graph)")
    int8_format: Literal["qdq", "qoperator"] = Field("qdq", description="the int8 graph's layout")
    calibration_images: int = Field(1000, ge=1, description="training images that calibrate int8 and check exports")
    attacks: list[str] = Field(default_factory=list, description="labels of the study's attacks also run directly"
                               " on each twin (gradient-free ones)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``deploy: int8`` / ``deploy: [int8, dorefa]`` name the formats only."""
        return {"formats": _as_list(value)} if isinstance(value, (str, list)) else value

    @field_validator("formats", "attacks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dup = sorted({v for v in value if value.count(v) > 1})
        if dup:
            raise ValueError(f"{dup[0]!r} is listed twice")
        return value


class ModelSpec(_Strict):
    """One architecture at one or more bitwidths, each trained or loaded; or a user's own model.

    A user's model is ``factory`` (with ``args`` and a ``weights`` file), ``torchscript`` or
    ``onnx``, with optional input normalisation ``mean``/``std`` and the ``label`` reports show.
    The fields added for it are left out of the study's identity while unset
    (:func:`annt.inputs.identity.later`), so stored studies keep their ids.
    """

    name: str | None = Field(None, description="a registered model (`annt models`) or a factory with checkpoints")
    bits: list[str | int] = Field(default_factory=lambda: ["fp"], min_length=1,
                                  description="bitwidths: fp, 1..16, 32 or 'W,A,G'")
    datasets: list[str] | None = Field(None, min_length=1, description="only these of the study's datasets")
    train: TrainSettings = Field(default_factory=TrainSettings, description="how to train bitwidths without a checkpoint")
    checkpoints: dict[str, str] = Field(default_factory=dict, description="BITS: checkpoint folder or zoo:NAME to load")
    checkpoint: str | None = Field(None, description="the checkpoint of a model with one bitwidth")
    trust_unverified: bool = False  # load checkpoints that carry no sha256 seal
    factory: str | None = later(None, "0.2.0")  # package.module:function or path/to/file.py:function
    args: dict[str, Any] | None = later(None, "0.2.0")  # the factory's keyword arguments
    weights: str | None = later(None, "0.2.0")  # .safetensors or a state_dict file for the factory
    torchscript: str | None = later(None, "0.2.0")  # a TorchScript file
    onnx: str | None = later(None, "0.2.0")  # an ONNX file (no gradients: gradient-free attacks only)
    mean: list[float] | None = later(None, "0.2.0", min_length=1)  # normalisation put inside the model
    std: list[float] | None = later(None, "0.2.0", min_length=1)  # per-channel std, with mean
    label: str | None = later(None, "0.2.0", pattern=NAME_PATTERN)  # the name reports show
    deploy: DeploySpec | None = later(None, "0.4.0")  # deployed ONNX twins, evaluated as transfer targets

    _lists = field_validator("bits", "datasets", "mean", "std", mode="before")(_as_list)

    @property
    def source(self) -> str | None:
        """Which of :data:`USER_SOURCES` names the model (``None``: a registered model or factory ``name``)."""
        return next((k for k in USER_SOURCES if getattr(self, k) is not None), None)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        """Exactly one of ``name``, ``factory``, ``torchscript``, ``onnx``; the options that go with it."""
        given = [k for k in ("name", *USER_SOURCES) if getattr(self, k) is not None]
        if not given:
            raise ValueError("name the model: name (a registered model or factory with checkpoints),"
                             " factory, torchscript or onnx")
        if len(given) > 1:
            raise ValueError(f"{given[0]} and {given[1]} both name the model; give one")
        if self.source == "onnx" and self.deploy is not None:
            raise ValueError("deploy does not apply to an ONNX model, which is deployed already")
        if self.source is None:
            extra = [k for k in ("args", "weights", "mean", "std", "label") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{extra[0]} goes with a factory, torchscript or onnx model, not with name")
            return self
        if self.source != "factory" and (self.args is not None or self.weights is not None):
            raise ValueError(f"{'args' if self.args is not None else 'weights'} go with a factory,"
                             f" not with {self.source}")
        loaded = [k for k in ("checkpoints", "checkpoint", "train", "trust_unverified") if k in self.model_fields_set]
        if loaded:
            raise ValueError(f"{loaded[0]} does not apply to {_A[self.source]} model, which is loaded as it is")
        try:
            full = len(self.bits) == 1 and parse_bits(self.bits[0]) == BitSpec()
        except AnntError:
            full = False
        if not full:
            raise ValueError(f"{_A[self.source]} model is loaded as it is, at full precision (bits: fp);"
                             " quantize it with annt train --model-factory --bits N and name its checkpoints")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std for the input normalisation, or neither")
        if self.mean is not None:
            from annt.models.sources import check_stats

            try:
                check_stats(self.mean, self.std)
            except AnntError as exc:
                raise ValueError(str(exc)) from None
        return self

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

    name: str = Field(description="a registered attack (`annt attacks`)")
    label: str | None = Field(None, pattern=NAME_PATTERN,
                              description="the name results use (default: name); tells two configurations apart")
    params: dict[str, Any] = Field(default_factory=dict, description="the attack's parameters")
    per_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                   description="DATASET: parameters that differ on that dataset")
    backend: Literal["annt", "art"] = Field("annt", description="run ANNT's code or the Adversarial Robustness Toolbox's")
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

    enabled: bool = Field(True, description="draw the figure for Boundary Attack entries")
    images: int = Field(5, ge=1, le=20, description="images shown")
    iterations: list[int] | None = Field(None, description="iteration counts (default: 0, 1, 2, 5, 10, ... up to max_iter)")

    @field_validator("iterations")
    @classmethod
    def _sorted_unique(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(v < 0 for v in value):
            raise ValueError("iterations must be a non-empty list of counts >= 0")
        return sorted(set(value))


class ReportSpec(_Strict):
    enabled: bool = Field(True, description="write the report when the run ends")
    grid_images: int = Field(8, ge=1, le=32, description="images per adversarial grid")
    progression: ProgressionSpec = Field(default_factory=ProgressionSpec, description="Boundary Attack progression figure")


class ExecutorSpec(_Strict):
    """Where cells run (never part of a result): ``serial``, local ``processes`` or ``ray``."""

    kind: Literal["serial", "processes", "ray"] = "serial"  # one cell after the other, a local process pool, or Ray
    workers: int | None = Field(None, ge=1, le=4096, description="cells run at once (default: all cores)")
    address: str = "local"  # ray: ``local`` starts one for the run, else ``HOST:PORT`` / ``auto``
    gpus_per_cell: float = Field(1.0, gt=0, le=64)  # ray on CUDA: GPUs a cell asks for (0.25: 4 per GPU)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``executor: processes`` is ``executor: {kind: processes}``."""
        return {"kind": value} if isinstance(value, str) else value


class DiagnoseSpec(_Strict):
    """Gradient-masking checklist (``annt diagnose``) on every model of the study."""

    eps: list[float] = Field(min_length=1, description="budgets, each > 0")
    norm: Literal["inf", "2"] = Field(diagnose_defaults.DEFAULT_NORM, description="the budgets' norm")
    samples: int = Field(diagnose_defaults.DEFAULT_SAMPLES, ge=1, description="correctly classified test images")
    attacks: list[str] | None = Field(None, description="attacks to run (default: those of"
                                      f" {', '.join(diagnose_defaults.DEFAULT_ATTACKS)} that are registered)")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per attack
    surrogate: str | None = None  # checkpoint or zoo:NAME to craft transfer attacks on
    grow: bool = Field(diagnose_defaults.DEFAULT_GROW, description="run the growing-eps check")
    tolerance: float = Field(diagnose_defaults.DEFAULT_TOLERANCE, ge=0, le=1,
                             description="robust accuracies closer than this count as equal in the verdict")
    selftest: int = later(diagnose_defaults.DEFAULT_SELFTEST, "0.4.0", ge=0,
                          description="images for the strength self-test of the attacks behind the verdict (0: off)")
    ensemble: Literal["standard", "cheap", "adaptive"] | None = later(
        None, "0.4.0", description="also run this attack ensemble (as annt robust-accuracy) on the same images")

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

    name: str = Field("study", pattern=NAME_PATTERN, description="the study's name; the default output is runs/NAME")
    datasets: list[str] = Field(min_length=1, description="dataset names (`annt datasets`); one name needs no list")
    data_dir: str | None = Field(None, description="dataset root (default: $ANNT_DATA_DIR, else ~/.cache/annt/data)")
    models: list[ModelSpec] = Field(min_length=1, description="the models attacked and attacked by transfer")
    attacks: list[AttackSpec] = Field(min_length=1, description="the attack configurations")
    samples: int = Field(1000, ge=1, description="correctly classified test images per run and source model")
    runs: int = Field(3, ge=1, description="independent runs (new random images and attack seeds each)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="study seed: sample and attack seeds derive from it")
    transfer: Literal["none", "bitwidths", "all"] = Field(
        "none", description="evaluate each set on no other model, the same model's other bitwidths, or every"
        " model of the dataset")
    output: str | None = Field(None, description="output folder (default: runs/NAME; annt run --out overrides)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (annt run --device overrides)")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch (default: torch's)")
    flag: FlagCriterion = Field(default_factory=FlagCriterion, description="when an adversarial image counts as"
                                " unrecognisable")
    report: ReportSpec = Field(default_factory=ReportSpec, description="the report written at the end")
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="where cells run (never part of a result)")
    diagnose: DiagnoseSpec | None = Field(None, description="run the gradient-masking checklist on every model")

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
