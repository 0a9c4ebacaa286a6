"""The iterative recipe end to end: two iterations on a tiny VLM, pushed to the loopback Hub, killed and resumed."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from datasets import Image, List, load_dataset
from huggingface_hub import DatasetCard, HfApi, ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

from rlaifv_trl import load_preference_dataset
from rlaifv_trl.cards import public_name
from rlaifv_trl.manifest import MANIFEST_FILE
from rlaifv_trl.run_lock import RunLock
from support.recipe_process import finish, run_recipe_process


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out


ROOT = Path(__file__).parents[1]
SMALL = ["--num_candidates", "4", "--max_new_tokens", "16", "--shard_size", "4"]


def recipe_args(base: Path, output_dir: Path, *extra: str) -> list[str]:
    """The tiny CPU config, shrunk: 2 iterations of 12 prompts, 4 candidates each, on a tiny model."""
    return [
        *("--config", str(ROOT / "recipes/configs/tiny_cpu.yaml")),
        *("--model_name_or_path", str(base), "--output_dir", str(output_dir)),
        *("--num_iterations", "2", "--prompts_per_iteration", "12", "--evaluation_prompts", "8"),
        *SMALL, "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def recipe_module():
    spec = importlib.util.spec_from_file_location("iterative_dpo", ROOT / "recipes/iterative_dpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_recipe(argv: list[str]):
    """`python recipes/iterative_dpo.py ARGV`, in this process; returns the run summary."""
    module = recipe_module()
    return module.main(*module.make_parser().parse_args_and_config(argv))


def done(run: Path) -> dict[str, dict]:
    """The finished stages of a run, per iteration: {"1": {"train": result, ...}, ...}."""
    stages: dict[str, dict] = {}
    for key, result in json.loads((run / MANIFEST_FILE).read_text())["done"].items():
        iteration, stage = key.split("/")
        stages.setdefault(iteration.split("-")[1], {})[stage] = result
    return stages


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory, tiny_vlm_dir, hub, one_torch_thread):
    """One full two-iteration run of `recipes/iterative_dpo.py`, pushing to the loopback Hub."""
    root = tmp_path_factory.mktemp("recipe")
    dataset_repo, model_repo = f"{hub.user}/recipe-prefs", f"{hub.user}/recipe-policy"
    run_recipe(
        recipe_args(tiny_vlm_dir("llava"), root / "run", "--dataset_repo", dataset_repo, "--model_repo", model_repo)
    )
    return root / "run", dataset_repo, model_repo, done(root / "run")


def test_every_stage_of_both_iterations_is_recorded(pushed_run):
    run, _, _, state = pushed_run
    assert set(state["0"]) == {"evaluate"}  # the base policy
    for k in (1, 2):
        assert {"feedback", "reference_log_probs", "push_dataset"} <= set(state[str(k)])
        assert {"train", "evaluate", "model_card", "push_model"} <= set(state[str(k)])
    summary = (run / "summary.md").read_text()
    assert "| base |" in summary and "| iteration 1 |" in summary and "| iteration 2 |" in summary


def test_both_dataset_configs_load_back_from_the_hub(pushed_run):
    run, dataset_repo, model_repo, state = pushed_run
    for k in (1, 2):
        pushed = load_dataset(dataset_repo, f"iteration-{k}", split="train")
        assert len(pushed) == state[str(k)]["feedback"]["num_pairs"] > 0
        assert set(pushed["iteration"]) == {k}
        assert set(pushed["policy_model"]) == {state[str(k)]["feedback"]["policy"]}
        assert {"prompt", "images", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps"} <= set(
            pushed.column_names
        )
        local = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        assert pushed["chosen"] == local["chosen"] and pushed["ref_chosen_logps"] == local["ref_chosen_logps"]
        rankings = load_preference_dataset(dataset_repo, name=f"iteration-{k}-rankings")
        assert len(rankings) == state[str(k)]["feedback"]["num_prompts"]
        assert (
            rankings["ranking"]
            == load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}-rankings")["ranking"]
        )
    assert state["2"]["feedback"]["policy"] == f"{model_repo}@iteration-1"  # sampled from the policy of iteration 1


def test_the_dataset_card_has_each_iterations_numbers(pushed_run, hub):
    run, dataset_repo, _, state = pushed_run
    card = DatasetCard.load(dataset_repo, repo_type="dataset")
    configs = ["iteration-1", "iteration-1-rankings", "iteration-2", "iteration-2-rankings"]
    assert [c["config_name"] for c in card.data.configs] == configs
    for k in (1, 2):
        stats = state[str(k)]["feedback"]
        rate = 100 * stats["num_rejected_claims"] / stats["num_claims"]
        row = (
            f"| `iteration-{k}` | {stats['policy']} | {stats['labeler']} | {stats['num_prompts']} | "
            f"{stats['num_candidates']} | {stats['num_claims']} | {rate:.1f}% | {stats['num_pairs']} |"
        )
        assert row in card.text
    assert f'load_dataset("{dataset_repo}", "iteration-2", split="train")' in card.text
    assert str(run) not in card.text and "/tmp/" not in card.text and hub.token not in str(card)


def test_the_model_cards_have_the_training_settings_and_metrics(pushed_run, hub):
    run, dataset_repo, model_repo, state = pushed_run
    card = ModelCard.load(model_repo)  # main = the latest iteration
    chair = state["2"]["evaluate"]
    assert 'revision="iteration-2"' in card.text and f"the `iteration-2` config of [{dataset_repo}]" in card.text
    assert f"| chair_response | {chair['chair_response']:.4g} |" in card.text
    assert f"| train_loss | {round(state['2']['train']['train_loss'], 4)} |" in card.text
    assert "| lr_scheduler_type | cosine |" in card.text
    assert "| learning_rate | 2e-05 |" in card.text and "| beta | 0.1 |" in card.text  # from tiny_cpu.yaml
    assert "/tmp/" not in card.text and hub.token not in card.text
    files = HfApi().list_repo_files(model_repo, revision="iteration-1")
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_the_model_cards_best_of_n_snippet_runs(pushed_run):
    _, _, model_repo, _ = pushed_run
    card = ModelCard.load(model_repo)  # main = iteration-2
    snippet = next(block for block in card.text.split("```python")[1:] if "LengthNormalizedRewardScorer" in block)
    from rlaifv_testbed import ShapesWorld

    scene = ShapesWorld().scene(3)
    candidates = [scene.description(), scene.description() + " There is a red circle.", "There is a blue square."]
    namespace = {"image": scene.render(), "candidates": candidates}
    exec(snippet.split("```")[0], namespace)
    scorer = namespace["scorer"]  # configured from implicit_reward.json: reference = the iteration-1 branch
    reference = AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1").state_dict()
    assert all(torch.equal(reference[name], value) for name, value in scorer.ref_model.state_dict().items())
    assert (scorer.beta, scorer.length_normalize, scorer.max_length) == (0.1, True, 256)  # tiny_cpu.yaml
    assert namespace["result"].best in candidates and len(namespace["result"].scores) == 3


def test_the_pushed_models_load_through_the_auto_classes(pushed_run):
    run, _, model_repo, _ = pushed_run
    refs = {branch.name for branch in HfApi().list_repo_refs(model_repo).branches}
    assert refs == {"main", "iteration-1", "iteration-2"}
    model = AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1")
    local = AutoModelForImageTextToText.from_pretrained(run / "models" / "iteration-1").state_dict()
    assert all(torch.equal(local[name], tensor) for name, tensor in model.state_dict().items())
    processor = AutoProcessor.from_pretrained(model_repo, revision="iteration-1")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        add_generation_prompt=True,
    )
    from rlaifv_testbed import ShapesWorld

    inputs = processor(images=[ShapesWorld().scene(7).render()], text=[text], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_iterations_train_on_their_own_policy(pushed_run):
    run, _, _, _ = pushed_run
    tensors = [load_file(run / "models" / f"iteration-{k}" / "model.safetensors") for k in (1, 2)]
    assert any(not torch.equal(tensors[0][name], tensors[1][name]) for name in tensors[0])


def test_plain_trl_dpo_trainer_trains_on_the_pushed_data(pushed_run, tmp_path):
    _, dataset_repo, model_repo, _ = pushed_run
    dataset = load_dataset(dataset_repo, "iteration-1", split="train")
    model = AutoModelForImageTextToText.from_pretrained(model_repo)
    before = {name: value.clone() for name, value in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, use_cpu=True,
        bf16=False, report_to="none", save_strategy="no", activation_checkpointing=False, max_length=256,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(model_repo)
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[name], value) for name, value in trainer.model.named_parameters())


# ---------------------------------------------------------------------------- killed and resumed


def final_artifacts(run: Path) -> dict:
    """What a run leaves: models, pushed-layout datasets and cards, and the recorded results."""
    artifacts = {"state": done(run)}
    for k in (1, 2):
        artifacts[f"model-{k}"] = load_file(run / "models" / f"iteration-{k}" / "model.safetensors")
        artifacts[f"card-{k}"] = (run / "models" / f"iteration-{k}" / "README.md").read_text().replace(run.name, "RUN")
    for k in (1, 2):
        dataset = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        artifacts[f"data-{k}"] = dataset.cast_column("images", List(Image(decode=False))).to_list()
    artifacts["dataset card"] = (run / "dataset" / "README.md").read_text().replace(run.name, "RUN")
    return artifacts


@pytest.fixture(scope="module")
def uninterrupted(tiny_vlm_dir, tmp_path_factory):
    """The artifacts of a two-iteration run in its own process, never interrupted, the run folder and its log."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    log = finish(run_recipe_process(recipe_args(tiny_vlm_dir("llava"), run)))
    return final_artifacts(run), run, log


