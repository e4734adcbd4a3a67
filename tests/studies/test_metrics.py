"""Metrics against hand-computed values (and SSIM against scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from annt.data import ImageSet
from annt.errors import AnntError
from annt.metrics import (
    FlagCriterion,
    SampleRecords,
    evaluate_set,
    flag_unrecognisable,
    l0_distance,
    l2_distance,
    linf_distance,
    match_clean,
    perturbation_norms,
    records_from_logits,
    ssim,
    summarize,
)
from annt.store.adversarial_set import AdversarialSet


def test_distances_by_hand():
    clean = torch.zeros(1, 2, 3, 3)
    adv = clean.clone()
    adv[0, 0, 0, 0] = 0.5  # pixel (0,0): both channels change -> counts once
    adv[0, 1, 0, 0] = -0.2
    adv[0, 1, 2, 1] = 0.3  # pixel (2,1)
    adv[0, 0, 1, 1] = 1e-8  # below the 1e-6 tolerance: not a changed pixel
    assert l0_distance(clean, adv).tolist() == [2]
    assert l2_distance(clean, adv).item() == pytest.approx(math.sqrt(0.25 + 0.04 + 0.09 + 1e-16))
    assert linf_distance(clean, adv).item() == pytest.approx(0.5)
    norms = perturbation_norms(clean, adv)
    assert norms["l0"].tolist() == [2]
    assert norms["l2"].item() == pytest.approx(math.sqrt(0.38), rel=1e-6)
    assert norms["linf"].item() == pytest.approx(0.5)


def test_distances_zero_and_batch():
    clean = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    adv = clean.clone()
    adv[2] = (adv[2] + 0.1).clamp(0, 1)
    norms = perturbation_norms(clean, adv)
    assert norms["l0"][[0, 1, 3]].tolist() == [0, 0, 0]
    assert norms["l2"][[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]
    expected_l0 = int(((adv[2] - clean[2]).abs() > 1e-6).sum())
    assert norms["l0"][2].item() == expected_l0
    with pytest.raises(ValueError):
        perturbation_norms(clean, adv[:2])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_skimage(channels, gaussian):
    gen = torch.Generator().manual_seed(channels)
    x = torch.rand(4, channels, 28, 32, generator=gen)
    y = (x + 0.25 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    y[0] = x[0]  # identical pair
    y[1] = torch.rand(channels, 28, 32, generator=gen)  # unrelated noise
    ours = ssim(x, y, gaussian=gaussian)
    kwargs = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian else {}
    ref = [
        structural_similarity(x[i].numpy(), y[i].numpy(), data_range=1.0, channel_axis=0, **kwargs)
        for i in range(4)
    ]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    assert ours[0].item() == pytest.approx(1.0)


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))


def _records(**over) -> SampleRecords:
    base = dict(
        image_index=torch.arange(5), label=torch.zeros(5, dtype=torch.long),
        clean_pred=torch.zeros(5, dtype=torch.long), adv_pred=torch.tensor([1, 2, 0, 3, 0]),
        fooled=torch.tensor([True, True, False, True, False]), true_rank=torch.tensor([2, 3, 1, 2, 1]),
        true_prob=torch.full((5,), 0.1, dtype=torch.float64),
        confidence=torch.tensor([0.5, 0.7, 0.9, 0.6, 0.8], dtype=torch.float64),
        l0=torch.tensor([3, 5, 0, 10, 0]), l2=torch.tensor([1.0, 2.0, 9.0, 4.0, 9.0], dtype=torch.float64),
        linf=torch.tensor([0.1, 0.2, 0.0, 0.4, 0.0], dtype=torch.float64),
        ssim=torch.tensor([0.9, 0.8, 1.0, 0.05, 1.0], dtype=torch.float64),
        flagged=torch.tensor([False, False, False, True, False]),
    )
    base.update(over)
    return SampleRecords(**base)


def test_summary_by_hand():
    s = summarize(_records())
    assert s["n_kept"] == 5 and s["n_correct"] == 2 and s["n_success"] == 3
    assert s["adversarial_accuracy"] == pytest.approx(0.4)
    assert s["evasion_rate"] == pytest.approx(0.6)
    # distortions over the 3 successful samples (0, 1, 3)
    assert s["mean_l2"] == pytest.approx((1 + 2 + 4) / 3)
    assert s["median_l2"] == pytest.approx(2.0)
    assert s["mean_l0"] == pytest.approx(6.0)
    assert s["median_l0"] == pytest.approx(5.0)
    assert s["mean_linf"] == pytest.approx(0.7 / 3)
    assert s["top2_fraction"] == pytest.approx(2 / 3)
    assert s["mean_true_rank"] == pytest.approx(7 / 3)
    assert s["mean_confidence"] == pytest.approx(0.6)
    # sample 3 flagged: removed from the population and from the distortions
    assert s["n_flagged"] == 1
    assert s["adversarial_accuracy_unflagged"] == pytest.approx(2 / 4)
    assert s["mean_l2_unflagged"] == pytest.approx(1.5)
    assert s["mean_l0_unflagged"] == pytest.approx(4.0)


def test_summary_even_median_and_no_success():
    rec = _records(fooled=torch.tensor([True, True, False, True, True]))
    assert summarize(rec)["median_l2"] == pytest.approx((2 + 4) / 2)  # l2 of 1, 2, 4, 9
    none = summarize(_records(fooled=torch.zeros(5, dtype=torch.bool), flagged=torch.zeros(5, dtype=torch.bool)))
    assert none["adversarial_accuracy"] == 1.0
    assert math.isnan(none["mean_l2"]) and math.isnan(none["median_l0"]) and math.isnan(none["top2_fraction"])


def test_flag_criterion():
    fooled = torch.tensor([True, True, True, False])
    sim = torch.tensor([0.05, 0.05, 0.5, 0.01], dtype=torch.float64)
    rank = torch.tensor([2, 4, 2, 1])
    paper = FlagCriterion(ssim_below=0.1, require_true_in_top2=True)
    assert flag_unrecognisable(fooled, sim, rank, paper).tolist() == [True, False, False, False]
    ssim_only = FlagCriterion(ssim_below=0.1, require_true_in_top2=False)
    assert flag_unrecognisable(fooled, sim, rank, ssim_only).tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        FlagCriterion(ssim_below=1.5)


def test_records_from_logits_by_hand():
    clean = torch.zeros(3, 1, 8, 8)
    adv = clean.clone()
    adv[1, 0, 0, :4] = 0.25  # 4 changed pixels
    adv[2] = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))  # noise
    labels = torch.tensor([0, 1, 2])
    adv_logits = torch.tensor([[2.0, 1.0, 0.0], [3.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
    clean_logits = torch.eye(3) * 5
    rec = records_from_logits(clean, adv, labels, torch.tensor([7, 8, 9]), clean_logits, adv_logits,
                              FlagCriterion(ssim_below=0.5))
    assert rec.adv_pred.tolist() == [0, 0, 1]
    assert rec.fooled.tolist() == [False, True, True]
    assert rec.true_rank.tolist() == [1, 2, 2]
    assert rec.l0.tolist()[:2] == [0, 4]
    assert rec.l2[1].item() == pytest.approx(0.5)
    assert rec.linf[1].item() == pytest.approx(0.25)
    p = torch.softmax(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), 0)
    assert rec.confidence[1].item() == pytest.approx(p[0].item())
    assert rec.true_prob[1].item() == pytest.approx(p[1].item())
    assert rec.ssim[0].item() == pytest.approx(1.0)
    # sample 2: fooled, noise (low SSIM against a black image), true class 2nd -> flagged
    assert rec.flagged.tolist() == [False, False, True]


class LeftRight(nn.Module):
    """Class 0 when the left half is brighter, class 1 otherwise (logits = half means x 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1) * 10


