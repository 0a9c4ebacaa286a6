"""Resuming RLAIFVDPOTrainer from its own checkpoints, for VLMs whose saved key names differ from their modules'."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_trl import RLAIFVDPOTrainer
from rlaifv_trl.synthetic import oracle_preference_dataset
from rlaifv_trl.trainer.checkpoints import needs_key_conversion


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