def assert_same_artifacts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("model"):
            assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
        elif key.startswith("data"):
            assert len(a[key]) == len(b[key]), key
            for row_a, row_b in zip(a[key], b[key]):
                assert row_a == row_b, {
                    k: (row_a[k], row_b[k]) for k in row_a if row_a[k] != row_b[k] and k != "images"
                }
        else:
            assert a[key] == b[key], key


def test_the_log_the_folders_the_data_the_cards_and_the_summary_number_iterations_alike(uninterrupted, tiny_vlm_dir):
    """Iteration k samples from the policy of iteration k - 1 (the base model, iteration 0, for k = 1) and trains it
    into the policy of iteration k: every place that names an iteration says k."""
    _, run, log = uninterrupted
    stages = done(run)
    steps = ("feedback", "reference_log_probs", "train", "evaluate", "model_card")
    started = re.findall(r"Iteration (\d+): (\w+)$", log, flags=re.MULTILINE)
    assert started == [("0", "evaluate")] + [(str(k), step) for k in (1, 2) for step in steps]
    assert {k: set(stages[k]) for k in stages} == {"0": {"evaluate"}, "1": set(steps), "2": set(steps)}
    for parent in ("feedback", "training", "models"):
        assert sorted(folder.name for folder in (run / parent).iterdir()) == ["iteration-1", "iteration-2"], parent
    configs = [config["config_name"] for config in DatasetCard.load(str(run / "dataset" / "README.md")).data.configs]
    assert configs == ["iteration-1", "iteration-1-rankings", "iteration-2", "iteration-2-rankings"]
    summary = (run / "summary.md").read_text()
    assert "| base |" in summary and "| iteration 3 |" not in summary
    for k, sampled_from in ((1, public_name(tiny_vlm_dir("llava"))), (2, "local: iteration-1")):
        pairs = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        assert set(pairs["iteration"]) == {k} and set(pairs["policy_model"]) == {sampled_from}
        assert stages[str(k)]["feedback"]["policy"] == sampled_from
        num_pairs = stages[str(k)]["reference_log_probs"]["num_pairs"]
        assert len(pairs) == num_pairs > 0
        assert re.search(rf"^\| iteration {k} \|.* \| {num_pairs} \|$", summary, flags=re.MULTILINE), summary
        assert f"policy of iteration {k}: {run / 'models' / f'iteration-{k}'}" in log
        card = (run / "models" / f"iteration-{k}" / "README.md").read_text()
        assert f"iteration {k} of iterative DPO" in card and f"the `iteration-{k}` preference data" in card
        assert f"| `iteration-{k}` | {sampled_from} |" in (run / "dataset" / "README.md").read_text()


