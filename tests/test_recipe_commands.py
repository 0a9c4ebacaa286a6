"""`rlaifv-trl dpo` and `rlaifv-trl grpo-rank`: the recipes' flags, refused settings answered before launching, and a
real run under `accelerate launch`."""

import json
from pathlib import Path

import pytest

from rlaifv_trl.cli import main
from rlaifv_trl.manifest import MANIFEST_FILE
from support.recipe_process import finish, run_recipe_process


ROOT = Path(__file__).parents[1]
TINY = str(ROOT / "recipes" / "configs" / "tiny_cpu.yaml")
SHARED_FLAGS = ("--prompt_dataset", "--prompts_per_iteration", "--evaluation", "--evaluation_prompts")


@pytest.mark.parametrize(
    "command, own_flags",
    [
        ("dpo", ("--num_iterations", "--dataset_repo", "--hub_failure", "--num_candidates", "--beta")),
        ("grpo-rank", ("--num_rounds", "--oracle", "--rank_advantage", "--num_generations")),
    ],
)
def test_each_recipe_command_lists_the_recipes_flags(command, own_flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: rlaifv-trl {command} ")
    for flag in (*SHARED_FLAGS, *own_flags, "--model_name_or_path", "--output_dir"):
        assert f"{flag} " in shown, flag
    assert ("--dataset_repo" in shown) == (command == "dpo")  # the Hub settings belong to the DPO recipe only


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hub_failure", "retry"], "hub_failure must be one of"),
        (["--evaluation_prompts", "0"], "evaluation_prompts must be at least 1"),
        (["--no_such_setting", "1"], "neither settings nor accelerate launch options: --no_such_setting"),
        (["--cpu", "1"], "neither settings nor accelerate launch options: --cpu 1"),
    ],
)
def test_refused_settings_and_unknown_flags_are_answered_before_launching(flags, message, capsys, tmp_path):
    assert main(["dpo", "--config", TINY, "--output_dir", str(tmp_path / "run"), *flags]) == 2
    said = capsys.readouterr().err
    assert said.startswith("rlaifv-trl dpo: error: ") and message in said
    assert not (tmp_path / "run").exists()


def test_unknown_config_keys_are_refused(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("prompt_dataset: me/prompts\nfeedback:\n  num_candidates: 4\n")  # the old nested form
    assert main(["grpo-rank", "--config", str(config)]) == 2
    assert "unknown keys in the config file: --feedback" in capsys.readouterr().err


SMALL = [
    *("--config", TINY, "--num_iterations", "1", "--prompts_per_iteration", "8", "--shard_size", "8"),
    *("--num_candidates", "2", "--max_new_tokens", "12", "--evaluation_prompts", "4"),
    *("--evaluation_max_new_tokens", "12", "--num_train_epochs", "1", "--disable_tqdm", "true"),
]  # fmt: skip


@pytest.mark.slow  # two interpreters per run, a whole (small) iteration and a failing run: about 30 s
def test_rlaifv_trl_dpo_runs_the_tiny_config_under_accelerate_launch(tmp_path):
    run = tmp_path / "run"
    # accelerate's options go to accelerate launch: passed to the recipe, they would stop it as unknown flags
    process = run_recipe_process(
        ["dpo", "--num_processes", "1", "--mixed_precision", "no", *SMALL, "--output_dir", str(run)],
        command=["-m", "rlaifv_trl.cli"],
    )
    output = finish(process)
    done = json.loads((run / MANIFEST_FILE).read_text())["done"]
    assert {"iteration-0/evaluate", "iteration-1/feedback", "iteration-1/train", "iteration-1/evaluate"} <= set(done)
    assert (run / "models" / "iteration-1" / "model.safetensors").is_file()
    assert "| iteration 1 |" in output and f"policy of iteration 1: {run}/models/iteration-1" in output

    failing = run_recipe_process(
        ["dpo", *SMALL, "--output_dir", str(tmp_path / "failing"), "--evaluation", "nope"],
        command=["-m", "rlaifv_trl.cli"],
    )
    output, _ = failing.communicate(timeout=600)
    assert failing.returncode == 1 and "Unknown evaluator 'nope'" in output  # the recipe's own status and reason