def _halves(sides: list[int]) -> torch.Tensor:
    x = torch.zeros(len(sides), 1, 8, 8)
    for i, side in enumerate(sides):
        x[i, 0, :, side * 4 : side * 4 + 4] = 1.0
    return x


def test_evaluate_direct_and_transfer_protocol():
    model = LeftRight()
    labels = torch.tensor([0, 0, 1, 1, 0])
    clean = _halves([0, 1, 1, 0, 0])  # target classifies samples 0, 2, 4 correctly
    adv_images = _halves([1, 1, 0, 0, 0])  # sample 0, 2 flipped (fooled); sample 4 unchanged
    adv = AdversarialSet(adv_images, labels, torch.arange(5), torch.ones(5, dtype=torch.bool))
    direct = evaluate_set(model, adv, clean, mode="direct")
    assert direct.n_total == 5 and direct.n_kept == 5
    # the model follows the bright half: only sample 4 keeps its label
    assert direct.records.adv_pred.tolist() == [1, 1, 0, 0, 0]
    assert direct.summary["adversarial_accuracy"] == pytest.approx(1 / 5)  # only sample 4
    transfer = evaluate_set(model, adv, clean, mode="transfer")
    assert transfer.n_kept == 3
    assert transfer.records.image_index.tolist() == [0, 2, 4]
    assert transfer.summary["n_total"] == 5 and transfer.summary["n_kept"] == 3
    assert transfer.summary["adversarial_accuracy"] == pytest.approx(1 / 3)
    capped = evaluate_set(model, adv, clean, mode="transfer", max_samples=2)
    assert capped.records.image_index.tolist() == [0, 2]
    assert capped.summary["adversarial_accuracy"] == 0.0
    # fooled samples moved a whole half: l2 = sqrt(64) = 8 (32 pixels on, 32 off)
    assert transfer.summary["mean_l2"] == pytest.approx(8.0)
    assert transfer.summary["mean_l0"] == pytest.approx(64.0)


