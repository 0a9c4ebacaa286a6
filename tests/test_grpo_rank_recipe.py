"""`recipes/grpo_rank.py` end to end with its shipped CPU config, shrunk: train, evaluate, save, resume (also after
real kills)."""

import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from rlaifv_testbed.builtin import cached_builtin
from rlaifv_trl.manifest import MANIFEST_FILE
from support.recipe_process import finish, run_recipe_process


ROOT = Path(__file__).parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def recipe_args(output_dir: Path, *extra: str) -> list[str]:
    """The shipped config with only sizes shrunk: 8 prompts x 4 answers, 2 steps, 8 evaluation scenes."""
    return [
        *("--config", str(ROOT / "recipes/configs/grpo_rank_tiny_cpu.yaml"), "--output_dir", str(output_dir)),
        *("--prompts_per_iteration", "8", "--num_generations", "4", "--per_device_train_batch_size", "16"),
        *("--max_completion_length", "24", "--evaluation_prompts", "8", "--disable_tqdm", "true"),
        *extra,
    ]  # fmt: skip


def run_recipe(argv: list[str]):
    spec = importlib.util.spec_from_file_location("grpo_rank_recipe", ROOT / "recipes/grpo_rank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(*module.make_parser().parse_args_and_config(argv))


def stages(run: Path) -> dict[str, object]:
    return json.loads((run / MANIFEST_FILE).read_text())["done"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpo-rank") / "run"
    summary = run_recipe(recipe_args(folder))
    return folder, summary


def test_the_recipe_trains_evaluates_and_saves_the_policy(run):
    folder, summary = run
    done = stages(folder)
    assert {"iteration-0/evaluate", "iteration-1/train", "iteration-1/evaluate"} <= set(done)
    assert done["iteration-1/train"]["global_step"] == 2
    assert set(done["iteration-1/evaluate"]) == {"chair_response", "chair_mention", "chair_recall"}
    policy = folder / "models" / "iteration-1"
    AutoModelForImageTextToText.from_pretrained(policy)  # a full model, through the Auto classes
    trained = load_file(policy / "model.safetensors")
    base = load_file(cached_builtin("builtin:shapesworld-llava") / "model.safetensors")
    assert any(not torch.equal(trained[name], base[name]) for name in base if name in trained)
    table = (folder / "summary.md").read_text()
    assert "| base |" in table and "| iteration 1 |" in table
    assert "pairs trained on" not in table
    assert "preference data" not in summary.artifacts()  # GRPO_rank writes no pairs


def test_a_rerun_resumes_with_nothing_left_to_do(run):
    folder, _ = run
    before = stages(folder)
    run_recipe(recipe_args(folder))
    assert stages(folder) == before


def test_a_finished_run_continues_with_more_rounds_and_keeps_the_done_ones(run, tmp_path):
    from test_recipe import file_hashes

    folder = shutil.copytree(run[0], tmp_path / "run")
    before = file_hashes(folder)
    run_recipe(recipe_args(folder, "--num_rounds", "2"))
    after = file_hashes(folder)
    updated = {"manifest.json", "summary.md"}
    assert {path: after.get(path) for path in before if path not in updated} == {
        path: digest for path, digest in before.items() if path not in updated
    }
    assert {"iteration-2/train", "iteration-2/evaluate"} <= set(stages(folder))
    assert "| iteration 2 |" in (folder / "summary.md").read_text()
    with pytest.raises(ValueError, match="holds a run of 2 iterations"):
        run_recipe(recipe_args(folder))


def test_other_settings_in_the_same_folder_are_refused(run):
    folder, _ = run
    with pytest.raises(ValueError, match="settings"):
        run_recipe(recipe_args(folder, "--rank_advantage", "rank_gap"))


def test_the_listwise_oracle_runs_with_its_fallback(tmp_path):
    run_recipe(
        recipe_args(
            tmp_path / "listwise", "--oracle", "listwise", "--oracle_num_permutations", "2", "--max_steps", "1",
            "--evaluation", "none",
        )
    )  # fmt: skip
    assert stages(tmp_path / "listwise")["iteration-1/train"]["global_step"] == 1


def test_unknown_oracle_is_refused():
    with pytest.raises(ValueError, match="oracle must be one of"):
        run_recipe(recipe_args(Path("unused"), "--oracle", "pairwise"))


# -- killed and resumed ----------------------------------------------------------------------------------------------


def two_iterations(output_dir: Path) -> list[str]:
    """Two iterations of 2 steps, a checkpoint after every step, no evaluation."""
    return recipe_args(output_dir, "--num_rounds", "2", "--save_steps", "1", "--evaluation", "none")


def start(output_dir: Path, kill_at: str | None = None) -> subprocess.Popen:
    launcher = [str(ROOT / "tests" / "scripts" / "kill_while_saving.py")] if kill_at else None
    if kill_at:
        os.environ["KILL_AT"] = kill_at  # read by the launcher in the child process
    try:
        return run_recipe_process(two_iterations(output_dir), launcher=launcher, script="recipes/grpo_rank.py")
    finally:
        os.environ.pop("KILL_AT", None)


def model_bytes(run: Path) -> dict[int, bytes]:
    return {k: (run / "models" / f"iteration-{k}" / "model.safetensors").read_bytes() for k in (1, 2)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[int, bytes]:
    run = tmp_path_factory.mktemp("grpo-rank-uninterrupted") / "run"
    finish(start(run))
    models = model_bytes(run)
    assert models[1] != models[2]
    return models


def test_a_run_killed_during_its_second_iteration_resumes_with_its_weights(uninterrupted, tmp_path):
    run = tmp_path / "run"
    killed = start(run)
    checkpoint = run / "training" / "iteration-2" / "checkpoint-1"
    deadline = time.monotonic() + 600
    while not (checkpoint / "trainer_state.json").is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before the second iteration saved a checkpoint"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert "iteration-2/train" not in stages(run) and "iteration-1/train" in stages(run)

    log = finish(start(run))
    assert re.search(
        rf"Resuming the training of iteration \d from {re.escape(str(run))}.*/iteration-2/checkpoint-", log
    )
    assert model_bytes(run) == uninterrupted  # the second iteration resumed its own weights, not the first's


@pytest.mark.parametrize("kill_at", ["rng_state", "after_checkpoint"])
def test_a_run_killed_while_saving_a_checkpoint_resumes_to_the_same_models(kill_at, uninterrupted, tmp_path):
    run = tmp_path / "run"
    killed = start(run, kill_at)
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    last = run / "training" / "iteration-1" / "checkpoint-2"
    assert (last / "trainer_state.json").is_file() == (kill_at == "after_checkpoint")

    log = finish(start(run))
    if kill_at == "rng_state":
        assert f"Removing {last}" in log
    assert model_bytes(run) == uninterrupted
    umask = os.umask(0)
    os.umask(umask)
    for path in [run, *run.rglob("*")]:  # every file written with the umask's modes, checkpoints included
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
