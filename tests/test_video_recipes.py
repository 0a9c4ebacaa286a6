"""The recipes on video prompts: MotionWorld clips and a tiny Qwen2-VL, through the shipped CPU configs."""

import importlib.util
import json
from pathlib import Path

import pytest

from rlaifv_trl import load_preference_dataset, load_ranking_dataset
from rlaifv_trl.manifest import MANIFEST_FILE


ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
MOTION = ("--prompt_dataset", "rlaifv_testbed.motion_data:motionworld_prompts", "--evaluation", "motionworld")


def run_recipe(script: str, argv: list[str]):
    spec = importlib.util.spec_from_file_location(script, ROOT / "recipes" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(*module.make_parser().parse_args_and_config(argv))


def test_iterative_dpo_on_video_prompts(tiny_vlm_dir, tmp_path):
    model = str(tiny_vlm_dir("qwen2_vl"))
    run = tmp_path / "run"
    summary = run_recipe(
        "iterative_dpo",
        [
            *("--config", str(ROOT / "recipes/configs/tiny_cpu.yaml"), "--output_dir", str(run)),
            *("--model_name_or_path", model, "--labeler_model_name_or_path", model, *MOTION),
            *("--num_iterations", "1", "--prompts_per_iteration", "8", "--evaluation_prompts", "4"),
            *("--num_candidates", "4", "--max_new_tokens", "16", "--shard_size", "4"),
            *("--per_device_train_batch_size", "4", "--disable_tqdm", "true"),
        ],
    )
    done = json.loads((run / MANIFEST_FILE).read_text())["done"]
    assert {"iteration-1/feedback", "iteration-1/train", "iteration-1/evaluate"} <= set(done)
    assert "motion_chair_response" in done["iteration-1/evaluate"]
    pairs = load_preference_dataset(str(run / "dataset"), name="iteration-1")
    assert len(pairs) == done["iteration-1/reference_log_probs"]["num_pairs"] > 0
    row = pairs[0]
    assert row["images"] == [] and len(row["videos"]) == 1 and len(row["videos"][0]) == 4  # one clip of 4 frames
    assert row["prompt"][0]["content"][0]["type"] == "video"
    rankings = load_ranking_dataset(str(run / "dataset"), name="iteration-1-rankings")
    assert len(rankings) == 8 and all(len(videos) == 1 for videos in rankings["videos"])
    assert "video prompts" in (run / "dataset" / "README.md").read_text()
    assert "| iteration 1 |" in summary.table()


def test_grpo_rank_on_video_prompts(tiny_vlm_dir, tmp_path):
    model = str(tiny_vlm_dir("qwen2_vl"))
    run = tmp_path / "run"
    summary = run_recipe(
        "grpo_rank",
        [
            *("--config", str(ROOT / "recipes/configs/grpo_rank_tiny_cpu.yaml"), "--output_dir", str(run)),
            *("--model_name_or_path", model, "--oracle_model_name_or_path", model, *MOTION),
            *("--prompts_per_iteration", "4", "--num_generations", "4", "--per_device_train_batch_size", "8"),
            *("--max_completion_length", "12", "--evaluation_prompts", "4", "--disable_tqdm", "true"),
        ],
    )
    done = json.loads((run / MANIFEST_FILE).read_text())["done"]
    assert done["iteration-1/train"]["global_step"] == 2
    assert "motion_chair_response" in done["iteration-1/evaluate"]
    assert "| iteration 1 |" in summary.table()
