"""The labeling benchmark runs end to end and writes its figures (tiny sizes: a smoke test, not a measurement)."""

import importlib.util
import json
from pathlib import Path

import torch


def test_benchmark_writes_its_figures(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "labeling.py"
    spec = importlib.util.spec_from_file_location("labeling_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(
            ["--json", str(tmp_path / "figures.json"), "--archs", "llava", "--presets", "tiny", "--groups", "2",
             "--questions", "3", "--prompts", "1", "--candidates", "2", "--max-new-tokens", "3", "--repeats", "2"]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    figures = json.loads((tmp_path / "figures.json").read_text())
    [labeling] = figures["labeling"]
    assert labeling["claims"] == 6 and labeling["max_abs_probability_difference"] < 1e-4
    assert labeling["verdict_agreement"] == 1.0 and labeling["image_tokens"] == 16
    assert set(labeling["claims_per_second"]) == {"reference", "labeler", "lower_bound"}
    assert labeling["repeats"] == 2 and set(labeling["speedup_vs_reference"]) == {"best", "median"}
    [sampling] = figures["sampling"]
    assert sampling["candidates_per_prompt"] == 2 and min(sampling["speedup_batched_vs_separate"].values()) > 0
