"""From a validated spec to a concrete plan, checking everything that can fail up front.

Unknown dataset / model / attack names, bad bitwidths, bad attack parameters, missing or
mismatched checkpoints and bad devices all raise one ``SpecError`` line here, before the
output directory or any result is touched. The plan itself (the data) is ``annt.experiments.plan``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from annt.errors import AnntError
from annt.experiments.attack_api import ParamError, validate_attack
from annt.experiments.checkpoints import verify_slot_checkpoint
from annt.experiments.plan import AttackConfig, DeployTwin, ModelSlot, StudyPlan
from annt.experiments.spec import DiagnoseSpec, ModelSpec, SpecError, StudySpec, key_path
from annt.experiments.user_models import UserModel
from annt.inputs.identity import identity
from annt.quant.bits import BitSpec, parse_bits

DEFAULT_PROGRESSION = (0, 1, 2, 5, 10, 15, 25, 50, 100, 200, 500, 1000)


def _err(source: str, path: str, exc: Exception) -> SpecError:
    return SpecError(source, path, str(exc))


def resolve_path(text: str, spec_dir: Path | None) -> Path:
    """A path in a spec: relative to the working directory, else to the spec file."""
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and spec_dir is not None and (spec_dir / path).exists():
        path = spec_dir / path
    return path


def resolve_checkpoint(text: str, spec_dir: Path | None) -> Path:
    """``zoo:NAME``, or a folder (relative to the working directory, else to the spec file)."""
    if text.startswith("zoo:"):
        from annt.zoo import zoo_entry

        entry = zoo_entry(text[4:])
        return Path(str(resources.files("annt.zoo") / entry["path"]))
    return resolve_path(text, spec_dir)


def _check_checkpoint(path: Path, dataset: str, model: str, bits: BitSpec, text: str = "",
                      trust: bool = False) -> None:
    from annt.data import dataset_info
    from annt.models import model_info

    meta = verify_slot_checkpoint(text, path, trust)  # hashes, seal, zoo manifest
    if model_info(str(meta.get("model", "?"))).name != model:
        raise AnntError(f"checkpoint {path} holds model {meta.get('model')!r}, not {model!r}")
    if parse_bits(meta.get("bits")) != bits:
        raise AnntError(f"checkpoint {path} is {parse_bits(meta.get('bits')).tag}, not {bits.tag}")
    if meta.get("dataset") and meta["dataset"] not in (dataset, dataset_info(dataset).sample_of):
        raise AnntError(f"checkpoint {path} was trained on {meta['dataset']!r}, not {dataset!r}")


def _user_file(text: str, spec_dir: Path | None, what: str, source: str, key: str) -> Path:
    from annt.inputs.files import regular_file

    try:
        return regular_file(resolve_path(text, spec_dir), what).resolve()
    except AnntError as exc:
        raise _err(source, key, exc) from None


def _user_model(m: ModelSpec, where: str, source: str, spec_dir: Path | None) -> UserModel:
    """The files of a factory, TorchScript or ONNX entry, checked to exist (the model is loaded later)."""
    from annt.models.sources import is_factory_ref

    kind = m.source
    text = str(getattr(m, kind)).strip()
    key = f"{where}.{kind}"
    weights = None
    if kind == "factory":
        if not is_factory_ref(text):
            raise SpecError(source, key, f"{text!r} is not of the form package.module:function or"
                            " path/to/file.py:function")
        module, _, function = text.rpartition(":")
        ref = text
        if module.endswith(".py"):
            ref = f"{_user_file(module, spec_dir, 'model factory file', source, key)}:{function}"
        if m.weights is not None:
            weights = _user_file(m.weights, spec_dir, "weights file", source, f"{where}.weights")
        shown = text + (f" + {m.weights}" if m.weights is not None else "")
    else:
        is_onnx = text.lower().endswith(".onnx")
        if (kind == "onnx") != is_onnx:
            raise SpecError(source, key, f"{text}: ONNX files end in .onnx; give"
                            f" {'torchscript' if kind == 'onnx' else 'onnx'}: {text} instead")
        ref = str(_user_file(text, spec_dir, "ONNX model" if is_onnx else "model file", source, key))
        shown = text
    stats = (tuple(m.mean), tuple(m.std)) if m.mean is not None and m.std is not None else (None, None)
    return UserModel(kind, ref, shown, m.args, weights, *stats)


def _user_slots(m: ModelSpec, i: int, source: str, datasets: list[str], spec_dir: Path | None,
                loaded: dict[int, nn.Module]) -> list[ModelSlot]:
    """One slot per dataset for a user's model, loaded now: a factory that fails, weights that do not
    fit, normalisation or logits that do not fit a dataset are one line before any work."""
    from annt.data import dataset_info
    from annt.experiments.user_models import default_label
    from annt.models.sources import check_logits

    where = f"models[{i}]"
    user = _user_model(m, where, source, spec_dir)
    label = m.label or default_label(user.source, user.shown.split(" + ")[0])
    try:
        model = user.load("cpu")
    except AnntError as exc:
        raise _err(source, where, exc) from None
    loaded[i] = model
    model_sets = datasets
    if m.datasets is not None:
        model_sets = [_dataset_name(d, source, f"{where}.datasets[{j}]") for j, d in enumerate(m.datasets)]
        for j, d in enumerate(model_sets):
            if d not in datasets:
                raise SpecError(source, f"{where}.datasets[{j}]", f"{m.datasets[j]!r} is not one of the study's datasets")
    slots = []
    for dataset in model_sets:
        info = dataset_info(dataset)
        sample = torch.zeros(2, info.channels, info.image_size, info.image_size)
        try:
            check_logits(model, sample, info.num_classes, f"model {label} on {dataset}")
        except AnntError as exc:
            raise _err(source, where, exc) from None
        slots.append(ModelSlot(dataset, label, BitSpec(), None, m.train, {}, i, user=user))
    return slots


def _slots(spec: StudySpec, source: str, datasets: list[str], spec_dir: Path | None,
           loaded: dict[int, nn.Module]) -> list[ModelSlot]:
    """Every (dataset, model, bitwidth) of the spec, checked; ``loaded`` receives the users' models."""
    from annt.models import model_info
    from annt.train.recipes import Recipe, make_recipe, recipe_identity

    slots: list[ModelSlot] = []
    seen: set[str] = set()
    for i, m in enumerate(spec.models):
        where = f"models[{i}]"
        if m.source is not None:
            for slot in _user_slots(m, i, source, datasets, spec_dir, loaded):
                if slot.key in seen:
                    raise SpecError(source, where, f"{slot.key} appears twice in the study; give"
                                    f" {where} its own label")
                seen.add(slot.key)
                slots.append(slot)
            continue
        try:
            name = model_info(m.name).name
        except AnntError as exc:
            raise _err(source, f"{where}.name", exc) from None
        bits: list[BitSpec] = []
        for j, b in enumerate(m.bits):
            try:
                bits.append(parse_bits(b))
            except AnntError as exc:
                raise _err(source, f"{where}.bits[{j}]", exc) from None
        unknown = set(m.train.recipe_overrides) - set(Recipe.model_fields)
        if unknown:
            raise SpecError(source, f"{where}.train.{sorted(unknown)[0]}", "unknown training setting"
                            f" (known: epochs, train_limit, seed, {', '.join(Recipe.model_fields)})")
        try:
            recipe = recipe_identity(make_recipe(name, epochs=m.train.epochs, **m.train.recipe_overrides), m.train.seed)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise SpecError(source, f"{where}.train.{key_path(tuple(e['loc']))}", e["msg"]) from None
        ckpts: dict[BitSpec, str] = {}
        for key, value in m.checkpoints.items():
            try:
                b = parse_bits(key)
            except AnntError as exc:
                raise _err(source, f"{where}.checkpoints.{key}", exc) from None
            if b not in bits:
                raise SpecError(source, f"{where}.checkpoints.{key}", f"bitwidth {b.tag} is not in {where}.bits")
            ckpts[b] = value
        if m.checkpoint is not None:
            if len(bits) != 1:
                raise SpecError(source, f"{where}.checkpoint", "one checkpoint for several bitwidths;"
                                " use checkpoints: {BITS: PATH} instead")
            ckpts[bits[0]] = m.checkpoint
        model_sets = datasets
        if m.datasets is not None:
            model_sets = []
            for j, d in enumerate(m.datasets):
                canonical = _dataset_name(d, source, f"{where}.datasets[{j}]")
                if canonical not in datasets:
                    raise SpecError(source, f"{where}.datasets[{j}]", f"{d!r} is not one of the study's datasets")
                model_sets.append(canonical)
        if ckpts and len(model_sets) != 1:
            raise SpecError(source, f"{where}.checkpoints", "checkpoints belong to one dataset;"
                            f" set {where}.datasets to exactly one")
        missing = [b for b in bits if b not in ckpts]
        if missing and _is_factory(name):
            raise SpecError(source, f"{where}.checkpoints", f"a user factory model is loaded, not trained, in a"
                            f" study: give a checkpoint for {missing[0].tag} (annt import / annt train"
                            " --model-factory write them), or at full precision factory: with its weights:")
        for dataset in model_sets:
            for j, b in enumerate(bits):
                slot_key = f"{dataset}/{name}/{b.tag}"
                if slot_key in seen:
                    raise SpecError(source, f"{where}.bits[{j}]", f"{slot_key} appears twice in the study")
                seen.add(slot_key)
                path, zoo_name = None, None
                if b in ckpts:
                    key = f"{where}.checkpoints.{b.tag}" if m.checkpoints else f"{where}.checkpoint"
                    try:
                        path = resolve_checkpoint(ckpts[b], spec_dir)
                        _check_checkpoint(path, dataset, name, b, ckpts[b], m.trust_unverified)
                    except AnntError as exc:
                        raise _err(source, key, exc) from None
                    zoo_name = ckpts[b] if ckpts[b].startswith("zoo:") else None
                slots.append(ModelSlot(dataset, name, b, path, m.train, recipe, i, zoo_name, m.trust_unverified))
    return _with_twins(spec, source, slots, seen)


