"""Resuming RLAIFVDPOTrainer from its own checkpoints, for VLMs whose saved key names differ from their modules'."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_trl import RLAIFVDPOTrainer
from rlaifv_trl.synthetic import oracle_preference_dataset
from rlaifv_trl.trainer.checkpoints import load_checkpoint_weights, needs_key_conversion


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