def test_a_killed_run_resumes_to_the_same_artifacts(uninterrupted, tmp_path, tiny_vlm_dir):
    base, run = tiny_vlm_dir("llava"), tmp_path / "run"
    killed = run_recipe_process(recipe_args(base, run))
    shards = run / "feedback" / "iteration-2" / "candidates"
    deadline = time.monotonic() + 600
    while not (shards.is_dir() and any(shards.iterdir())) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before iteration 2's sampling started"
    os.killpg(killed.pid, signal.SIGKILL)  # mid-iteration 2: sampling has written a shard
    killed.wait()
    state = done(run)
    assert "evaluate" in state["1"] and "2" not in state  # no stage of iteration 2 finished
    trained_before = (run / "models" / "iteration-1" / "model.safetensors").stat().st_mtime_ns

    log = finish(run_recipe_process(recipe_args(base, run)))
    assert "Iteration 1: feedback already done" in log and "Iteration 1: train already done" in log
    assert "Iteration 2: feedback" in log
    assert (run / "models" / "iteration-1" / "model.safetensors").stat().st_mtime_ns == trained_before
    assert_same_artifacts(uninterrupted[0], final_artifacts(run))


def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(
    uninterrupted, tmp_path, tiny_vlm_dir
):
    base, run = tiny_vlm_dir("llava"), tmp_path / "run"
    script = [str(ROOT / "tests" / "scripts" / "kill_while_saving.py")]
    killed = run_recipe_process(recipe_args(base, run), launcher=script)
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = sorted((run / "training" / "iteration-1").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    torn = checkpoints[-1]
    assert len(checkpoints) >= 2 and (torn / "optimizer.pt").is_file() and not (torn / "trainer_state.json").exists()
    # what the atomic writers of a killed run leave behind is swept too
    for leftover in (run / "dataset" / ".iteration-1.dead.rlaifv-tmp", run / ".manifest.json.dead.rlaifv-tmp"):
        leftover.mkdir() if leftover.name.startswith(".iteration") else leftover.write_text("{")

    log = finish(run_recipe_process(recipe_args(base, run)))
    assert f"Removing {torn}" in log and (torn / "trainer_state.json").is_file()  # saved again, whole
    assert f"Resuming the training of iteration 1 from {checkpoints[-2]}" in log
    assert not list(run.rglob("*.rlaifv-tmp"))
    assert_same_artifacts(uninterrupted[0], final_artifacts(run))  # model cards and recorded results included


def test_a_rerun_with_other_settings_is_refused_naming_them(tmp_path, tiny_vlm_dir):
    argv = recipe_args(tiny_vlm_dir("llava"), tmp_path / "run", "--num_iterations", "1", "--evaluation", "none")
    run_recipe(argv)
    with pytest.raises(ValueError, match=r"changed: feedback\.num_candidates, recipe\.prompts_per_iteration"):
        run_recipe([*argv, "--num_candidates", "3", "--prompts_per_iteration", "6"])
    # Settings that do not change results may change: logging, pushing, batch sizes that change rounding only
    summary = run_recipe([*argv, "--logging_steps", "1", "--labeler_batch_size", "7", "--hub_retry_attempts", "2"])
    assert summary.policies[1] == str(tmp_path / "run" / "models" / "iteration-1")


def file_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under `folder`, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_a_finished_run_continues_with_more_iterations_and_keeps_the_done_ones(tmp_path, tiny_vlm_dir, one_thread):
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1")
    run_recipe(argv)
    before = file_hashes(run)
    run_recipe([*argv, "--num_iterations", "2"])
    after = file_hashes(run)
    updated = {"manifest.json", "summary.md", "dataset/README.md"}  # they list every iteration
    assert {path: after.get(path) for path in before if path not in updated} == {
        path: digest for path, digest in before.items() if path not in updated
    }
    state = done(run)
    assert {"feedback", "reference_log_probs"} <= set(state["1"]) and {"train", "evaluate"} <= set(state["2"])
    assert (run / "models" / "iteration-2" / "model.safetensors").is_file()
    summary = (run / "summary.md").read_text()
    assert "| iteration 1 |" in summary and "| iteration 2 |" in summary
    card = DatasetCard.load(str(run / "dataset" / "README.md"))
    assert {"iteration-1", "iteration-2"} <= {config["config_name"] for config in card.data.configs}
    with pytest.raises(ValueError, match="holds a run of 2 iterations: num_iterations may grow"):
        run_recipe(argv)  # fewer iterations than the folder holds


# ---------------------------------------------------------------------------- configs, Hub trouble, published data


def push_results(run: Path) -> dict[str, dict]:
    """The recorded results of a run's push stages, by manifest key ("iteration-k/push_model": {...})."""
    recorded = json.loads((run / MANIFEST_FILE).read_text())["done"]
    return {key: result for key, result in recorded.items() if key.rpartition("/")[2].startswith("push_")}


def assert_pushes_recorded(run: Path, dataset_repo: str | None, model_repo: str | None) -> None:
    """The manifest's push stages hold the commits now on the Hub, and summary.md says they were pushed."""
    api, results = HfApi(), push_results(run)
    branches = (
        {branch.name: branch.target_commit for branch in api.list_repo_refs(model_repo).branches} if model_repo else {}
    )
    assert results
    for key, result in results.items():
        iteration, _, stage = key.rpartition("/")
        if stage == "push_dataset":
            assert result == {"commit": api.dataset_info(dataset_repo).sha, "repo": dataset_repo}
        else:
            assert result == {"commit": branches[iteration], "repo": model_repo}
    summary = (run / "summary.md").read_text()
    assert "NOT pushed" not in summary and "pushed to the Hub: " in summary
    pushed = next(line for line in summary.splitlines() if line.startswith("pushed to the Hub: "))
    assert all(repo in pushed for repo in (dataset_repo, model_repo) if repo)


def test_a_push_that_keeps_failing_leaves_the_run_going_and_can_be_done_later(
    tmp_path, tiny_vlm_dir, hub, one_thread, capsys
):
    from rlaifv_trl.cli import main as cli

    model_repo = f"{hub.user}/flaky-{tmp_path.name[-8:]}"
    hub.server.hub.inject_failures(model_repo.split("/")[1], status=503, count=1000, method="POST")
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1", "--model_repo", model_repo)
    summary = run_recipe([*argv, "--hub_failure", "continue", "--hub_retry_initial_delay", "0.01"])
    result = done(run)["1"]["push_model"]
    assert "503" in result["failed"] and f"rlaifv-trl push {run}" in result["push_later"]
    assert "\n" not in result["failed"] and "Injected failure" not in result["failed"]  # one line: the first
    assert (run / "models" / "iteration-1" / "model.safetensors").is_file()  # nothing lost
    for text in (summary.artifacts(), (run / "summary.md").read_text()):
        assert f"NOT pushed: {model_repo}@iteration-1" in text and f"rlaifv-trl push {run} --model-repo" in text
        assert "pushed to the Hub" not in text
        (failed,) = [line for line in text.splitlines() if line.startswith("NOT pushed")]
        assert f"push later with: rlaifv-trl push {run} --model-repo {model_repo}" in failed  # the entry in one line
    hub.server.hub.clear_failures()
    with RunLock(run):  # a run holds the folder: nothing is pushed, nothing rewritten
        assert cli(["push", str(run), "--model-repo", model_repo]) == 1
    assert f"{run} is in use by process {os.getpid()}" in capsys.readouterr().err
    assert done(run)["1"]["push_model"] == result
    assert {branch.name for branch in HfApi().list_repo_refs(model_repo).branches} == {"main"}
    assert cli(["push", str(run), "--model-repo", model_repo]) == 0
    assert AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1") is not None
    # only trained policies are pushed: no copy of the base
    assert {branch.name for branch in HfApi().list_repo_refs(model_repo).branches} == {"main", "iteration-1"}
    assert_pushes_recorded(run, None, model_repo)


def test_a_hub_down_at_the_start_stops_the_run_in_one_line(down_hub_url, tmp_path, tiny_vlm_dir, hub):
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--dataset_repo", f"{hub.user}/never-made")
    process = run_recipe_process(
        [*argv, "--hub_retry_initial_delay", "0.01"], offline=False, hub_endpoint=down_hub_url
    )
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1, output[-4000:]
    assert "Traceback" not in output and "httpx" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"iterative_dpo.py: The Hub at {down_hub_url} is unavailable (ConnectError"), last
    assert "HF_ENDPOINT" in last and "hub_failure: continue" in last
    assert not (run / "feedback").exists()


