"""The efficacy study's metrics and report (benchmarks/efficacy.py, efficacy_report.py) on hand-computed cases."""

import importlib.util
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def report():
    return _module("efficacy_report")


@pytest.fixture(scope="module")
def efficacy():
    return _module("efficacy")


def _row(response, mention, recall, garbled=0.0, partner=0.5, dominated=()):
    return {
        "chair_response": response, "chair_mention": mention, "recall": recall, "garbled": garbled,
        "partner_named": partner, "dominated_by": list(dominated),
    }  # fmt: skip


FIGURES = {
    "base": "builtin:biased",
    "scenes": 10,
    "first_scene_seed": 1000000,
    "temperatures": [0.0, 1.0],
    "policies": {
        "base": {"greedy": _row(0.6, 0.3, 0.9), "T=1": _row(0.8, 0.4, 0.75, garbled=0.02)},
        "rlaifv-s42/iteration-1": {"greedy": _row(0.3, 0.15, 0.8), "T=1": _row(0.4, 0.2, 0.7, dominated=["greedy"])},
        "rlaifv-s43/iteration-1": {"greedy": _row(0.2, 0.1, 0.9), "T=1": _row(0.2, 0.1, 0.6, garbled=0.04)},
        "rs_sft": {"greedy": _row(0.45, 0.3, 0.9), "T=1": _row(0.6, 0.3, 0.75)},
    },
    "best_of_n": {"base": {"greedy": _row(0.5, 0.2, 0.8), "best_of_8[labeler]": _row(0.4, 0.1, 0.8)}},
}


def test_runs_pool_over_seeds_with_mean_min_and_max(report):
    pools = report.pooled(FIGURES["policies"])
    assert list(pools) == ["base", "rlaifv/iteration-1", "rs_sft"]
    pooled = pools["rlaifv/iteration-1"]
    assert pooled["seeds"] == [42, 43]
    assert pooled["greedy"]["chair_response"] == pytest.approx({"mean": 0.25, "min": 0.2, "max": 0.3})
    assert pooled["T=1"]["recall"] == pytest.approx({"mean": 0.65, "min": 0.6, "max": 0.7})
    assert pooled["T=1"]["dominated_by"] == ["greedy"]  # dominated in one seed
    assert pools["rs_sft"]["seeds"] == [] and pools["rs_sft"]["greedy"]["recall"]["min"] == 0.9


def test_the_report_states_changes_relative_to_the_base_and_best_of_n_against_greedy(report):
    text = report.markdown_report(FIGURES)
    # (0.25 - 0.6) / 0.6 = -58%, (0.3 - 0.8) / 0.8 = -62.5%; mention (0.125 - 0.3) / 0.3 = -58%, (0.15 - 0.4) / 0.4
    # = -62.5%; recall (0.85 - 0.9) / 0.9 = -6%, (0.65 - 0.75) / 0.75 = -13%; garbled at T=1: 2.0%.
    assert "| rlaifv/iteration-1 | -58% | -62% | -58% | -62% | -6% | -13% | 2.0% |" in text
    assert "| rlaifv/iteration-1 | 2 | greedy | 25.0 (20.0-30.0) | 12.5 (10.0-15.0) | 85.0 (80.0-90.0) |" in text
    assert "| rs_sft | 1 | T=1 | 60.0 | 30.0 | 75.0 | 0.0 | 50.0 | none |" in text
    assert "| base | best_of_8[labeler] | 40.0 | 10.0 | 80.0 | 0.0 | -20% | +0% |" in text
    assert "| target | <= -60% |" in text
    assert report.relative_change(0.3, 0.0) == 0.0


def test_the_plot_is_a_png(report, tmp_path):
    path = report.plot(FIGURES, tmp_path / "efficacy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_dominance_and_the_garbled_rate(efficacy):
    base = {"greedy": _row(0.6, 0.3, 0.9), "T=1": _row(0.8, 0.4, 0.75)}
    assert efficacy.dominated_by(_row(0.7, 0.35, 0.8), base) == ["greedy"]
    assert efficacy.dominated_by(_row(0.6, 0.3, 0.9), base) == ["greedy"]  # as good counts
    assert efficacy.dominated_by(_row(0.5, 0.35, 0.95), base) == []
    assert not efficacy.garbled("There is a red circle. There is a blue square.")
    assert efficacy.garbled("There is a red circle. circle circle")
    assert efficacy.garbled("Nothing here.")
    metrics = efficacy.score(
        ["There is a red circle. There is a green triangle.", "There is a blue square."],
        [["red circle", "blue square"], ["blue square"]],
    )
    # The first answer names the absent partner of the red circle (green triangle): 1 of 2 answers, 1 of 3 mentions.
    # Both scenes hold a blue square without its partner (yellow circle); only the first names an absent partner.
    assert metrics["chair_response"] == 0.5 and metrics["chair_mention"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3) and metrics["partner_named"] == 0.5 and metrics["garbled"] == 0
