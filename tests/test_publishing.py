"""Run artifacts on disk and on the (loopback) Hub: configs per iteration, cards, model branches, retries."""

import dataclasses
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi, ModelCard
from transformers import AutoModelForImageTextToText

from rlaifv_testbed import ShapesWorld, build_tiny_vlm
from rlaifv_testbed.data import assistant_turn, user_turn
from rlaifv_trl.artifacts import dataset_configs, model_dir, write_iteration_dataset
from rlaifv_trl.cards import (
    DatasetCardInfo,
    IterationStats,
    previous_iterations,
    public_name,
    render_dataset_card,
    render_model_card,
    template_path,
)
from rlaifv_trl.hub import (
    HubAccessError,
    HubPushError,
    HubUnavailableError,
    RetryPolicy,
    check_hub_access,
    push_dataset,
    push_model,
    push_run,
)


FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)


def preference_rows(count: int, start: int = 0):
    from datasets import Dataset

    world = ShapesWorld()
    rows = {"prompt": [], "images": [], "chosen": [], "rejected": [], "prompt_id": [], "chosen_score": []}
    for seed in range(start, start + count):
        scene = world.scene(seed)
        wrong, _ = world.hallucinated_description(scene, random.Random(seed))
        rows["prompt"].append(user_turn("Describe the image."))
        rows["images"].append([scene.render()])
        rows["chosen"].append(assistant_turn(scene.description()))
        rows["rejected"].append(assistant_turn(wrong))
        rows["prompt_id"].append(f"shapes-{seed}")
        rows["chosen_score"].append(0)
    return Dataset.from_dict(rows)


def stats(iteration: int, pairs: int) -> IterationStats:
    return IterationStats(
        iteration=iteration, policy="/tmp/secret-dir/policy", labeler="org/labeler", num_prompts=10, num_candidates=40,
        num_claims=120, num_rejected_claims=30, num_pairs=pairs, chosen_mean_words=12.5, rejected_mean_words=14.0,
    )  # fmt: skip


INFO = DatasetCardInfo(
    splitter="rule-based",
    sampling={"num_candidates": 4, "temperature": 0.7, "top_p": None, "max_new_tokens": 64},
    pairs={"min_score_gap": 1, "pairs_per_prompt": 2, "length_balance": True},
    license="cc-by-4.0",
)


def write_run(root, iterations=(1, 2)):
    """A run folder with one config per iteration and its dataset card."""
    written = {}
    for iteration in iterations:
        written[iteration] = preference_rows(3 + iteration, start=10 * iteration)
        write_iteration_dataset(written[iteration], root, iteration)
    card = render_dataset_card("tester/prefs", [stats(k, 3 + k) for k in iterations], INFO, dataset_configs(root))
    card.save(root / "dataset" / "README.md")
    return written


def assert_same_rows(loaded, expected):
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        assert (
            got["prompt"] == want["prompt"] and got["chosen"] == want["chosen"] and got["rejected"] == want["rejected"]
        )
        assert np.array_equal(np.asarray(got["images"][0]), np.asarray(want["images"][0]))


def test_local_folder_loads_like_a_hub_dataset(tmp_path):
    written = write_run(tmp_path)
    for iteration, rows in written.items():
        assert_same_rows(
            load_dataset(
                str(tmp_path / "dataset"), f"iteration-{iteration}", split="train", cache_dir=str(tmp_path / "cache")
            ),
            rows,
        )


def test_push_dataset_configs_and_card(hub, hub_repo_id, tmp_path):
    written = write_run(tmp_path)
    push_dataset(tmp_path, hub_repo_id, retry=FAST)
    for iteration, rows in written.items():
        assert_same_rows(load_dataset(hub_repo_id, f"iteration-{iteration}", split="train"), rows)
    card = DatasetCard.load(hub_repo_id, repo_type="dataset")
    assert "| `iteration-1` | local: policy | org/labeler | 10 | 40 | 120 | 25.0% | 4 | 12.5 | 14.0 |" in card.text
    assert "/tmp/" not in str(card) and hub.token not in str(card)
    assert [c["config_name"] for c in card.data.configs] == ["iteration-1", "iteration-2"]


def test_adding_an_iteration_updates_the_card_instead_of_overwriting_it(tmp_path):
    write_run(tmp_path, iterations=(1,))
    first = (tmp_path / "dataset" / "README.md").read_text()
    write_iteration_dataset(preference_rows(2), tmp_path, 2)
    card = render_dataset_card("tester/prefs", [stats(2, 7)], INFO, dataset_configs(tmp_path), previous_card=first)
    assert [s.iteration for s in previous_iterations(str(card))] == [1, 2]
    assert "| `iteration-1` |" in card.text and "| `iteration-2` |" in card.text
    assert [c["config_name"] for c in card.data.configs] == ["iteration-1", "iteration-2"]


