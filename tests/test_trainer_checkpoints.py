"""Resuming the project's trainers from their own checkpoints, for VLMs whose saved key names differ from their
modules', and the modes of the files checkpoints hold."""

import os
import stat

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer

from rlaifv_testbed import oracle_preference_dataset, prompt_dataset
from rlaifv_trl import GRPORankConfig, GRPORankTrainer, RLAIFVDPOTrainer
from rlaifv_trl.trainer.checkpoints import CheckpointsMixin, load_checkpoint_weights, needs_key_conversion


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trainer_for(path, args):
    return RLAIFVDPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(path),
        args=args,
        train_dataset=oracle_preference_dataset(8),
        processing_class=AutoProcessor.from_pretrained(path),
    )


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(arch, tiny_vlm_dirs, dpo_args, tmp_path):
    path = tiny_vlm_dirs[f"{arch}_policy"]
    settings = {"max_steps": 4, "learning_rate": 1e-3, "save_strategy": "steps", "save_steps": 2}
    whole = trainer_for(path, dpo_args(output_dir=str(tmp_path / "whole"), **settings))
    whole.train()
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert needs_key_conversion(whole.model, checkpoint)  # the Trainer's raw load_state_dict would load nothing

    resumed = trainer_for(path, dpo_args(output_dir=str(tmp_path / "resumed"), **settings))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(expected[name], got[name], atol=1e-6) for name in expected)


@pytest.mark.parametrize("max_shard_size", [None, "20KB"])
def test_checkpoint_weights_load_from_one_file_or_from_shards(max_shard_size, tiny_vlm_dirs, tmp_path):
    trained = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dirs["llava_policy"])
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    trained.save_pretrained(tmp_path / "checkpoint", **kwargs)
    assert any((tmp_path / "checkpoint").glob("*.index.json")) == bool(max_shard_size)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dirs["llava"])  # other weights
    assert needs_key_conversion(model, tmp_path / "checkpoint")
    assert load_checkpoint_weights(model, tmp_path / "checkpoint")
    expected = trained.state_dict()
    assert all(torch.equal(expected[name], value) for name, value in model.state_dict().items())
    assert not needs_key_conversion(model, tmp_path / "nowhere") and not load_checkpoint_weights(model, tmp_path)


def words(prompts, completions, **kwargs):
    return [float(len(completion[0]["content"].split())) for completion in completions]


def grpo_rank_trainer(path, output_dir, **settings):
    args = GRPORankConfig(
        str(output_dir), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, seed=0, **settings,
    )  # fmt: skip
    return GRPORankTrainer(
        model=AutoModelForImageTextToText.from_pretrained(path),
        reward_funcs=words,
        args=args,
        train_dataset=prompt_dataset(8),
        processing_class=AutoProcessor.from_pretrained(path),
    )


def test_a_resumed_grpo_rank_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_vlm_dirs, tmp_path):
    path = tiny_vlm_dirs["llava_policy"]
    settings = {"max_steps": 4, "learning_rate": 1e-3, "save_strategy": "steps", "save_steps": 2}
    whole = grpo_rank_trainer(path, tmp_path / "whole", **settings)
    whole.train()
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert needs_key_conversion(whole.model, checkpoint)

    resumed = grpo_rank_trainer(path, tmp_path / "resumed", **settings)
    initial = {name: value.clone() for name, value in resumed.model.state_dict().items()}
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert any(not torch.equal(initial[name], got[name]) for name in got)
    assert all(torch.allclose(expected[name], got[name], atol=1e-6) for name in expected)


def test_every_trainer_of_the_project_loads_and_saves_checkpoints_through_one_mixin():
    import rlaifv_trl.trainer as trainers

    found = [value for value in vars(trainers).values() if isinstance(value, type) and issubclass(value, Trainer)]
    assert {RLAIFVDPOTrainer, GRPORankTrainer} <= set(found)
    assert all(issubclass(trainer, CheckpointsMixin) and trainer.__mro__[1] is CheckpointsMixin for trainer in found)


@pytest.mark.parametrize("kind", ["dpo", "grpo_rank"])
def test_checkpoint_weights_are_written_with_the_modes_of_the_umask(kind, tiny_vlm_dirs, dpo_args, tmp_path):
    previous = os.umask(0o027)
    try:
        settings = {"max_steps": 1, "save_strategy": "steps", "save_steps": 1}
        if kind == "dpo":
            trainer = trainer_for(tiny_vlm_dirs["llava_policy"], dpo_args(output_dir=str(tmp_path), **settings))
        else:
            trainer = grpo_rank_trainer(tiny_vlm_dirs["llava_policy"], tmp_path, **settings)
        trainer.train()
    finally:
        os.umask(previous)
    weights = list((tmp_path / "checkpoint-1").glob("*.safetensors"))
    assert weights and all(stat.S_IMODE(path.stat().st_mode) == 0o640 for path in weights)
