"""Deployment-gap search (``annt.deploy.gap``, ``annt deploy-gap``): a hand-computed case and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from annt.cli.main import main
from annt.deploy.gap import DIRECTIONS, TIE, gap_search, margins
from annt.inputs.hashing import file_digest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class Pixel(nn.Module):
    """Two classes on one pixel ``p``: logits ``(0, 10 (p - 0.5))``; ``shift`` lowers class 1's logit."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = 10 * (x.flatten(1)[:, :1] - 0.5) - self.shift
        return torch.cat([torch.zeros_like(z1), z1], 1)


class Runtime(Pixel):
    """The same as a forward-only 'deployed' model (no gradients, like ONNX Runtime)."""

    annt_differentiable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x.detach())


def _images(*pixels: float) -> torch.Tensor:
    return torch.tensor(pixels).view(-1, 1, 1, 1)


def test_margins_are_the_true_logit_minus_the_best_other():
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0]])
    assert margins(z, torch.tensor([2, 0])).tolist() == [-1.0, 5.0]


def test_gap_search_finds_exactly_the_hand_computed_gaps():
    """The deployed model is the PyTorch one with class 1's logit 0.3 lower: they disagree exactly
    for p in (0.5, 0.53). Image p=0.6 (label 1) reaches that interval at eps 0.25 but not at
    0.05 (PyTorch right, deployed wrong); image p=0.3 (label 0) reaches it at 0.25 only
    (PyTorch wrong, deployed right)."""
    x, y = _images(0.6, 0.3), torch.tensor([1, 0])
    result = gap_search(Pixel(), Runtime(shift=0.3), x, y, [0.05, 0.25], steps=20, restarts=3, seed=0)
    rows = result.summary()
    assert [(r["deployed_wrong"], r["deployed_right"], r["either"]) for r in rows] == [(0, 0, 0), (1, 1, 2)]
    assert result.clean == {"pytorch_correct": 2, "deployed_correct": 2, "deployed_wrong": 0, "deployed_right": 0}
    wrong, right = result.found[(1, "deployed_wrong")], result.found[(1, "deployed_right")]
    assert wrong.index.tolist() == [0] and right.index.tolist() == [1]
    for found in (wrong, right):
        p = float(found.x.flatten()[0])
        assert 0.5 < p < 0.53  # the only inputs where the two disagree
        assert found.torch_pred.tolist() != found.deployed_pred.tolist()
        assert abs(found.torch_margin[0]) >= TIE and found.ties == 0
    assert abs(float(wrong.x.flatten()[0]) - 0.6) <= 0.25 and abs(float(right.x.flatten()[0]) - 0.3) <= 0.25


def test_identical_deployed_model_has_no_gap_and_search_is_seeded():
    x, y = _images(0.6, 0.3, 0.45, 0.52), torch.tensor([1, 0, 1, 0])
    runs = [gap_search(Pixel(), Runtime(), x, y, [0.1], steps=10, restarts=3, seed=3) for _ in range(2)]
    for r in runs:
        assert all(len(r.found[(0, d)].index) == 0 for d in DIRECTIONS)
    shifted = [gap_search(Pixel(), Runtime(shift=0.3), x, y, [0.1], steps=10, restarts=3, seed=3) for _ in range(2)]
    for d in DIRECTIONS:
        np.testing.assert_array_equal(shifted[0].found[(0, d)].x, shifted[1].found[(0, d)].x)


def test_gap_search_refuses_a_model_without_gradients():
    from annt.errors import AnntError

    with pytest.raises(AnntError, match="follows the PyTorch model's gradients"):
        gap_search(Runtime(), Runtime(), _images(0.6), torch.tensor([1]), [0.1])


@pytest.fixture(scope="module")
def dorefa_file(tmp_path_factory):
    from annt.data import load_dataset
    from annt.deploy import export_model
    from annt.zoo import load_model

    path = tmp_path_factory.mktemp("gap") / "d4.onnx"
    export_model(load_model("zoo:mnist_a@4bit"), path, "dorefa", load_dataset("mnist-embedded", "train").x[:200])
    return path


def test_cli_writes_summary_and_inputs(dorefa_file, tmp_path, capsys):
    out = tmp_path / "gap"
    argv = ["deploy-gap", "--checkpoint", "zoo:mnist_a@4bit", "--deployed", str(dorefa_file), "--eps", "0.05,0.1",
            "--n-images", "6", "--steps", "3", "--restarts", "2", "--dataset", "mnist-embedded", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "gap.json").read_text())
    assert summary["kind"] == "annt-deploy-gap" and summary["deployed_format"] == "dorefa"
    assert summary["provenance"]["annt_version"] and summary["inputs"]["sha256"] == file_digest(out / "gap.npz")
    assert [r["eps"] for r in summary["results"]] == [0.05, 0.1]
    assert all(r["images"] == 6 and r["either"] <= 6 for r in summary["results"])
    with np.load(out / "gap.npz", allow_pickle=False) as z:
        assert z["eps"].tolist() == [0.05, 0.1]
        for k, row in enumerate(summary["results"]):
            for d in DIRECTIONS:
                assert len(z[f"e{k}_{d}_image_index"]) == row[d]
                assert z[f"e{k}_{d}_x"].shape[1:] == (1, 28, 28)
    assert "deployed_wrong" in capsys.readouterr().out


def test_cli_refuses_another_models_file_and_edited_files(dorefa_file, tmp_path, capsys):
    base = ["deploy-gap", "--eps", "0.1", "--n-images", "2", "--steps", "1", "--restarts", "1",
            "--dataset", "mnist-embedded", "--out", str(tmp_path / "o")]
    assert main([*base, "--checkpoint", "zoo:mnist_a@fp", "--deployed", str(dorefa_file)]) == 1
    err = capsys.readouterr().err
    assert "was exported from mnist_a, not zoo:mnist_a@fp (weights_sha256 differs)" in err and len(err.strip().splitlines()) == 1
    edited = tmp_path / "d4.onnx"
    edited.write_bytes(dorefa_file.read_bytes() + b"x")
    (tmp_path / "d4.json").write_bytes(dorefa_file.with_suffix(".json").read_bytes())
    assert main([*base, "--checkpoint", "zoo:mnist_a@4bit", "--deployed", str(edited)]) == 1
    err = capsys.readouterr().err
    assert "was changed after export" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--checkpoint", "zoo:mnist_a@4bit", "--deployed", str(dorefa_file), "--eps", "0"])
    assert exit_.value.code == 2 and "eps values must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
