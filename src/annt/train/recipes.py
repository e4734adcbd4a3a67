"""Training recipes of the original tool, selected by model family; every field overridable."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from annt.errors import AnntError
from annt.inputs.identity import identity, later, later_fields
from annt.quant.surrogate import DEFAULT_GRADIENT, GRADIENTS

ADV_METHODS = ("none", "pgd", "fgsm_rs", "trades")  # adversarial training (annt.train.adversarial)


class Recipe(BaseModel):
    """Optimiser, schedule and augmentation for one training run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    optimizer: str = Field("adam", pattern="^(adam|sgd)$", description="the optimiser")
    lr: float = Field(1e-3, gt=0, le=10, description="learning rate")  # larger overflows the optimiser state: a typo, not a recipe
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay")
    batch_size: int = Field(128, ge=1, description="training images per batch")
    epochs: int = Field(10, ge=1, le=100_000, description="training epochs")
    lr_milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)  # epochs where lr is multiplied by 0.1
    lr_schedule: str = Field("step", pattern="^(step|cosine)$")  # cosine: per batch, from lr to 0
    warmup_epochs: float = later(0.0, "0.2.0", ge=0)  # linear ramp from 0 to lr (per batch) before the schedule
    nesterov: bool = later(False, "0.2.0")  # Nesterov momentum (SGD only)
    label_smoothing: float = later(0.0, "0.2.0", ge=0, lt=1)  # cross-entropy against smoothed one-hot labels
    distill_weight: float = Field(0.0, ge=0, le=1)  # share of the loss from a teacher's soft labels
    distill_temperature: float = Field(4.0, gt=0, le=1000)  # softmax temperature of the teacher's soft labels
    augment: bool = False  # pad 4 + random crop + horizontal flip (CIFAR; flips are wrong for digits)
    random_shift: int = Field(0, ge=0, le=8)  # random translation by up to N pixels, zero fill, no flip
    dropout: float | None = Field(None, ge=0, lt=1)  # training dropout rate; None: the model's own
    validation_size: int | None = None  # training images held out for validation; None: the dataset's own
    # seed of the held-out split: one split for every run whatever its training seed, so a run
    # that starts from or distils from another never validates on that one's training images
    validation_seed: int = later(0, "0.2.0", ge=0, description="seed of the held-out validation split")
    # speed options (issue 11): off by default; results then equal those of earlier versions
    channels_last: bool = later(False, "0.2.0")  # NHWC tensors for convolutions (faster oneDNN kernels on CPU)
    compile: bool = later(False, "0.2.0")  # torch.compile the training forward/backward (minutes of warm-up)
    bf16: bool = later(False, "0.2.0")  # bfloat16 autocast of the forward pass (changes results; see docs)
    # adversarial training (annt.train.adversarial): train on examples crafted against the model
    adv_method: str = later("none", "0.3.0", pattern=f"^({'|'.join(ADV_METHODS)})$",
                            description="train on adversarial examples: pgd, fgsm_rs (FGSM, random start), trades")
    adv_eps: float | None = later(None, "0.3.0", ge=0, le=1000)  # budget; needed by adv_method / robust_validation
    adv_norm: str = later("inf", "0.3.0", pattern="^(inf|2)$")  # norm of adv_eps
    adv_steps: int | None = later(None, "0.3.0", ge=1, le=10_000)  # None: 10 (pgd, trades), 1 (fgsm_rs)
    adv_step_size: float | None = later(None, "0.3.0", gt=0, le=1000)  # None: 2.5 eps/steps; fgsm_rs 1.25 eps
    adv_warmup_epochs: float = later(0.0, "0.3.0", ge=0)  # eps (and step) ramp linearly from 0 over these epochs
    adv_gradient: str = later(DEFAULT_GRADIENT, "0.3.0", pattern=f"^({'|'.join(GRADIENTS)})$")  # quantizer surrogate
    trades_beta: float = later(6.0, "0.3.0", ge=0, le=1000)  # TRADES: weight of the KL robustness term
    robust_validation: int = later(0, "0.3.0", ge=0, description="validation images attacked by a short PGD after each epoch;"
                                  " >0: best/ is the most robust epoch")

    @model_validator(mode="after")
    def _adversarial_settings_fit(self) -> Recipe:
        method = self.adv_method
        if method != "none" and self.adv_eps is None:
            raise ValueError(f"adv_method {method} needs adv_eps (the perturbation budget)")
        if self.robust_validation and self.adv_eps is None:
            raise ValueError("robust_validation needs adv_eps (the budget of its PGD)")
        if method == "fgsm_rs" and self.adv_steps not in (None, 1):
            raise ValueError(f"adv_method fgsm_rs takes one step, not adv_steps={self.adv_steps}")
        if method != "trades" and self.trades_beta != 6.0:
            raise ValueError(f"trades_beta applies to adv_method trades, not {method}")
        if method == "none":
            crafting = {"adv_steps": None, "adv_step_size": None, "adv_warmup_epochs": 0.0}
            if not self.robust_validation:
                crafting.update(adv_eps=None, adv_norm="inf", adv_gradient=DEFAULT_GRADIENT)
            extra = [k for k, v in crafting.items() if getattr(self, k) != v]
            if extra:
                raise ValueError(f"{extra[0]} applies with adv_method pgd, fgsm_rs or trades"
                                 f"{'' if self.robust_validation else ' (or robust_validation)'}")
        return self


