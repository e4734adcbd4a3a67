"""The accelerator plans in scripts/plans/ are valid before any device time is spent on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annt.models import model_info
from annt.quant.bits import parse_bits
from annt.train.recipes import checked_recipe
from annt.zoo import zoo_entry

PLANS = sorted((Path(__file__).resolve().parents[2] / "scripts" / "plans").glob("*.json"))


def test_there_are_plans():
    assert PLANS


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_every_job_of_a_plan_has_a_valid_recipe_and_known_sources(plan):
    jobs = json.loads(plan.read_text())
    assert jobs and len({j["name"] for j in jobs}) == len(jobs)
    for job in jobs:
        model_info(job["model"])
        parse_bits(job["bits"])
        epochs = job["epochs"]
        assert epochs == "budget" or (isinstance(epochs, int) and epochs > 0), job["name"]
        checked_recipe(job["model"], epochs=job.get("max_epochs", 1) if epochs == "budget" else epochs,
                       **job.get("recipe", {}))
        for ref in (job.get("init_from"), job.get("teacher")):
            if ref is not None and ref.startswith("zoo:"):
                zoo_entry(ref[len("zoo:"):])