def test_a_hub_down_at_the_start_with_hub_failure_continue_runs_on_and_pushes_later(
    down_hub_url, tmp_path, tiny_vlm_dir, hub
):
    from rlaifv_trl.cli import main as cli

    run, name = tmp_path / "run", tmp_path.name[-8:]
    dataset_repo, model_repo = f"{hub.user}/down-data-{name}", f"{hub.user}/down-model-{name}"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1", "--evaluation", "none")
    argv += ["--dataset_repo", dataset_repo, "--model_repo", model_repo]
    argv += ["--hub_failure", "continue", "--hub_retry_initial_delay", "0.01"]
    log = finish(run_recipe_process(argv, offline=False, hub_endpoint=down_hub_url))
    assert "Traceback" not in log
    (warning,) = [line for line in log.splitlines() if " WARNING " in line and "unavailable" in line]
    assert f"The Hub at {down_hub_url} is unavailable (ConnectError" in warning and "hub_failure: continue" in warning
    failures = push_results(run)
    assert {key.rpartition("/")[2] for key in failures} == {"push_dataset", "push_model"}
    hint = f"rlaifv-trl push {run} --dataset-repo {dataset_repo} --model-repo {model_repo}"
    for result in failures.values():
        assert result["failed"].startswith("ConnectError") and "\n" not in result["failed"]
        assert result["push_later"] == hint
    lines = (run / "summary.md").read_text().splitlines()
    assert len([line for line in lines if line.startswith("NOT pushed") and line.endswith(hint)]) == 2

    assert cli(["push", str(run), "--dataset-repo", dataset_repo, "--model-repo", model_repo]) == 0  # the Hub is up
    assert_pushes_recorded(run, dataset_repo, model_repo)