def test_the_card_states_the_score_of_the_pairs():
    paper = render_dataset_card("tester/prefs", [stats(1, 4)], INFO, [])
    assert "An answer scores minus its rejected claims." in paper.text
    weighted = dataclasses.replace(INFO, pairs={**INFO.pairs, "confirmed_claim_weight": 1.0})
    card = render_dataset_card("tester/prefs", [stats(1, 4)], weighted, [])
    assert "An answer scores minus its rejected claims\n   plus 1.0 times its confirmed claims." in card.text
    assert card.data.to_dict()["rlaifv"]["pairs"]["confirmed_claim_weight"] == 1.0
    assert "confirms at most" not in card.text
    limited = dataclasses.replace(INFO, pairs={**INFO.pairs, "max_confirmed_claim_drop": 0, "max_claim_drop": 1})
    text = render_dataset_card("tester/prefs", [stats(1, 4)], limited, []).text
    assert (
        "when the chosen answer confirms at most 0 claims fewer than the rejected one\n   and names at most 1" in text
    )


def test_model_branch_per_iteration_and_main_is_latest(hub_repo_id, tmp_path):
    for iteration, seed in ((1, 1), (2, 2)):
        folder = build_tiny_vlm(model_dir(tmp_path, iteration), "llava", "tiny", seed=seed)
        render_model_card(
            hub_repo_id, iteration, base_model=str(tmp_path / "base"), dataset_repo="tester/prefs",
            hyperparameters={"beta": 0.1, "learning_rate": 5e-7, "output_dir": str(tmp_path)}, reference_model=hub_repo_id,
            beta=0.1, metrics={"chair_response": 0.25},
        ).save(folder / "README.md")  # fmt: skip
        push_model(folder, hub_repo_id, iteration, update_main=True, retry=FAST)
    refs = {branch.name for branch in HfApi().list_repo_refs(hub_repo_id).branches}
    assert refs == {"main", "iteration-1", "iteration-2"}
    one = AutoModelForImageTextToText.from_pretrained(hub_repo_id, revision="iteration-1")
    latest = AutoModelForImageTextToText.from_pretrained(hub_repo_id)
    two = AutoModelForImageTextToText.from_pretrained(model_dir(tmp_path, 2))
    assert all(torch.equal(a, b) for a, b in zip(latest.state_dict().values(), two.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    card = ModelCard.load(hub_repo_id)
    assert 'revision="iteration-2"' in card.text and "chair_response" in card.text
    assert str(tmp_path) not in card.text and "/tmp/" not in card.text


def test_transient_failures_are_retried(hub, hub_repo_id, tmp_path):
    write_run(tmp_path, iterations=(0,))
    rule = hub.server.hub.inject_failures("/commit/", status=503, count=2)
    push_dataset(tmp_path, hub_repo_id, retry=FAST)
    assert rule.remaining == 0
    assert len(load_dataset(hub_repo_id, "iteration-0", split="train")) == 3


def test_a_push_that_keeps_failing_says_how_to_push_later(hub, hub_repo_id, tmp_path):
    write_run(tmp_path, iterations=(0,))
    hub.server.hub.inject_failures("/commit/", status=503, count=10)
    with pytest.raises(HubPushError, match="rlaifv-trl push .* --dataset-repo " + hub_repo_id):
        push_run(tmp_path, dataset_repo=hub_repo_id, retry=FAST)
    assert (tmp_path / "dataset" / "iteration-0").is_dir()  # nothing lost


def test_a_server_that_is_down_fails_cleanly_and_the_push_works_later(down_hub_url, hub, tmp_path):
    write_run(tmp_path, iterations=(0,))
    repo_id = f"{hub.user}/down-{tmp_path.name[-8:]}"
    with pytest.raises(HubPushError, match="push them later") as failure:
        push_run(tmp_path, dataset_repo=repo_id, retry=FAST, endpoint=down_hub_url)
    message = str(failure.value)
    assert f"The Hub at {down_hub_url} is unavailable (ConnectError" in message and "\n" not in message
    push_run(tmp_path, dataset_repo=repo_id, retry=FAST)  # the session's hub is up
    assert len(load_dataset(repo_id, "iteration-0", split="train")) == 3


def test_an_unavailable_hub_is_named_in_one_line_not_taken_for_a_token_problem(down_hub_url, hub):
    with pytest.raises(HubUnavailableError) as down:
        check_hub_access([f"{hub.user}/a"], api=HfApi(endpoint=down_hub_url), retry=FAST)
    hub.server.hub.inject_failures("/api/whoami-v2", status=503, count=FAST.attempts)
    with pytest.raises(HubUnavailableError) as failing:
        check_hub_access([f"{hub.user}/a"], retry=FAST)
    for error, endpoint in ((down.value, down_hub_url), (failing.value, hub.url)):
        assert str(error).startswith(f"The Hub at {endpoint} is unavailable (") and "HF_ENDPOINT" in str(error)
        assert "\n" not in str(error) and hub.token not in str(error)
    assert "ConnectError" in str(down.value) and "503" in str(failing.value)


@pytest.mark.slow
def test_cli_push_to_an_unavailable_hub_fails_in_one_line(down_hub_url, hub, tmp_path):
    write_run(tmp_path, iterations=(0,))
    command = [sys.executable, "-m", "rlaifv_trl.cli", "push", str(tmp_path), "--dataset-repo", f"{hub.user}/down"]
    environment = {**os.environ, "HF_ENDPOINT": down_hub_url}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "httpx" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]  # the error, in one line
    assert last.startswith(f"rlaifv-trl push: The Hub at {down_hub_url} is unavailable (ConnectError")
    assert "HF_ENDPOINT" in last
    assert f"push them later with: rlaifv-trl push {tmp_path} --dataset-repo {hub.user}/down" in last


def test_token_problems_are_caught_before_any_work(hub, monkeypatch):
    assert check_hub_access([f"{hub.user}/a", "b"]) == hub.user
    asked = hub.server.hub.count_requests("/api/whoami-v2")
    with pytest.raises(HubAccessError, match="401"):
        check_hub_access([f"{hub.user}/a"], token="hf_wrong", retry=FAST)
    assert hub.server.hub.count_requests("/api/whoami-v2") == asked + 1  # a rejected token is not retried
    with pytest.raises(HubAccessError, match="cannot write"):
        check_hub_access([f"{hub.other_user}/a"])
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAccessError, match="No Hub token found"):
        check_hub_access([f"{hub.user}/a"], retry=FAST)


