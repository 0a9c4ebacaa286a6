"""Every shipped config of the iterative DPO recipe runs as shipped: `recipes/configs/*.yaml` end to end, with only
sizes made small.

The Hub models and datasets a config names are served by the loopback Hub under their own ids: tiny stand-ins of the
same architecture (a LLaVA for llava-hf/llava-1.5-7b-hf, a LLaVA-NeXT for the 34B labeler, a Llama 3 chat model for
the splitter, ...; their yes/no answers made to depend on the question, see `support.stand_ins`) and a prompt
dataset of the published schema. Every other setting is the file's own (LoRA and its
merge, length balancing, bf16, evaluation off, ...). A new config file is picked up automatically; one that names a
model or dataset without a stand-in here fails, saying which.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from transformers import AutoModelForImageTextToText

from rlaifv_testbed.models import build_tiny_causal_lm, build_tiny_vlm
from rlaifv_trl import load_preference_dataset
from rlaifv_trl.loading import resolve_model_name
from support.stand_ins import undecided_labeler


ROOT = Path(__file__).parents[1]
# The configs of `recipes/iterative_dpo.py`; `grpo_rank_*.yaml` belong to `recipes/grpo_rank.py` and run as shipped
# in `test_grpo_rank_recipe.py` and `test_video_recipes.py`.
CONFIGS = sorted(
    path for path in (ROOT / "recipes" / "configs").glob("*.yaml") if not path.stem.startswith("grpo_rank")
)


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out

# Hub ids named by shipped configs -> (kind, architecture) of the tiny stand-in served under that id.
STAND_INS = {
    "llava-hf/llava-1.5-7b-hf": ("vlm", "llava"),
    "llava-hf/llava-v1.6-34b-hf": ("vlm", "llava_next"),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("causal_lm", "llama"),
    "Qwen/Qwen2.5-VL-7B-Instruct": ("vlm", "qwen2_5_vl"),
    "Qwen/Qwen2.5-7B-Instruct": ("causal_lm", "qwen2"),
}
PROMPT_DATASETS = ("openbmb/RLAIF-V-Dataset",)  # served with the published schema (test_published_datasets)
MODEL_KEYS = ("model_name_or_path", "labeler_model_name_or_path", "splitter_model_name_or_path",
              "question_writer_model_name_or_path")  # fmt: skip

# Only sizes change: fewer and shorter everything. Two iterations, so that iteration 2 starts from iteration 1's
# (merged) policy.
SIZES = [
    "--num_iterations", "2", "--prompts_per_iteration", "8", "--num_candidates", "4", "--max_new_tokens", "12",
    "--splitter_max_new_tokens", "24", "--evaluation_prompts", "8", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "2",
]  # fmt: skip


@pytest.fixture(scope="session")
def served(hub, tmp_path_factory):
    """`served(hub_id)`: publish the stand-in of a model or dataset id on the loopback Hub (once)."""
    published: set[str] = set()

    def serve(name: str) -> None:
        if name in published:
            return
        namespace = name.split("/")[0]
        token = f"hf_owner_of_{namespace}"
        hub.server.hub.tokens[token] = namespace  # the account that owns the namespace
        if name in PROMPT_DATASETS:
            from test_published_datasets import openbmb_dataset

            openbmb_dataset(24).push_to_hub(name, token=token)
        elif name in STAND_INS:
            kind, arch = STAND_INS[name]
            folder = tmp_path_factory.mktemp(arch)
            if kind == "vlm":
                undecided_labeler(build_tiny_vlm(folder, arch, "tiny", seed=len(published)))
            else:
                build_tiny_causal_lm(folder, arch, seed=len(published))
            HfApi(token=token).create_repo(name, exist_ok=True)
            HfApi(token=token).upload_folder(repo_id=name, folder_path=folder)
        else:
            pytest.fail(f"A shipped config names {name!r}, which has no tiny stand-in: add one to STAND_INS")
        published.add(name)

    return serve


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_the_shipped_config_runs_as_shipped(config, served, tmp_path, one_thread):
    from test_recipe import done, run_recipe

    settings = yaml.safe_load(config.read_text())
    for key in MODEL_KEYS:
        if settings.get(key) and not settings[key].startswith("builtin:"):
            served(settings[key])
    if ":" not in settings["prompt_dataset"]:
        served(settings["prompt_dataset"])
    run = tmp_path / "run"
    summary = run_recipe(["--config", str(config), *SIZES, "--output_dir", str(run), "--use_cpu", "true"])

    stages = done(run)
    for k in (1, 2):
        assert {"train", "evaluate", "model_card"} <= set(stages[str(k)])
        assert (stages[str(k)]["evaluate"] is not None) == bool(settings.get("evaluation"))
        policy = AutoModelForImageTextToText.from_pretrained(run / "models" / f"iteration-{k}")
        assert not any("lora" in name for name in policy.state_dict())  # a LoRA adapter was merged
        if settings.get("dtype") == "bfloat16":
            assert next(policy.parameters()).dtype == torch.bfloat16
    base = AutoModelForImageTextToText.from_pretrained(resolve_model_name(settings["model_name_or_path"]))
    trained = AutoModelForImageTextToText.from_pretrained(run / "models" / "iteration-1").state_dict()
    assert any(not torch.equal(value.to(trained[name]), trained[name]) for name, value in base.state_dict().items())
    for k in (1, 2):
        pairs = load_preference_dataset(str(run / "dataset"), name=f"iteration-{k}")
        assert len(pairs) == stages[str(k)]["feedback"]["num_pairs"] > 0
        audit = json.loads((run / "feedback" / f"iteration-{k}" / "report.json").read_text())
        assert audit["num_candidates"] == 4 * audit["num_prompts"]  # --num_candidates reached generate
    card = (run / "dataset" / "README.md").read_text()
    assert f"length_balance: {str(settings.get('length_balancing', True)).lower()}" in card
    splitter = settings.get("splitter_model_name_or_path")
    assert f"splitter: {splitter or 'the rule-based splitter of rlaifv-trl'}" in card
    assert summary.policies[2] == str(run / "models" / "iteration-2")