def _with_twins(spec: StudySpec, source: str, slots: list[ModelSlot], seen: set[str]) -> list[ModelSlot]:
    """``slots`` with each model's deployed twins (its entry's ``deploy:``) right after it.

    A twin is named ``MODEL.FORMAT`` at its model's bitwidth; ``dorefa`` needs a quantized model.
    """
    out: list[ModelSlot] = []
    for slot in slots:
        out.append(slot)
        deploy = spec.models[slot.spec_index].deploy
        if deploy is None:
            continue
        where = f"models[{slot.spec_index}].deploy"
        try:
            from annt.deploy.runtime import require_onnx

            require_onnx()
        except AnntError as exc:
            raise _err(source, where, exc) from None
        for j, fmt in enumerate(deploy.formats):
            if fmt == "dorefa" and slot.bits == BitSpec():
                raise SpecError(source, f"{where}.formats[{j}]", f"dorefa exports a DoReFa-quantized model;"
                                f" {slot.key} is full precision: deploy it as fp32 or int8")
            twin = DeployTwin(slot, fmt, deploy.int8_format, deploy.calibration_images, tuple(deploy.attacks))
            label = f"{slot.model}.{fmt}"
            twin_slot = ModelSlot(slot.dataset, label, slot.bits, None, slot.train, {}, slot.spec_index, deploy=twin)
            if twin_slot.key in seen:
                raise SpecError(source, where, f"{twin_slot.key} appears twice in the study; give the model"
                                " entry its own label")
            seen.add(twin_slot.key)
            out.append(twin_slot)
    return out


