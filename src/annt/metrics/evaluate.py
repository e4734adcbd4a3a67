"""Apply an adversarial set to a target model: direct and transfer protocols.

*Direct* (target = source): every sample of the set counts.
*Transfer* (the original tool's protocol): only samples whose clean image the target itself
classifies correctly count, at most ``max_samples`` of them in set order; ``n_total`` and
``n_kept`` say how many there were and how many were kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from annt.data import ImageSet
from annt.errors import AnntError
from annt.metrics.distances import perturbation_norms
from annt.metrics.flags import FlagCriterion, flag_unrecognisable
from annt.metrics.records import SampleRecords, summarize
from annt.metrics.ssim import ssim
from annt.models.inference import predict_logits
from annt.store.adversarial_set import AdversarialSet

Mode = Literal["direct", "transfer"]


@dataclass
class Evaluation:
    """Per-sample records plus their summary; ``n_total`` is the size of the applied set."""

    mode: Mode
    n_total: int
    records: SampleRecords
    summary: dict[str, float | int] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return len(self.records)


def match_clean(adv: AdversarialSet, split: ImageSet) -> torch.Tensor:
    """The clean images of ``adv`` looked up by ``image_index`` in ``split`` (labels checked)."""
    order = torch.argsort(split.index)
    sorted_index = split.index[order]
    pos = torch.searchsorted(sorted_index, adv.image_index).clamp(max=len(sorted_index) - 1)
    found = sorted_index[pos] == adv.image_index
    if not bool(found.all()):
        missing = adv.image_index[~found][:3].tolist()
        raise AnntError(f"adversarial set refers to images {missing} that the dataset split lacks")
    rows = order[pos]
    if not bool((split.y[rows] == adv.labels).all()):
        raise AnntError("adversarial set labels do not match the dataset's labels: wrong --dataset?")
    if split.x.shape[1:] != adv.images.shape[1:]:
        raise AnntError(
            f"adversarial images {tuple(adv.images.shape[1:])} do not match dataset images"
            f" {tuple(split.x.shape[1:])}: wrong --dataset?"
        )
    return split.x[rows]


def _true_rank(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 + number of classes scored strictly above the true class (ties count in its favour)."""
    true = logits.gather(1, labels[:, None])
    return 1 + (logits > true).sum(dim=1)


def records_from_logits(
    clean: torch.Tensor,
    adv: torch.Tensor,
    labels: torch.Tensor,
    image_index: torch.Tensor,
    clean_logits: torch.Tensor,
    adv_logits: torch.Tensor,
    criterion: FlagCriterion,
) -> SampleRecords:
    """All per-sample metrics from images and the target's logits (batched, no model calls)."""
    labels = labels.long()
    probs = torch.softmax(adv_logits.double(), dim=1)
    adv_pred = adv_logits.argmax(dim=1)
    fooled = adv_pred != labels
    rank = _true_rank(adv_logits, labels)
    norms = perturbation_norms(clean, adv)
    sim = ssim(clean, adv) if min(clean.shape[-2:]) >= 7 else torch.ones(len(labels), dtype=torch.float64)
    return SampleRecords(
        image_index=image_index.long(),
        label=labels,
        clean_pred=clean_logits.argmax(dim=1),
        adv_pred=adv_pred,
        fooled=fooled,
        true_rank=rank,
        true_prob=probs.gather(1, labels[:, None]).squeeze(1),
        confidence=probs.gather(1, adv_pred[:, None]).squeeze(1),
        l0=norms["l0"],
        l2=norms["l2"],
        linf=norms["linf"],
        ssim=sim,
        flagged=flag_unrecognisable(fooled, sim, rank, criterion),
    )


def evaluate_set(
    model: nn.Module,
    adv: AdversarialSet,
    clean: torch.Tensor,
    *,
    mode: Mode = "direct",
    max_samples: int | None = None,
    criterion: FlagCriterion | None = None,
    batch_size: int = 500,
) -> Evaluation:
    """Evaluate ``adv`` (with its ``clean`` images, same order) on ``model``.

    ``mode="transfer"`` keeps only samples whose clean image ``model`` classifies correctly;
    ``max_samples`` caps the kept samples in both modes (set order, which is random).
    """
    if mode not in ("direct", "transfer"):
        raise AnntError(f"unknown evaluation mode {mode!r}: use direct or transfer")
    if len(clean) != len(adv):
        raise AnntError(f"{len(adv)} adversarial images but {len(clean)} clean images")
    criterion = criterion or FlagCriterion()
    clean_logits = predict_logits(model, clean, batch_size)
    labels = adv.labels.long()
    keep = torch.ones(len(adv), dtype=torch.bool)
    if mode == "transfer":
        keep = clean_logits.argmax(dim=1) == labels
    rows = torch.nonzero(keep).flatten()
    if max_samples is not None:
        rows = rows[:max_samples]
    adv_x = adv.images[rows].float()
    adv_logits = predict_logits(model, adv_x, batch_size) if len(rows) else clean_logits[:0]
    rec = records_from_logits(
        clean[rows].float(), adv_x, labels[rows], adv.image_index[rows], clean_logits[rows],
        adv_logits, criterion,
    )
    summary = {"n_total": len(adv), **summarize(rec)}
    return Evaluation(mode, len(adv), rec, summary)
