"""Training loop: progress bar, JSON-lines metrics, best-on-validation + last checkpoints, resume.

A run is fully described by its folder: ``last/`` holds weights and optimizer/RNG state after
every epoch, ``best/`` the weights with the highest validation accuracy, ``metrics.jsonl``
one line per epoch. Re-running the same command after an interruption continues from
``last/`` instead of starting over; per-epoch data order is derived from (seed, epoch), so a
resumed CPU run reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from annt.data import ImageSet, dataset_info, load_dataset
from annt.errors import AnntError
from annt.models import create_model
from annt.models.inference import accuracy
from annt.progress import Progress
from annt.quant.bits import parse_bits
from annt.store.atomic import atomic_write_text
from annt.store.checkpoint import read_meta, save_checkpoint
from annt.train.adversarial import (
    adversarial_examples,
    crafting_generator,
    eps_at,
    robust_accuracy,
    trades_term,
)
from annt.train.recipes import EXECUTION_FIELDS, Recipe, checked_recipe
from annt.train.state import has_train_state, load_train_state, save_train_state
from annt.zoo import load_model, load_model_ref


@dataclass
class TrainResult:
    best: Path
    last: Path
    validation_accuracy: float
    test_accuracy: float
    epochs: int
    history: list[dict[str, Any]]
    robust_validation_accuracy: float | None = None  # of best/, with ``robust_validation``


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at a random offset: a random shift."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [n, w]
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pad 4 (zeros) + random crop to the input size + random horizontal flip, batched."""
    out = random_crop(x, gen, 4)
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def compact_images(x: torch.Tensor) -> torch.Tensor:
    """``x`` as uint8 when every value is exactly ``k / 255`` (8-bit images), else ``x`` itself.

    Training keeps the set in this form (a quarter of the memory) and converts each batch with
    ``to_float_images``, which gives back exactly the same float32 values: the conversion is the
    one the loaders apply (``uint8.float() / 255``), and the check here is an exact round trip.
    """
    if x.dtype != torch.float32 or not x.numel():
        return x
    # same strides as x (a one-channel set may carry NHWC-like ones, and a batch's strides
    # choose the convolution kernel, hence the rounding of its results)
    out = torch.empty_like(x, dtype=torch.uint8)
    for i in range(0, len(x), 4096):  # chunks: no float temporaries the size of the set
        part = x[i : i + 4096]
        u = part.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        if not torch.equal(to_float_images(u), part):
            return x
        out[i : i + 4096] = u
    return out


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """float32 images in [0,1] from ``compact_images`` storage (float input passes through)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _set_dropout(model: nn.Module, rate: float) -> None:
    """Training-time dropout rate of every ``nn.Dropout`` (inference never uses dropout)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not layers:
        raise AnntError(f"dropout={rate} was set but {type(model).__name__} has no dropout layer")
    for layer in layers:
        layer.p = rate


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only (as tensorpack regularizes '.*/W')."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if recipe.optimizer == "sgd":
        if recipe.nesterov and recipe.momentum <= 0:
            raise AnntError("nesterov needs momentum > 0 (e.g. --momentum 0.9)")
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if recipe.nesterov:
        raise AnntError("nesterov applies to the sgd optimizer only")
    return torch.optim.Adam(groups, lr=recipe.lr)


def _lr_at(recipe: Recipe, epoch: float) -> float:
    """Learning rate at a (fractional) epoch: an optional linear warm-up, then step decay x0.1 at
    each milestone or a cosine from ``lr`` to 0 over the epochs after the warm-up."""
    warm = min(recipe.warmup_epochs, recipe.epochs)
    if epoch < warm:
        return recipe.lr * (epoch + 1e-3) / warm  # never exactly 0: the first step still moves
    if recipe.lr_schedule == "cosine":
        span = recipe.epochs - warm
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / span)) if span > 0 else 0.0
    return recipe.lr * 0.1 ** sum(epoch >= m for m in recipe.lr_milestones)


def _per_batch_lr(recipe: Recipe) -> bool:
    """Cosine and warm-up change the rate every batch; the plain step schedule once per epoch."""
    return recipe.lr_schedule == "cosine" or recipe.warmup_epochs > 0


def _on_device(data: ImageSet, device: torch.device) -> ImageSet:
    """Keep a whole split on an accelerator: batches are then gathered there, with no copies
    from host memory per step (CPU runs keep the set where it is, so results are unchanged)."""
    if device.type == "cpu":
        return data
    return ImageSet(data.x.to(device), data.y.to(device), data.index, data.classes)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) on temperature-softened outputs (keeps gradient scale at any T)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), reduction="batchmean", log_target=True
    ) * (t * t)