def _check_twin_attacks(spec: StudySpec, source: str, attacks: dict[str, list[AttackConfig]]) -> None:
    """A twin's ``deploy.attacks`` are labels of the study's attacks that need no gradients."""
    from annt.attacks import check_model_supports

    class _Runtime(nn.Module):  # what ONNX Runtime models look like to the check
        annt_differentiable = False

    for i, m in enumerate(spec.models):
        for j, label in enumerate(m.deploy.attacks if m.deploy is not None else []):
            where = f"models[{i}].deploy.attacks[{j}]"
            found = [a for configs in attacks.values() for a in configs if a.label == label]
            if not found:
                known = sorted({a.label for configs in attacks.values() for a in configs})
                raise SpecError(source, where, f"{label!r} is not one of the study's attack labels"
                                f" ({', '.join(known)})")
            try:
                check_model_supports(found[0].name, _Runtime(), "a deployed model")
            except AnntError as exc:
                raise _err(source, where, exc) from None


def _is_factory(name: str) -> bool:
    from annt.models.sources import is_factory_ref

    return is_factory_ref(name)


def _dataset_name(name: str, source: str, where: str) -> str:
    from annt.data import dataset_info

    try:
        return dataset_info(name).name
    except AnntError as exc:
        raise _err(source, where, exc) from None


def _batch(spec: StudySpec, given: int | str, dataset: str, device: torch.device) -> int:
    """``batch_size: auto``: 100 images per call on a CPU, as many as fit on a GPU (see ``auto_batch``)."""
    if given != "auto":
        return int(given)
    from annt.data import dataset_info
    from annt.device import auto_batch

    info = dataset_info(dataset)
    return auto_batch(device, info.channels * info.image_size**2, spec.samples)


