"""The iterative recipe end to end: two iterations on a tiny VLM, pushed to the loopback Hub, killed and resumed."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
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
from rlaifv_trl.recipe.state import STATE_FILE


ROOT = Path(__file__).parents[1]
FEEDBACK = '{"num_candidates": 4, "temperature": 1.0, "max_new_tokens": 16, "shard_size": 4}'


def recipe_args(base: Path, output_dir: Path, *extra: str) -> list[str]:
    """The tiny CPU config, shrunk: 2 iterations of 12 prompts, 4 candidates each, on a tiny model."""
    return [
        *("--config", str(ROOT / "recipes/configs/tiny_cpu.yaml")),
        *("--model_name_or_path", str(base), "--output_dir", str(output_dir)),
        *("--num_iterations", "2", "--prompts_per_iteration", "12", "--eval_prompts", "8"),
        *("--feedback", FEEDBACK, "--per_device_train_batch_size", "4", "--disable_tqdm", "true"),
        *extra,
    ]


def load_recipe_main():
    spec = importlib.util.spec_from_file_location("iterative_dpo", ROOT / "recipes/iterative_dpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory, tiny_vlm_dir, hub, one_torch_thread):
    """One full two-iteration run of `recipes/iterative_dpo.py`, pushing to the loopback Hub."""
    root = tmp_path_factory.mktemp("recipe")
    dataset_repo, model_repo = f"{hub.user}/recipe-prefs", f"{hub.user}/recipe-policy"
    main = load_recipe_main()
    main(recipe_args(tiny_vlm_dir("llava"), root / "run", "--dataset_repo", dataset_repo, "--model_repo", model_repo))
    state = json.loads((root / "run" / STATE_FILE).read_text())["done"]
    return root / "run", dataset_repo, model_repo, state


def test_every_stage_of_both_iterations_is_recorded(pushed_run):
    run, _, _, state = pushed_run
    for k in (0, 1):
        assert {"feedback", "reference_log_probs", "push_dataset"} <= set(state[str(k)])
    for k in (1, 2):
        assert {"train", "evaluate", "model_card", "push_model"} <= set(state[str(k)])
    summary = (run / "summary.md").read_text()
    assert "| base |" in summary and "| iteration 1 |" in summary and "| iteration 2 |" in summary


def test_both_dataset_configs_load_back_from_the_hub(pushed_run):
    run, dataset_repo, _, state = pushed_run
    for k in (0, 1):
        pushed = load_dataset(dataset_repo, f"iteration-{k}", split="train")
        assert len(pushed) == state[str(k)]["feedback"]["num_pairs"] > 0
        assert {"prompt", "images", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps"} <= set(
            pushed.column_names
        )
        local = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        assert pushed["chosen"] == local["chosen"] and pushed["ref_chosen_logps"] == local["ref_chosen_logps"]


def test_the_dataset_card_has_each_iterations_numbers(pushed_run, hub):
    run, dataset_repo, _, state = pushed_run
    card = DatasetCard.load(dataset_repo, repo_type="dataset")
    assert [c["config_name"] for c in card.data.configs] == ["iteration-0", "iteration-1"]
    for k in (0, 1):
        stats = state[str(k)]["feedback"]
        rate = 100 * stats["num_rejected_claims"] / stats["num_claims"]
        row = (
            f"| `iteration-{k}` | {stats['policy']} | {stats['labeler']} | {stats['num_prompts']} | "
            f"{stats['num_candidates']} | {stats['num_claims']} | {rate:.1f}% | {stats['num_pairs']} |"
        )
        assert row in card.text
    assert f'load_dataset("{dataset_repo}", "iteration-1", split="train")' in card.text
    assert str(run) not in card.text and "/tmp/" not in card.text and hub.token not in str(card)


def test_the_model_cards_have_the_training_settings_and_metrics(pushed_run, hub):
    run, dataset_repo, model_repo, state = pushed_run
    card = ModelCard.load(model_repo)  # main = the latest iteration
    chair = state["2"]["evaluate"]
    assert 'revision="iteration-2"' in card.text and dataset_repo in card.text
    assert f"{round(chair['response_rate'], 4)}" in card.text
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
    from rlaifv_trl.synthetic import ShapesWorld

    scene = ShapesWorld().scene(3)
    candidates = [scene.description(), scene.description() + " There is a red circle.", "There is a blue square."]
    namespace = {"image": scene.render(), "candidates": candidates}
    exec(snippet.split("```")[0], namespace)
    assert namespace["scorer"].ref_model is not None
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
    from rlaifv_trl.synthetic import ShapesWorld

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
        bf16=False, report_to="none", save_strategy="no", gradient_checkpointing=False, max_length=256,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(model_repo)
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[name], value) for name, value in trainer.model.named_parameters())


# ---------------------------------------------------------------------------- killed and resumed


def run_recipe_process(argv: list[str], launcher: list[str] | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # bitwise-reproducible CPU math across processes
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, *(launcher or []), str(ROOT / "recipes/iterative_dpo.py"), *argv],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def final_artifacts(run: Path) -> dict:
    """What a run leaves: models, pushed-layout datasets and cards, and the recorded results."""
    state = json.loads((run / STATE_FILE).read_text())["done"]
    for stages in state.values():
        for key in list(stages.get("train", {})):
            if "runtime" in key or "per_second" in key:
                del stages["train"][key]
    artifacts = {"state": state}
    for k in (1, 2):
        artifacts[f"model-{k}"] = load_file(run / "models" / f"iteration-{k}" / "model.safetensors")
        artifacts[f"card-{k}"] = (run / "models" / f"iteration-{k}" / "README.md").read_text().replace(run.name, "RUN")
    for k in (0, 1):
        dataset = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        artifacts[f"data-{k}"] = dataset.cast_column("images", List(Image(decode=False))).to_list()
    artifacts["dataset card"] = (run / "dataset" / "README.md").read_text().replace(run.name, "RUN")
    return artifacts


def test_a_killed_run_resumes_to_the_same_artifacts(tmp_path, tiny_vlm_dir):
    base = tiny_vlm_dir("llava")
    uninterrupted = run_recipe_process(recipe_args(base, tmp_path / "run-uninterrupted"))
    finish(uninterrupted)

    killed = run_recipe_process(recipe_args(base, tmp_path / "run-killed"))
    shards = tmp_path / "run-killed" / "feedback" / "iteration-1" / "candidates"
    deadline = time.monotonic() + 600
    while not (shards.is_dir() and any(shards.iterdir())) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before iteration 1's sampling started"
    os.killpg(killed.pid, signal.SIGKILL)  # mid-iteration 1: sampling has written a shard
    killed.wait()
    state = json.loads((tmp_path / "run-killed" / STATE_FILE).read_text())["done"]
    assert "train" in state["1"] and "feedback" not in state["1"]
    trained_before = (tmp_path / "run-killed" / "models" / "iteration-1" / "model.safetensors").stat().st_mtime_ns

    log = finish(run_recipe_process(recipe_args(base, tmp_path / "run-killed")))
    assert "Iteration 0: feedback already done" in log and "Iteration 1: train already done" in log
    assert "Iteration 1: feedback" in log
    assert (
        tmp_path / "run-killed" / "models" / "iteration-1" / "model.safetensors"
    ).stat().st_mtime_ns == trained_before

    a, b = final_artifacts(tmp_path / "run-uninterrupted"), final_artifacts(tmp_path / "run-killed")
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


def test_a_rerun_with_other_settings_is_refused(tmp_path, tiny_vlm_dir):
    from rlaifv_trl.recipe.state import RunState

    RunState.open(tmp_path, {"recipe": {"num_iterations": 2}})
    with pytest.raises(ValueError, match="num_iterations"):
        RunState.open(tmp_path, {"recipe": {"num_iterations": 3}})


# ---------------------------------------------------------------------------- configs, Hub trouble, published data


@pytest.mark.parametrize("config", ["tiny_cpu", "llava15_7b", "qwen2_5_vl_7b_lora"])
def test_the_shipped_configs_parse(config):
    from trl import ModelConfig, TrlParser

    from rlaifv_trl import RLAIFVDPOConfig
    from rlaifv_trl.recipe import IterativeDPOArguments

    parser = TrlParser((IterativeDPOArguments, RLAIFVDPOConfig, ModelConfig))
    argv = ["--config", str(ROOT / f"recipes/configs/{config}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    args, training_args, model_args = parser.parse_args_and_config(argv)
    assert training_args.beta == 0.1 and args.feedback_config().min_score_gap == 1.0
    if config == "llava15_7b":  # the paper's settings
        assert model_args.model_name_or_path == "llava-hf/llava-1.5-7b-hf" and args.labeler_model_name_or_path
        assert (args.num_iterations, args.prompts_per_iteration, args.feedback["num_candidates"]) == (4, 4000, 10)
        assert training_args.learning_rate == 5e-7 and training_args.num_train_epochs == 4
        assert args.feedback["splitter_model_name_or_path"] and args.feedback_config().length_balancing
    if config == "qwen2_5_vl_7b_lora":
        assert model_args.use_peft and training_args.learning_rate == 1e-5


def test_a_push_that_keeps_failing_leaves_the_run_going_and_can_be_done_later(tmp_path, tiny_vlm_dir, hub, one_thread):
    from rlaifv_trl.cli import main as cli

    model_repo = f"{hub.user}/flaky-{tmp_path.name[-8:]}"
    hub.server.hub.inject_failures(model_repo.split("/")[1], status=503, count=1000, method="POST")
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1", "--model_repo", model_repo)
    load_recipe_main()([*argv, "--hub_failure", "continue", "--hub_retry_initial_delay", "0.01"])
    result = json.loads((run / STATE_FILE).read_text())["done"]["1"]["push_model"]
    assert result["failed"] and f"rlaifv-trl push {run}" in result["push_later"]
    assert (run / "models" / "iteration-1" / "model.safetensors").is_file()  # nothing lost
    hub.server.hub.clear_failures()
    assert cli(["push", str(run), "--model-repo", model_repo]) == 0
    assert AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1") is not None


def test_a_wrong_token_stops_the_run_before_any_work(tmp_path, tiny_vlm_dir, hub, monkeypatch):
    from rlaifv_trl.hub import HubAccessError

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    argv = recipe_args(tiny_vlm_dir("llava"), tmp_path / "run", "--dataset_repo", f"{hub.user}/never-made")
    with pytest.raises(HubAccessError, match="rejected the token"):
        load_recipe_main()([*argv, "--hub_retry_initial_delay", "0.01"])
    assert not (tmp_path / "run" / "feedback").exists()


def test_published_pairs_seed_iteration_0_and_mix_into_every_iteration(tmp_path, tiny_vlm_dir, hub, one_thread):
    from test_published_datasets import openbmb_dataset

    published_repo = f"{hub.user}/openbmb-like-{tmp_path.name[-8:]}"
    openbmb_dataset(6).push_to_hub(published_repo)
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--seed_preference_dataset", published_repo)
    load_recipe_main()([*argv, "--mix_preference_dataset", published_repo, "--mix_pairs_per_iteration", "2"])
    state = json.loads((run / STATE_FILE).read_text())["done"]
    seeded = load_preference_dataset(str(run / "dataset"), name="iteration-0")
    assert state["0"]["feedback"]["labeler"] == "published" and len(seeded) == 6 + 2
    published_rejected = {row[0]["content"][0]["text"] for row in seeded["rejected"]}
    assert all(text.endswith("There is a red square.") for text in published_rejected)
    mixed = load_preference_dataset(str(run / "dataset"), name="iteration-1")
    generated = state["1"]["feedback"]["num_pairs"] - 2
    assert len(mixed) == generated + 2 and generated > 0
    tails = [row[0]["content"][0]["text"].endswith("There is a red square.") for row in mixed["rejected"]]
    assert sum(tails[generated:]) == 2  # the mixed-in published pairs, after the generated ones


def test_best_checkpoint_selection_keeps_the_least_hallucinating_checkpoint(tmp_path, tiny_vlm_dir, one_thread):
    run = tmp_path / "run"
    argv = recipe_args(tiny_vlm_dir("llava"), run, "--num_iterations", "1", "--checkpoint_selection", "best")
    load_recipe_main()(argv)
    trainer_state = json.loads(
        next((run / "training" / "iteration-1").glob("checkpoint-*/trainer_state.json")).read_text()
    )
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
    assert log.count("Iteration 0: feedback") == 2  # both processes sampled and labeled their share
    one = load_preference_dataset(str(tmp_path / "one" / "dataset"), name="iteration-0")
    two = load_preference_dataset(str(tmp_path / "two" / "dataset"), name="iteration-0")
    references = ["ref_chosen_logps", "ref_rejected_logps"]  # batched differently: equal up to float rounding
    columns = [c for c in one.column_names if c != "images" and c not in references]
    assert one.select_columns(columns).to_list() == two.select_columns(columns).to_list()
    for column in references:
        torch.testing.assert_close(torch.tensor(one[column]), torch.tensor(two[column]), atol=1e-3, rtol=0)
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "two" / "models" / "iteration-1") is not None