@pytest.mark.parametrize("hub_failure", ["stop", "continue"])  # a wrong token is not a Hub that is down
def test_a_wrong_token_stops_the_run_before_any_work(tmp_path, tiny_vlm_dir, hub, monkeypatch, hub_failure):
    from rlaifv_trl.hub import HubAccessError

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    argv = recipe_args(tiny_vlm_dir("llava"), tmp_path / "run", "--dataset_repo", f"{hub.user}/never-made")
    with pytest.raises(HubAccessError, match="rejected the token"):
        run_recipe([*argv, "--hub_retry_initial_delay", "0.01", "--hub_failure", hub_failure])
    assert not (tmp_path / "run" / "feedback").exists()


def test_published_pairs_seed_the_first_iteration_and_mix_into_every_iteration(
    tmp_path, tiny_vlm_dir, hub, one_thread
):
    from test_published_datasets import openbmb_dataset

    published_repo = f"{hub.user}/openbmb-like-{tmp_path.name[-8:]}"
    openbmb_dataset(6).push_to_hub(published_repo)
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--seed_preference_dataset", published_repo)
    run_recipe([*argv, "--mix_preference_dataset", published_repo, "--mix_pairs_per_iteration", "2"])
    state = done(run)
    seeded = load_preference_dataset(str(run / "dataset"), name="iteration-1")
    assert state["1"]["feedback"]["labeler"] == "published" and len(seeded) == 6 + 2
    published_rejected = {row[0]["content"][0]["text"] for row in seeded["rejected"]}
    assert all(text.endswith("There is a red square.") for text in published_rejected)
    mixed = load_preference_dataset(str(run / "dataset"), name="iteration-2")
    generated = state["2"]["feedback"]["num_pairs"] - 2
    assert len(mixed) == generated + 2 and generated > 0
    tails = [row[0]["content"][0]["text"].endswith("There is a red square.") for row in mixed["rejected"]]
    assert sum(tails[generated:]) == 2  # the mixed-in published pairs, after the generated ones