def _attacks(spec: StudySpec, source: str, datasets: list[str],
             device: torch.device | None = None) -> dict[str, list[AttackConfig]]:
    labels: dict[str, int] = {}
    out: dict[str, list[AttackConfig]] = {d: [] for d in datasets}
    for i, a in enumerate(spec.attacks):
        where = f"attacks[{i}]"
        name = a.name.strip().lower().replace("-", "_")  # CW-L2, cw_l2 and cw-l2 are one attack
        key = a.label or name
        if key in labels:
            raise SpecError(source, f"{where}.label", f"attack label {key!r} is already used by"
                            f" attacks[{labels[key]}]; give each configuration its own label")
        labels[key] = i
        overrides: dict[str, dict[str, Any]] = {}
        for given_name, values in a.per_dataset.items():
            canonical = _dataset_name(given_name, source, f"{where}.per_dataset.{given_name}")
            if canonical not in datasets:
                raise SpecError(source, f"{where}.per_dataset.{given_name}", "not one of the study's datasets")
            overrides[canonical] = values
        for dataset in datasets:
            try:
                params = validate_attack(name, {**a.params, **overrides.get(dataset, {})})
            except ParamError as exc:
                given = f"{where}.per_dataset.{dataset}" if exc.key.split(".")[0] in overrides.get(dataset, {}) \
                    else f"{where}.params"
                raise SpecError(source, f"{given}.{exc.key}" if exc.key else given, exc.problem) from None
            except AnntError as exc:
                raise _err(source, f"{where}.name", exc) from None
            progression = _progression(spec, source, name, params, where)
            chunk = _batch(spec, a.batch_size, dataset, device or torch.device("cpu"))
            out[dataset].append(AttackConfig(key, name, params, a.backend, chunk, progression))
    return out


def _progression(spec: StudySpec, source: str, name: str, params: dict[str, Any], where: str) -> tuple[int, ...]:
    """Iteration counts for the Boundary Attack figure; explicit lists must all be valid."""
    prog = spec.report.progression
    if name != "boundary" or not prog.enabled or not spec.report.enabled:
        return ()
    max_iter = int(params.get("max_iter", 0))
    wanted = prog.iterations or [i for i in DEFAULT_PROGRESSION if i < max_iter] + [max_iter]
    valid = []
    for it in wanted:
        try:
            validate_attack(name, {**params, "max_iter": it})
            valid.append(it)
        except AnntError as exc:
            if prog.iterations is not None:
                raise SpecError(source, "report.progression.iterations", f"{it}: {exc}") from None
    return tuple(valid)


def _check_gradients(spec: StudySpec, source: str, slots: list[ModelSlot], attacks: dict[str, list[AttackConfig]],
                     loaded: dict[int, nn.Module]) -> None:
    """A gradient attack or the diagnose checklist on a model without gradients (ONNX) is one line."""
    from annt.attacks import check_model_supports
    from annt.robustness.runner import check_diagnosable

    for slot in slots:
        model = loaded.get(slot.spec_index)
        if model is None:
            continue
        where = f"models[{slot.spec_index}]"
        for attack in attacks[slot.dataset]:
            try:
                check_model_supports(attack.name, model, f"model {slot.model}")
            except AnntError as exc:
                raise _err(source, where, exc) from None
        if spec.diagnose is not None:
            try:
                check_diagnosable(model, f"model {slot.model}")
            except AnntError as exc:
                raise _err(source, where, exc) from None


def spec_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def build_plan(
    spec: StudySpec,
    source: str = "study spec",
    *,
    out: str | Path | None = None,
    device: str | None = None,
    spec_dir: Path | None = None,
) -> StudyPlan:
    """Check every name, parameter and file of ``spec``; nothing is written."""
    from annt.device import resolve_device

    datasets = []
    for i, d in enumerate(spec.datasets):
        canonical = _dataset_name(d, source, f"datasets[{i}]")
        if canonical in datasets:
            raise SpecError(source, f"datasets[{i}]", f"{canonical!r} is listed twice")
        datasets.append(canonical)
    loaded: dict[int, nn.Module] = {}
    slots = _slots(spec, source, datasets, spec_dir, loaded)
    for d in datasets:
        if not any(s.dataset == d for s in slots):
            raise SpecError(source, "models", f"no model is trained or loaded for dataset {d!r}")
    wanted = device or spec.device
    try:
        dev = resolve_device(None if wanted == "auto" else wanted)
    except AnntError as exc:
        raise _err(source, "device", exc) from None
    attacks = _attacks(spec, source, datasets, dev)
    _check_gradients(spec, source, [s for s in slots if s.deploy is None], attacks, loaded)
    _check_twin_attacks(spec, source, attacks)
    out_dir = Path(out or spec.output or Path("runs") / spec.name).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(source, "output", f"{out_dir} exists and is not a directory")
    # where and how fast a study runs does not change what it computes
    dump = spec.model_dump(mode="json", exclude={"output", "device", "threads", "executor"})
    dump["models"] = [identity(ModelSpec, m) for m in dump["models"]]  # fields added later: only when set
    if dump.get("diagnose") is not None:
        dump["diagnose"] = identity(DiagnoseSpec, dump["diagnose"])
    study_id = spec_hash(dump)[:16]
    return StudyPlan(spec, source, out_dir, dev, slots, attacks, study_id, spec_dir)
