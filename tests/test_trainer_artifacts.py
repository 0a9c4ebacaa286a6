"""`RLAIFVDPOTrainer` saves its policy's implicit-reward settings (`implicit_reward.json`) with its weights, and the
scorer loads them: beta has one source, the training's config."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import oracle_preference_dataset
from rlaifv_trl import LengthNormalizedRewardScorer, RLAIFVDPOConfig, RLAIFVDPOTrainer
from rlaifv_trl.scoring.implicit_reward import REWARD_CONFIG_NAME, ImplicitRewardConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]


def test_save_model_writes_the_settings_the_scorer_scores_with(tiny_vlm_dirs, dpo_args, tmp_path):
    policy, reference = tiny_vlm_dirs["llava_policy"], tiny_vlm_dirs["llava"]
    data = oracle_preference_dataset(2)
    trainer = RLAIFVDPOTrainer(
        model=str(policy),
        ref_model=AutoModelForImageTextToText.from_pretrained(reference),
        args=dpo_args(beta=0.37, max_length=777, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]),
        train_dataset=data,
        processing_class=AutoProcessor.from_pretrained(policy),
    )
    saved = tmp_path / "policy"
    trainer.save_model(str(saved))
    recorded = json.loads((saved / REWARD_CONFIG_NAME).read_text())
    assert (recorded["beta"], recorded["max_length"], recorded["loss_type"]) == (0.37, 777, ["sigmoid", "sft"])
    assert recorded["length_normalize"] is True and recorded["reference_model"] is None
    assert (saved / recorded["reference_path"]).resolve() == reference.resolve()  # a local folder, relative

    loaded = LengthNormalizedRewardScorer.from_pretrained(saved)  # nothing else: beta and reference recorded
    explicit = LengthNormalizedRewardScorer.from_pretrained(saved, reference, beta=0.37, max_length=777)
    assert (loaded.beta, loaded.max_length) == (0.37, 777)
    row = data[0]
    answers = [row["chosen"], row["rejected"]]
    assert loaded.score([PROMPT] * 2, [row["images"]] * 2, answers) == pytest.approx(
        explicit.score([PROMPT] * 2, [row["images"]] * 2, answers), abs=1e-6
    )


def test_without_a_reference_model_the_reference_is_the_starting_policy(tiny_vlm_dirs, dpo_args, tmp_path):
    policy = tiny_vlm_dirs["llava"]
    trainer = RLAIFVDPOTrainer(
        model=str(policy), args=dpo_args(precompute_ref_log_probs=True), train_dataset=oracle_preference_dataset(2)
    )
    config = trainer.implicit_reward_config(tmp_path / "out")
    assert (tmp_path / "out" / config.reference_path).resolve() == policy.resolve()
    trainer._reference = "org/base-model"  # a policy loaded from the Hub is referred to by its id
    hub_named = trainer.implicit_reward_config(tmp_path)
    assert (hub_named.reference_model, hub_named.reference_path) == ("org/base-model", None)


def test_checkpoints_carry_the_settings_too(tiny_vlm_dirs, dpo_args):
    trainer = RLAIFVDPOTrainer(
        model=str(tiny_vlm_dirs["llava"]),
        args=dpo_args(max_steps=1, save_strategy="steps", save_steps=1, beta=0.2),
        train_dataset=oracle_preference_dataset(2),
    )
    trainer.train()
    checkpoint = next(Path(trainer.args.output_dir).glob("checkpoint-*"))
    assert ImplicitRewardConfig.load(checkpoint).beta == 0.2


def test_the_scorer_refuses_a_policy_without_recorded_settings_unless_beta_is_given(tiny_vlm_dirs):
    policy, reference = tiny_vlm_dirs["llava_policy"], tiny_vlm_dirs["llava"]
    with pytest.raises(ValueError, match=r"implicit_reward.json.*pass the `beta`"):
        LengthNormalizedRewardScorer.from_pretrained(policy, reference)
    assert LengthNormalizedRewardScorer.from_pretrained(policy, reference, beta=0.3).beta == 0.3
    assert LengthNormalizedRewardScorer.from_pretrained(policy, mode="policy_log_prob").mode == "policy_log_prob"


def test_settings_written_by_a_later_release_load(tmp_path):
    (tmp_path / REWARD_CONFIG_NAME).write_text(json.dumps({"beta": 0.2, "a_later_field": 1}))
    assert ImplicitRewardConfig.load(tmp_path) == ImplicitRewardConfig(beta=0.2)


def test_beta_has_one_source_of_truth():
    """The scorer's default beta is the DPO config's default, which is RLAIF-V's 0.1."""
    from rlaifv_trl.scoring import RLAIFV_BETA

    assert RLAIFV_BETA == RLAIFVDPOConfig(output_dir="unused").beta == 0.1