def test_best_checkpoint_selection_keeps_the_least_hallucinating_checkpoint(tmp_path, tiny_vlm_dir, one_thread):
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1", "--checkpoint_selection", "best")
    run_recipe([*argv, "--metric_for_best_model", "chair_response", "--greater_is_better", "false"])
    checkpoints = sorted((run / "training" / "iteration-1").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    trainer_state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())  # the last holds every evaluation
    evaluations = [entry for entry in trainer_state["log_history"] if "eval_chair_response" in entry]
    assert len(evaluations) >= 2
    best = min(evaluations, key=lambda entry: entry["eval_chair_response"])
    assert trainer_state["best_metric"] == best["eval_chair_response"]
    best_checkpoint = run / "training" / "iteration-1" / Path(trainer_state["best_model_checkpoint"]).name
    kept = AutoModelForImageTextToText.from_pretrained(run / "models" / "iteration-1").state_dict()
    chosen = AutoModelForImageTextToText.from_pretrained(best_checkpoint).state_dict()
    assert all(torch.equal(kept[name], value) for name, value in chosen.items())


def test_two_processes_make_the_same_preference_data_as_one(tmp_path, tiny_vlm_dir):
    base = tiny_vlm_dir("llava")
    argv = lambda run: recipe_args(base, tmp_path / run, "--num_iterations", "1")  # noqa: E731
    finish(run_recipe_process(argv("one")))
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    log = finish(run_recipe_process(argv("two"), launcher=torchrun))
    assert log.count("Iteration 1: feedback") == 2  # both processes sampled and labeled their share
    one = load_preference_dataset(str(tmp_path / "one" / "dataset"), name="iteration-1")
    two = load_preference_dataset(str(tmp_path / "two" / "dataset"), name="iteration-1")
    references = ["ref_chosen_logps", "ref_rejected_logps"]  # batched differently: equal up to float rounding
    columns = [c for c in one.column_names if c != "images" and c not in references]
    assert one.select_columns(columns).to_list() == two.select_columns(columns).to_list()
    for column in references:
        torch.testing.assert_close(torch.tensor(one[column]), torch.tensor(two[column]), atol=1e-3, rtol=0)
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "two" / "models" / "iteration-1") is not None