def _batch(
    images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, recipe: Recipe, gen: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: gather, augment (on the stored dtype: augmentation only moves pixels
    and pads with zeros, so uint8 and float give the same images), convert to float32 [0,1]."""
    x, y = images[idx], labels[idx]
    if recipe.augment:
        x = augment_batch(x, gen)
    if recipe.random_shift:
        x = random_crop(x, gen, recipe.random_shift)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    x = to_float_images(x)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _training_forward(model: nn.Module, recipe: Recipe) -> nn.Module:
    """The module that computes training forward passes: ``model`` itself, laid out NHWC with
    ``channels_last``, wrapped by ``torch.compile`` with ``compile`` (same parameters)."""
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    if recipe.compile:
        return torch.compile(model)  # type: ignore[return-value]
    return model


def _train_step(
    forward: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
    teacher: nn.Module | None = None, regularizer: Any = None, x_adv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; returns the loss and the logits (both still attached).

    With ``x_adv`` (adversarial training) the step learns from those examples instead of ``x``,
    or, for TRADES, from ``x`` plus the KL term between the outputs on ``x`` and on ``x_adv``.
    """
    trades = x_adv is not None and recipe.adv_method == "trades"
    inputs = x if x_adv is None or trades else x_adv
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
        logits = forward(inputs)
        if recipe.bf16:
            logits = logits.float()
        loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        if trades:
            loss = loss + recipe.trades_beta * trades_term(logits, forward(x_adv).float())
        if recipe.distill_weight > 0:
            with torch.no_grad():
                soft = teacher(inputs).float()  # type: ignore[misc]
            loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * _distill_loss(
                logits, soft, recipe.distill_temperature
            )
    if regularizer is not None:
        loss = loss + regularizer()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def fit(
    model: nn.Module,
    train_set: ImageSet,
    val_set: ImageSet,
    recipe: Recipe,
    out_dir: str | Path,
    meta: dict[str, Any],
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    teacher: nn.Module | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Train any ``nn.Module`` mapping [0,1] images to logits; resumes from ``out_dir/last``.

    With ``recipe.distill_weight`` > 0 the loss mixes in the ``teacher``'s softened outputs
    (knowledge distillation, Hinton et al. 2015): how a quantized net learns from its FP twin.

    ``train_set.x`` may be float32 in [0,1] or uint8 (``compact_images``; values k/255): either
    way the model sees the same float32 batches.

    With ``recipe.adv_method`` each batch is replaced by adversarial examples crafted against the
    model (annt.train.adversarial); with ``recipe.robust_validation`` that many validation images
    are attacked by PGD after each epoch and ``best/`` keeps the epoch with the highest robust
    accuracy (early stopping against robust overfitting, Rice et al. 2020).

    Returns the per-epoch history and the best validation score (the robust accuracy with
    ``robust_validation``, else the accuracy).
    """
    out = Path(out_dir)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    torch.manual_seed(seed)
    optimizer = _optimizer(model, recipe)
    history: list[dict[str, Any]] = []
    best_val = -1.0
    config = {"recipe": recipe.model_dump(), "seed": seed, **{k: meta[k] for k in ("model", "bits", "dataset") if k in meta}}
    last = out / "last"
    if has_train_state(last):
        from annt.store.checkpoint import load_state

        info = load_train_state(last, optimizer)
        saved = {k: v for k, v in info["config"].items() if k != "recipe"}
        now = {k: v for k, v in config.items() if k != "recipe"}
        # through Recipe so that runs saved before a field existed compare with its default
        free = ("epochs", *EXECUTION_FIELDS)
        # runs saved before validation_seed existed split their data by the training seed
        saved_fields = {"validation_seed": info["config"].get("seed", 0), **info["config"]["recipe"]}
        saved_recipe = {k: v for k, v in Recipe(**saved_fields).model_dump().items() if k not in free}
        now_recipe = {k: v for k, v in recipe.model_dump().items() if k not in free}
        if saved != now:
            raise AnntError(f"{out} holds a different training run ({saved}); use another --out folder")
        differ = [k for k in now_recipe if saved_recipe.get(k) != now_recipe[k]]
        if differ:
            what = "; ".join(f"{k} was {saved_recipe.get(k)!r}, now {now_recipe[k]!r}" for k in differ)
            raise AnntError(
                f"{out} was trained with other settings ({what}): pass the saved values to resume"
                " (only --epochs and the speed options may change), or use another --out folder"
            )
        model.load_state_dict(load_state(last))
        history, best_val = info["history"], info["best_val"]
    start = len(history)
    if recipe.dropout is not None:
        _set_dropout(model, recipe.dropout)
    regularizer = getattr(model, "regularization_loss", None)
    if recipe.distill_weight > 0:
        if teacher is None:
            raise AnntError("distill_weight > 0 needs a teacher model (--teacher CHECKPOINT)")
        teacher = teacher.to(device).eval()
    # the training images as uint8 where they are 8-bit (exactly the same floats per batch)
    images, labels = compact_images(train_set.x).to(device), train_set.y.to(device)
    val_set = _on_device(val_set, device)
    robust_set = val_set.x[: recipe.robust_validation], val_set.y[: recipe.robust_validation]
    forward = _training_forward(model, recipe)
    n = len(train_set)
    for epoch in range(start, recipe.epochs):
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        craft_gen = crafting_generator(seed, epoch, device) if recipe.adv_method != "none" else None
        lr = _lr_at(recipe, epoch)
        _set_lr(optimizer, lr)
        model.train()
        order = torch.randperm(n, generator=gen)
        tic = time.perf_counter()
        # running sums stay on the device: no host synchronisation per step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        batches = range(0, n, recipe.batch_size)
        bar = Progress(len(batches), f"epoch {epoch + 1}/{recipe.epochs}", "batches", transient=True, enabled=progress)
        for step, start_i in enumerate(batches):
            if _per_batch_lr(recipe):
                _set_lr(optimizer, _lr_at(recipe, epoch + start_i / n))
            idx = order[start_i : start_i + recipe.batch_size]
            x, y = _batch(images, labels, idx, recipe, gen, device)
            x_adv = None
            if craft_gen is not None:
                eps = eps_at(recipe, epoch + start_i / n)
                x_adv = adversarial_examples(model, x, y, recipe, eps, craft_gen)
            loss, logits = _train_step(forward, optimizer, x, y, recipe, teacher, regularizer, x_adv)
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress and step % 20 == 0:
                bar.set_postfix(f"loss={loss_sum.item() / seen:.4f}, acc={correct.item() / seen:.4f}")
            bar.update(1)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - tic
        val_acc = accuracy(model, val_set.x, val_set.y)
        record = {
            "epoch": epoch + 1, "lr": lr, "loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen,
            "validation_accuracy": val_acc, "seconds": round(seconds, 3),
            "images_per_s": round(seen / seconds, 1),
        }
        if recipe.adv_method != "none":
            record["adv_eps"] = eps  # the budget of the epoch's last batch (ramps up during adv_warmup_epochs)
        epoch_meta = {**meta, "epochs": epoch + 1, "seed": seed, "validation_accuracy": val_acc}
        score = val_acc
        if recipe.robust_validation:
            score = robust_accuracy(model, *robust_set, recipe, seed)
            record["robust_validation_accuracy"] = epoch_meta["robust_validation_accuracy"] = score
        history.append(record)
        if progress:
            print(json.dumps(record), flush=True)
        if score > best_val:
            best_val = score
            save_checkpoint(out / "best", model, epoch_meta)
        save_checkpoint(last, model, epoch_meta)
        save_train_state(last, optimizer, {"config": config, "history": history, "best_val": best_val})
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    return history, best_val


def _provenance(source: str | Path, trained: nn.Module) -> dict[str, Any]:
    meta = trained.annt_meta  # type: ignore[attr-defined]
    return {"checkpoint": str(source), "model": meta["model"], "bits": meta["bits"],
            "weights_sha256": meta.get("weights_sha256")}


def _weights_file_of_factory(model_name: str, source: str | Path) -> bool:
    """``source`` is a plain weights file for a user factory (not a checkpoint, zoo or model file)."""
    from annt.models.sources import is_factory_ref

    path = Path(str(source)).expanduser()
    return is_factory_ref(model_name) and path.is_file() and path.suffix.lower() not in (".onnx",)


def _user_weights(model: nn.Module, model_name: str, source: str | Path, what: str) -> dict[str, Any]:
    """Load a user's weights file (safetensors or state_dict) into a factory model; provenance."""
    from annt.inputs.hashing import file_digest
    from annt.models.sources import Normalized, load_state_into, load_weights_file

    state = load_weights_file(source)
    target = model.net if isinstance(model, Normalized) and not any(k.startswith("net.") for k in state) else model
    load_state_into(target, state, f"{what} {source}")
    return {"weights": str(source), "model": model_name, "weights_sha256": file_digest(Path(source))}


def _warm_start(model: nn.Module, model_name: str, source: str | Path, trust: bool = False) -> dict[str, Any]:
    """Copy a trained checkpoint's weights into ``model``; returns its provenance for the sidecar.

    Bitwidths may differ, and so may the layer set (quantized ResNets carry an extra BN per
    block): tensors present in both are copied, the rest keep their fresh initialisation and
    are listed in the provenance. Shapes must match. For a user factory ``source`` may also be
    a plain weights file (safetensors or state_dict), which must fit exactly.
    """
    if _weights_file_of_factory(model_name, source):
        return _user_weights(model, model_name, source, "--init-from")
    trained = load_model(source, trust_unverified=trust)
    meta = trained.annt_meta  # type: ignore[attr-defined]
    if meta["model"] != model_name:
        what = "checkpoint" if Path(str(source)).is_dir() or str(source).startswith("zoo:") else "model"
        raise AnntError(f"--init-from {source} is a {what} of {meta['model']}, not of {model_name}")
    state = trained.state_dict()
    inside = {"mean", "std"} <= set(state), {"mean", "std"} <= set(model.state_dict())
    if inside[0] and not inside[1]:
        raise AnntError(f"--init-from {source} has input normalisation inside (mean/std) but this model has"
                        " none: pass the same --mean/--std")
    if inside[1] and not inside[0]:
        raise AnntError(f"--init-from {source} has no input normalisation inside but this model has"
                        " (--mean/--std): pass the same options as the source was written with")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line] or ["shape mismatch"]
        raise AnntError(f"--init-from {source} does not fit {model_name} here: {lines[0]}") from None
    if not set(state) - set(result.unexpected_keys):
        raise AnntError(f"--init-from {source} shares no tensor with {model_name} here; nothing would be copied")
    return {**_provenance(source, trained), "kept_fresh": sorted(result.missing_keys),
            "not_used": sorted(result.unexpected_keys)}


def _user_build(model_name: str, model_args: dict[str, Any] | None, preprocess: dict[str, Any] | None,
                keep_fp: Any) -> dict[str, Any]:
    """``create_model``'s extra arguments for a user factory ({} for a registered model)."""
    from annt.models.sources import is_factory_ref

    if not is_factory_ref(model_name):
        given = [k for k, v in (("model_args", model_args), ("mean/std", preprocess), ("keep_fp", keep_fp)) if v]
        if given:
            raise AnntError(f"{', '.join(given)} apply to a user factory (--model-factory), not to {model_name}")
        return {}
    return {"model_args": dict(model_args or {}), "preprocess": preprocess,
            "keep_fp": list(keep_fp) if keep_fp is not None else ["first", "last"]}


def _quantization_report(model: nn.Module) -> dict[str, Any] | None:
    """What :func:`annt.quantize` changed in ``model`` (or in the network inside its normaliser)."""
    for m in model.modules():
        report = getattr(m, "annt_quantization", None)
        if report is not None:
            return dict(report)
    return None


def train_model(
    model_name: str,
    dataset: str,
    bits: str | int | None,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    train_limit: int | None = None,
    init_from: str | Path | None = None,
    teacher: str | Path | None = None,
    evaluate_test: bool = True,
    trust_unverified: bool = False,
    model_args: dict[str, Any] | None = None,
    preprocess: dict[str, list[float]] | None = None,
    keep_fp: list[str] | tuple[str, ...] | None = None,
    **recipe_overrides: Any,
) -> TrainResult:
    """Train a registered model on a named dataset; the CLI's ``annt train``.

    ``init_from`` (a checkpoint folder or ``zoo:NAME`` of the same architecture, any bitwidth)
    starts from trained weights instead of random ones: quantization-aware fine-tuning.
    ``teacher`` (same forms, any model on the same dataset) supplies soft labels; it is used
    with ``distill_weight`` (0.5 when a teacher is given and the weight is not).
    ``evaluate_test=False`` skips the final test-set evaluation (``test_accuracy`` is then NaN):
    for machines that hold only the training files, the test score is taken elsewhere later.
    ``trust_unverified`` lets both be checkpoints without a seal (older ANNT, other tools).

    ``model_name`` may also be a user factory (``package.module:function`` or
    ``path/file.py:function``) called with ``model_args``; below full precision it is converted
    by :func:`annt.quantize` (``keep_fp`` layers stay FP), ``preprocess`` (``mean``/``std``) puts
    normalisation inside, and ``init_from`` / ``teacher`` may then be plain weights files.
    After adversarial training, :func:`annt.robustness.training_check.check_trained` tells
    robustness from gradient masking (``annt train`` runs it).
    """
    spec = parse_bits(bits)
    if teacher is not None and recipe_overrides.get("distill_weight") is None:
        recipe_overrides["distill_weight"] = 0.5
    recipe = checked_recipe(model_name, epochs=epochs, **recipe_overrides)
    info = dataset_info(dataset)
    split = {"validation_size": recipe.validation_size, "seed": recipe.validation_seed}
    train_set = load_dataset(dataset, "train", data_dir, **split)
    val_set = load_dataset(dataset, "validation", data_dir, **split)
    if train_limit is not None:
        train_set = train_set.subset(torch.arange(min(train_limit, len(train_set))))
    # hold the training images as uint8 from here on (fit converts each batch back exactly)
    train_set = ImageSet(compact_images(train_set.x), train_set.y, train_set.index, train_set.classes)
    channels, size = train_set.x.shape[1], train_set.x.shape[2]
    num_classes = len(train_set.classes)
    torch.manual_seed(seed)  # seeded initialisation: same seed, same weights
    build = _user_build(model_name, model_args, preprocess, keep_fp)
    model = create_model(model_name, spec, in_channels=channels, num_classes=num_classes, image_size=size, **build)
    geometry = {"channels": channels, "image_size": size, "num_classes": num_classes}
    meta = {
        "model": model_name, "bits": str(spec), "bits_tag": spec.tag, "dataset": info.name,
        "geometry": geometry, "recipe": recipe.model_dump(),
    }
    if build:
        from annt.models.sources import check_logits, factory_fingerprint

        check_logits(model.eval(), to_float_images(train_set.x[:2].clone()), num_classes, model_name)
        meta.update({k: v for k, v in build.items() if v is not None}, **factory_fingerprint(model_name))
        report = _quantization_report(model)
        if report is not None:
            meta["quantization"] = report
    out = Path(out_dir)
    if init_from is not None:
        if has_train_state(out / "last"):
            # resuming: the weights come from last/, so the source need not exist any more
            meta["init_from"] = read_meta(out / "last").get("init_from", {"checkpoint": str(init_from)})
        else:
            meta["init_from"] = _warm_start(model, model_name, init_from, trust_unverified)
    teacher_model = None
    if teacher is not None and _weights_file_of_factory(model_name, teacher):
        # the factory's full-precision network with the user's weights, normalisation inside
        pre = build["preprocess"] or {}
        teacher_model = load_model_ref(model_name, args=build["model_args"], weights=teacher,
                                       mean=pre.get("mean"), std=pre.get("std"))
        meta["teacher"] = {"weights": str(teacher), "model": model_name,
                           "weights_sha256": teacher_model.annt_meta["weights"]["sha256"]}  # type: ignore[index]
    elif teacher is not None:
        teacher_model = load_model(teacher, trust_unverified=trust_unverified)
        meta["teacher"] = _provenance(teacher, teacher_model)
    history, best_val = fit(
        model, train_set, val_set, recipe, out, meta, seed=seed, device=device, progress=progress, teacher=teacher_model
    )
    robust_val = None
    if recipe.robust_validation:  # best/ is the most robust epoch: report its clean accuracy too
        robust_val, best_val = best_val, read_meta(out / "best")["validation_accuracy"]
    if not evaluate_test:
        return TrainResult(out / "best", out / "last", best_val, float("nan"), len(history), history, robust_val)
    from annt.store.checkpoint import load_checkpoint

    test_set = load_dataset(dataset, "test", data_dir)
    best_model = load_checkpoint(out / "best", device=device or default_device())
    test_acc = accuracy(best_model, test_set.x, test_set.y)
    best_meta = read_meta(out / "best")
    if best_meta.get("test_accuracy") != test_acc:
        save_checkpoint(out / "best", best_model, {**best_meta, "test_accuracy": test_acc})
    return TrainResult(out / "best", out / "last", best_val, test_acc, len(history), history, robust_val)
