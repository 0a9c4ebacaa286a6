"""The examples and benchmarks of the trainer and the scorer, run as scripts with small arguments; the Best-of-N
example (which builds the built-in ShapesWorld policy, then trains it with `RLAIFVDPOTrainer`) and the demo recipe
also with every FutureWarning and DeprecationWarning turned into an error: the project calls transformers and TRL by
their current names."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out


ROOT = Path(__file__).parents[1]
STRICT = ("-W", "error::FutureWarning", "-W", "error::DeprecationWarning")


def run_script(script: str, *args: str, cwd: Path, python_options: tuple[str, ...] = ()) -> str:
    env = {
        **os.environ,  # keeps the loopback Hub endpoint of the test session
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, *python_options, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout


def test_best_of_n_example_trains_a_policy_and_picks_the_highest_reward(tmp_path):
    run_script(
        "examples/best_of_n.py",
        *("--output_dir", "models", "--output_json", "report.json", "--num_prompts", "2", "--num_candidates", "3"),
        *("--sft_steps", "5", "--dpo_steps", "2", "--max_new_tokens", "8"),
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "models" / "policy" / "model.safetensors").exists()
    assert len(report["picks"]) == 2
    for pick in report["picks"]:
        assert len(pick["candidates"]) == len(pick["scores"]) == 3
        best = max(range(3), key=lambda i: pick["scores"][i])
        assert pick["best_of_n"] == pick["candidates"][best]
    assert set(report["summary"]) == {"random", "best_of_n", "best_of_n_unnormalized"}


# Each script with small arguments, and what its run leaves.
STRICT_RUNS = {
    "examples/best_of_n.py": (
        ("--output_dir", "models", "--num_prompts", "1", "--num_candidates", "2", "--max_new_tokens", "4",
         "--sft_steps", "2", "--dpo_steps", "1"),
        "models/policy/model.safetensors",
    ),
    "recipes/iterative_dpo.py": (
        ("--config", str(ROOT / "recipes/configs/tiny_cpu.yaml"), "--output_dir", "run", "--num_iterations", "1",
         "--prompts_per_iteration", "8", "--shard_size", "8", "--num_candidates", "2", "--evaluation_prompts", "4",
         "--max_new_tokens", "12", "--evaluation_max_new_tokens", "12", "--num_train_epochs", "1"),
        "run/models/iteration-1",
    ),
}  # fmt: skip


@pytest.mark.parametrize("script", STRICT_RUNS)
def test_script_raises_no_deprecation_warning(script, tmp_path):
    arguments, made = STRICT_RUNS[script]
    run_script(script, *arguments, cwd=tmp_path, python_options=STRICT)
    assert (tmp_path / made).exists()


def test_grpo_example_trains_with_the_scorer_as_reward(tmp_path):
    stdout = run_script(
        "examples/grpo_with_rlaifv_reward.py",
        *("--output_dir", "grpo", "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--max_steps", "2"),
        *("--per_device_train_batch_size", "2", "--num_generations", "2", "--max_completion_length", "8"),
        *("--logging_steps", "1", "--num_prompts", "4", "--save_strategy", "no"),
        cwd=tmp_path,
    )
    assert "step 1: reward" in stdout and "step 2: reward" in stdout


def test_trainer_overhead_benchmark_writes_its_figures(tmp_path):
    run_script(
        "benchmarks/trainer_overhead.py",
        *(
            "--preset",
            "tiny",
            "--batch-size",
            "2",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--json",
            "o.json",
        ),
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "o.json").read_text())
    assert set(report["step_seconds_median"]) == {"dpo", "rlaifv", "rlaifv_precomputed"}
    assert report["rlaifv_over_dpo"]["median"] > 0 and report["precomputed_speedup"]["median"] > 0
    assert isinstance(report["rlaifv_over_dpo"]["met"], bool)


def test_best_of_n_benchmark_writes_its_figures(tmp_path):
    run_script(
        "benchmarks/best_of_n.py",
        *("--preset", "tiny", "--n", "3", "--prompts", "2", "--rounds", "1", "--json", "b.json"),
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["setup"]["n"] == 3 and report["speedup"]["median"] > 0
    assert report["max_score_difference"] < 1e-4


def test_cpu_dtype_benchmark_writes_its_figures(tmp_path):
    from rlaifv_trl.trainer.rlaifv_dpo_config import cpu_has_native_bf16

    args = ["--preset", "tiny", "--batch-size", "2", "--steps", "2", "--warmup", "0", "--rounds", "1"]
    run_script("benchmarks/cpu_dtype.py", *args, "--json", "d.json", cwd=tmp_path)
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["native_bf16"] == report["default_bf16"] == cpu_has_native_bf16() and report["cpu"]
    assert all(seconds > 0 for seconds in report["step_seconds_median"].values())
    assert report["bf16_over_float32"]["median"] > 0