def test_the_token_check_retries_with_the_policy_and_waits_out_a_rate_limit(hub):
    whoami = "/api/whoami-v2"
    asked = hub.server.hub.count_requests(whoami)
    hub.server.hub.inject_failures(whoami, status=503, count=FAST.attempts - 1)  # the last try gets through
    assert check_hub_access([f"{hub.user}/a"], retry=FAST) == hub.user
    assert hub.server.hub.count_requests(whoami) == asked + FAST.attempts
    # A 429 is retried after the wait the Hub asks for (Retry-After), not the policy's 0.01 s.
    hub.server.hub.inject_failures(whoami, status=429, count=1, headers={"Retry-After": "1"})
    start = time.monotonic()
    assert check_hub_access([f"{hub.user}/a"], retry=FAST) == hub.user
    assert time.monotonic() - start >= 1.0


@pytest.mark.slow
def test_cli_pushes_a_run_folder(hub, hub_repo_id, tmp_path):
    write_run(tmp_path, iterations=(0,))
    model_repo = hub_repo_id + "-model"
    build_tiny_vlm(model_dir(tmp_path, 1), "llava", "tiny")
    command = [
        sys.executable,
        "-m",
        "rlaifv_trl.cli",
        "push",
        str(tmp_path),
        "--dataset-repo",
        hub_repo_id,
        "--model-repo",
        model_repo,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert hub.token not in done.stdout + done.stderr
    assert f"datasets/{hub_repo_id}" in done.stdout and f"{model_repo}@iteration-1" in done.stdout
    assert AutoModelForImageTextToText.from_pretrained(model_repo, revision="iteration-1").config.model_type == "llava"


def test_public_names_never_leak_local_paths(tmp_path):
    assert public_name("openbmb/RLAIF-V-Dataset") == "openbmb/RLAIF-V-Dataset"
    assert public_name("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    assert public_name(str(tmp_path / "runs" / "policy")) == "local: policy"
    assert public_name("./outputs/base") == "local: base"


def test_card_templates_and_builtin_weights_ship_inside_the_wheel(tmp_path):
    assert template_path("dataset_card.md").is_file() and template_path("model_card.md").is_file()
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("rlaifv_trl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlaifv_trl/hub_cards/dataset_card.md" in names and "rlaifv_trl/hub_cards/model_card.md" in names
    assert "rlaifv_testbed/weights/shapesworld_llava.safetensors" in names  # the embedded default's models
    assert "rlaifv_testbed/weights/shapesworld_llava_labeler.safetensors" in names
    # The test bed registers its parts with the library through entry points.
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    registered = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[rlaifv_trl.model_names]\nbuiltin = rlaifv_testbed.builtin:cached_builtin" in registered
    assert "shapesworld = rlaifv_testbed.recipe:shapesworld_chair" in registered
    # CHAIR's COCO synonyms and the evaluate modules (scripts named like their folders).
    assert "rlaifv_trl/metrics/coco_synonyms.txt" in names
    assert {"rlaifv_trl/metrics/modules/chair/chair.py", "rlaifv_trl/metrics/modules/pope/pope.py"} <= set(names)
