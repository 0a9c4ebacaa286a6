"""The scorer as the reward function of real TRL trainers: GRPOTrainer and OnlineDPOTrainer on a tiny VLM."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

from rlaifv_testbed import prompt_dataset
from rlaifv_trl import LengthNormalizedRewardScorer


pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
}


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path)


class RecordingScorer(LengthNormalizedRewardScorer):
    """The scorer, keeping what TRL passed it and what it returned (to check the calls, not to replace them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, prompts, completions, **columns):
        rewards = super().__call__(prompts, completions, **columns)
        self.calls.append({"prompts": prompts, "completions": completions, "columns": columns, "rewards": rewards})
        return rewards


class ParameterChange(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = any(not torch.equal(p, self.before[n]) for n, p in model.named_parameters() if p.requires_grad)


def check_training(change: ParameterChange, scorer: RecordingScorer, image_column: str, completions_per_call: int):
    """The model was updated, and the scorer rewarded every completion of both steps; returns the first call."""
    assert change.changed
    assert len(scorer.calls) == 2
    for call in scorer.calls:
        assert image_column in call["columns"]
        assert len(call["rewards"]) == len(call["completions"]) == completions_per_call
        assert all(isinstance(reward, float) for reward in call["rewards"])
    return scorer.calls[0]


@pytest.fixture(scope="module")
def scorer(tiny_vlm_dirs):
    return RecordingScorer(
        load(tiny_vlm_dirs["llava_policy"]),
        load(tiny_vlm_dirs["llava"]),
        AutoProcessor.from_pretrained(tiny_vlm_dirs["llava"]),
    )


def test_grpo_trainer_trains_with_the_scorer_as_reward(scorer, tiny_vlm_dirs, tmp_path):
    scorer.calls.clear()
    path = tiny_vlm_dirs["llava"]
    args = GRPOConfig(
        str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        **CPU,
    )
    change = ParameterChange()
    trainer = GRPOTrainer(
        model=load(path),
        reward_funcs=scorer,
        args=args,
        train_dataset=prompt_dataset(4),
        processing_class=AutoProcessor.from_pretrained(path),
        callbacks=[change],
    )
    trainer.train()
    call = check_training(change, scorer, image_column="images", completions_per_call=4)
    logged = [log for log in trainer.state.log_history if "rewards/length_normalized_reward/mean" in log]
    assert len(logged) == 2
    assert logged[0]["rewards/length_normalized_reward/mean"] == pytest.approx(sum(call["rewards"]) / 4, abs=1e-5)


def test_online_dpo_trainer_trains_with_the_scorer_as_reward(scorer, tiny_vlm_dirs, tmp_path):
    scorer.calls.clear()
    path = tiny_vlm_dirs["llava"]
    data = prompt_dataset(4).map(
        lambda row: {"image": row["images"][0]}, remove_columns=["images"]
    )  # its image column
    args = OnlineDPOConfig(
        str(tmp_path), per_device_train_batch_size=2, max_new_tokens=8, max_steps=2, learning_rate=1e-3, **CPU
    )
    change = ParameterChange()
    trainer = OnlineDPOTrainer(
        model=load(path),
        ref_model=load(path),
        reward_funcs=scorer,
        args=args,
        train_dataset=data,
        processing_class=AutoProcessor.from_pretrained(path),
        callbacks=[change],
    )
    trainer.train()
    check_training(change, scorer, image_column="image", completions_per_call=4)  # two completions per prompt