# Fields added after studies were first stored (declared with ``later`` above): left out of a
# study cell's identity while at their defaults, so that models trained before they existed are
# reused, not retrained; the same rule (annt.inputs.identity) keeps attack results valid.
_LATER_FIELDS = later_fields(Recipe)
# How a run executes, not what it trains (the same computation in another memory layout or
# fused by a compiler: equal up to float rounding): a resumed run may switch them.
EXECUTION_FIELDS = ("channels_last", "compile")


def recipe_identity(recipe: Recipe, seed: int = 0) -> dict:
    """The recipe as a study cell's key sees it (see ``_LATER_FIELDS``).

    Before ``validation_seed`` existed the split followed the training ``seed``: a run with
    another seed than its validation seed keeps the field in its key (it trains on another
    split than such a cell did, so it must not be reused for it).
    """
    kept = identity(Recipe, recipe.model_dump())
    if seed != recipe.validation_seed:
        kept["validation_seed"] = recipe.validation_seed
    return kept


def default_recipe(model_name: str) -> Recipe:
    """Adam 1e-3 / batch 128 for the MNIST models; SGD 0.1 momentum 0.9 wd 2e-4 for ResNets."""
    if model_name.startswith("resnet"):
        return Recipe(
            optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128,
            epochs=64, lr_milestones=[32, 48], augment=True,
        )
    return Recipe()


def make_recipe(model_name: str, **overrides) -> Recipe:
    """The family's default with the given fields replaced (``None`` values are ignored)."""
    base = default_recipe(model_name).model_dump()
    base.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("epochs") is not None and overrides.get("lr_milestones") is None and base["lr_milestones"]:
        # keep the step schedule proportional when only the epoch count changes
        scale = base["epochs"] / default_recipe(model_name).epochs
        base["lr_milestones"] = [max(1, round(m * scale)) for m in default_recipe(model_name).lr_milestones]
    return Recipe(**base)


def checked_recipe(model_name: str, **overrides) -> Recipe:
    """``make_recipe`` for command-line use: an invalid setting is a one-line ``AnntError``."""
    try:
        return make_recipe(model_name, **overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across fields (Recipe's validator): its message names them
            raise AnntError(f"bad training settings: {err['msg'].removeprefix('Value error, ')}") from None
        field = ".".join(str(p) for p in err["loc"])
        raise AnntError(f"bad training setting {field}={err.get('input')!r}: {err['msg']}") from None