def test_every_file_of_a_run_follows_the_umask(pushed_run):
    run, _, _, _ = pushed_run
    umask = os.umask(0)
    os.umask(umask)
    modes = {path: path.stat().st_mode & 0o777 for path in [run, *run.rglob("*")]}
    expected = {path: (0o777 if path.is_dir() else 0o666) & ~umask for path in modes}
    assert {str(p.relative_to(run)): oct(m) for p, m in modes.items() if m != expected[p]} == {}


def test_a_local_run_scores_locally_and_configures_the_scorer_once_pushed(uninterrupted, hub, tmp_path):
    from rlaifv_trl import LengthNormalizedRewardScorer
    from rlaifv_trl.cli import main as cli

    run = tmp_path / "run"
    shutil.copytree(uninterrupted[1], run)
    policy, reference = (run / "models" / f"iteration-{k}" for k in (2, 1))
    local = LengthNormalizedRewardScorer.from_pretrained(policy)  # reference: the run's previous iteration
    expected = AutoModelForImageTextToText.from_pretrained(reference).state_dict()
    assert all(torch.equal(expected[name], value) for name, value in local.ref_model.state_dict().items())
    assert "local/run" in (policy / "README.md").read_text()  # no Hub repository named yet

    model_repo, dataset_repo = f"{hub.user}/pushed-later-model", f"{hub.user}/pushed-later-data"
    assert cli(["push", str(run), "--model-repo", model_repo, "--dataset-repo", dataset_repo]) == 0
    assert {branch.name for branch in HfApi().list_repo_refs(model_repo).branches} == {
        "main",
        "iteration-1",
        "iteration-2",
    }
    scorer = LengthNormalizedRewardScorer.from_pretrained(model_repo, revision="iteration-2")
    pushed_reference = AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1").state_dict()
    assert all(torch.equal(pushed_reference[name], value) for name, value in scorer.ref_model.state_dict().items())
    assert scorer.beta == 0.1 and scorer.max_length == 256
    card = ModelCard.load(model_repo)  # main = iteration-2
    assert f'from_pretrained("{model_repo}", revision="iteration-2")' in card.text and "local/" not in card.text
    assert "local/" not in DatasetCard.load(dataset_repo, repo_type="dataset").text