def test_evaluate_transfer_nothing_kept():
    model = LeftRight()
    labels = torch.tensor([0, 0])
    clean = _halves([1, 1])  # target misclassifies both clean images
    adv = AdversarialSet(clean.clone(), labels, torch.arange(2), torch.zeros(2, dtype=torch.bool))
    ev = evaluate_set(model, adv, clean, mode="transfer")
    assert ev.n_kept == 0 and math.isnan(ev.summary["adversarial_accuracy"])


def test_match_clean_uses_image_index():
    split = ImageSet(torch.arange(4.0).reshape(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]), torch.tensor([10, 11, 12, 13]))
    adv = AdversarialSet(torch.zeros(2, 1, 1, 1), torch.tensor([1, 0]), torch.tensor([13, 10]), torch.ones(2, dtype=torch.bool))
    assert match_clean(adv, split).flatten().tolist() == [3.0, 0.0]
    wrong = AdversarialSet(torch.zeros(1, 1, 1, 1), torch.tensor([0]), torch.tensor([11]), torch.ones(1, dtype=torch.bool))
    with pytest.raises(AnntError, match="labels do not match"):
        match_clean(wrong, split)
    missing = AdversarialSet(torch.zeros(1, 1, 1, 1), torch.tensor([0]), torch.tensor([99]), torch.ones(1, dtype=torch.bool))
    with pytest.raises(AnntError, match="lacks"):
        match_clean(missing, split)


def test_default_ssim_threshold_separates_noise_from_fgsm_like_noise():
    """The documented calibration: pure noise is flagged, an eps-0.3 sign perturbation is not."""
    from annt.data import load_dataset

    x = load_dataset("mnist-embedded", "test").x[:200]
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(x.shape, generator=gen)
    signs = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
    fgsm_like = (x + 0.3 * signs).clamp(0, 1)
    threshold = FlagCriterion().ssim_below
    assert bool((ssim(x, noise) < threshold).all())
    assert bool((ssim(x, fgsm_like) > threshold).all())
