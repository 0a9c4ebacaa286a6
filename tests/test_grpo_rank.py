"""GRPO_rank: rank-aware advantages (hand-computed cases) and `GRPORankTrainer` training a tiny VLM with TRL."""

import dataclasses
import math
import warnings

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from trl import GRPOConfig

from rlaifv_testbed import prompt_dataset
from rlaifv_trl import GRPORankConfig, GRPORankTrainer
from rlaifv_trl.trainer.rank_advantages import (
    dcg_gain,
    kendall_tau,
    order_ranks,
    rank_advantages,
    tie_gains,
    tie_ranks,
)


NAN = math.nan
G1, G2, G3 = 1 / (2 * math.log2(3)), 1 / (3 * 2), 1 / (4 * math.log2(5))  # gains of ranks 1, 2, 3


# -- the rank arithmetic -------------------------------------------------------------------------------------------


def test_dcg_gain_weighs_the_top_most():
    assert dcg_gain(torch.arange(4)).tolist() == pytest.approx([1.0, G1, G2, G3])


def test_ties_share_a_rank_and_the_mean_gain_of_their_positions():
    values = torch.tensor([10.0, 7.0, 7.0, 3.0, NAN])
    assert tie_ranks(values).tolist() == [0, 1, 1, 3, -1]
    gains = tie_gains(values)
    assert gains[:4].tolist() == pytest.approx([1.0, (G1 + G2) / 2, (G1 + G2) / 2, G3])
    assert math.isnan(gains[4])
    assert order_ranks(torch.tensor([1.0, 5.0, 5.0, NAN])).tolist() == [2, 0, 1, -1]


def test_gain_advantage_is_the_gain_minus_the_group_mean():
    rewards = torch.tensor([0.0, 2.0, 1.0, 2.0, 5.0, 5.0, 5.0, 5.0])  # two groups of 4; the second all tied
    advantages = rank_advantages(rewards, 4, "gain")
    tied_top = (1.0 + G1) / 2
    first = torch.tensor([G3, tied_top, G2, tied_top], dtype=torch.float64)
    assert advantages[:4].tolist() == pytest.approx((first - first.mean()).tolist(), abs=1e-6)
    assert advantages[4:].tolist() == pytest.approx([0.0] * 4, abs=1e-7)  # all tied: no signal
    assert advantages[:4].sum().item() == pytest.approx(0.0, abs=1e-6)


def test_unscorable_answers_get_no_advantage_and_no_rank():
    advantages = rank_advantages(torch.tensor([1.0, NAN, 0.0, NAN, NAN, 3.0]), 3, "gain")
    assert advantages[[1, 3, 4, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]  # a group with one scored answer: nothing
    assert advantages[0].item() == pytest.approx((1 - G1) / 2)
    assert advantages[2].item() == pytest.approx(-(1 - G1) / 2)


def test_rank_gap_pushes_up_what_the_oracle_ranks_above_the_policy():
    rewards = torch.tensor([3.0, 2.0, 1.0, 0.0])  # oracle: 0 > 1 > 2 > 3
    agreeing = rank_advantages(rewards, 4, "rank_gap", policy_scores=torch.tensor([-1.0, -2.0, -3.0, -4.0]))
    assert agreeing.tolist() == pytest.approx([0.0] * 4, abs=1e-7)
    reversed_ = rank_advantages(rewards, 4, "rank_gap", policy_scores=torch.tensor([-4.0, -3.0, -2.0, -1.0]))
    assert reversed_.tolist() == pytest.approx([1 - G3, G1 - G2, G2 - G1, G3 - 1], abs=1e-6)


def test_ndcg_penalty_is_the_literal_formula():
    rewards, scores = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([-1.0, -3.0, -2.0])  # policy swaps 1 and 2
    delta = torch.tensor([1 - 1.0, 1 - G2 / G1, 1 - G1 / G2])
    expected = delta.mean() - delta
    assert rank_advantages(rewards, 3, "ndcg_penalty", scores).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_rank_advantage_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown rank advantage"):
        rank_advantages(torch.zeros(4), 2, "zscore")
    with pytest.raises(ValueError, match="groups of 3"):
        rank_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="policy's scores"):
        rank_advantages(torch.zeros(4), 2, "rank_gap")


def test_kendall_tau():
    assert kendall_tau(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])) == 1.0
    assert kendall_tau(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == -1.0


# -- the config ----------------------------------------------------------------------------------------------------


def test_config_refuses_what_has_no_effect(tmp_path):
    with pytest.raises(ValueError, match="does not scale"):
        GRPORankConfig(str(tmp_path), use_cpu=True, scale_rewards="group")
    with pytest.raises(ValueError, match="rank_advantage"):
        GRPORankConfig(str(tmp_path), use_cpu=True, rank_advantage="zscore")
    with pytest.raises(ValueError, match="predicted_rank_score"):
        GRPORankConfig(str(tmp_path), use_cpu=True, predicted_rank_score="max")
    with pytest.raises(ValueError, match="weighted sum"):
        GRPORankConfig(str(tmp_path), use_cpu=True, multi_objective_aggregation="normalize_then_sum")
    config = GRPORankConfig(str(tmp_path), use_cpu=True)
    assert (config.beta, config.scale_rewards, config.rank_advantage) == (0.04, "none", "gain")


# -- the trainer ---------------------------------------------------------------------------------------------------

CPU = {"use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}


def words(prompts, completions, **kwargs):
    """A toy oracle: longer answers rank higher (ties are common: equal lengths)."""
    return [float(len(completion[0]["content"].split())) for completion in completions]


class ParameterChange(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = sum(not torch.equal(self.before[n], p) for n, p in model.named_parameters() if n in self.before)


def grpo_rank(path, tmp_path, form="gain", **overrides):
    settings = dict(
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8, max_steps=2, learning_rate=1e-3
    )
    args = GRPORankConfig(str(tmp_path), rank_advantage=form, logging_steps=1, **{**settings, **overrides}, **CPU)
    change = ParameterChange()
    trainer = GRPORankTrainer(
        model=AutoModelForImageTextToText.from_pretrained(path),
        reward_funcs=words,
        args=args,
        train_dataset=prompt_dataset(4),
        processing_class=AutoProcessor.from_pretrained(path),
        callbacks=[change],
    )
    return trainer, change


@pytest.mark.usefixtures("one_torch_thread")
def test_trainer_trains_with_advantages_from_the_oracle_ranks(tiny_vlm_dirs, tmp_path):
    trainer, change = grpo_rank(tiny_vlm_dirs["llava"], tmp_path)
    trainer.train()
    assert change.changed > 0
    rewards = torch.tensor(trainer._logs["rewards"]["words"])  # the last generation batch
    advantages = torch.tensor(list(trainer._logs["advantages"]))
    assert advantages.tolist() == pytest.approx(rank_advantages(rewards, 4, "gain").tolist(), abs=1e-6)
    logged = [log for log in trainer.state.log_history if "rank/advantage_abs_mean" in log]
    assert len(logged) == 2
    assert all(0 <= log["rank/advantage_abs_mean"] < 1 for log in logged)


@pytest.mark.usefixtures("one_torch_thread")
def test_predicted_ranks_use_the_policys_own_log_probs(tiny_vlm_dirs, tmp_path):
    # num_iterations=2: TRL computes the old policy's log-probs itself; the predicted ranking must read the same
    trainer, _ = grpo_rank(tiny_vlm_dirs["llava"], tmp_path, form="rank_gap", num_iterations=2, max_steps=1)
    batch = [row for row in prompt_dataset(1) for _ in range(4)]
    trainer.model.train()
    output = trainer._generate_and_score_completions(batch)
    assert "old_per_token_logps" in output
    from_trl = trainer._policy_scores(output)
    recomputed = trainer._policy_scores({k: v for k, v in output.items() if k != "old_per_token_logps"})
    assert recomputed.tolist() == pytest.approx(from_trl.tolist(), abs=1e-5)
    trainer.args.predicted_rank_score = "sum_log_prob"  # the total, not the mean: the lengths' factor apart
    lengths = output["completion_mask"].sum(dim=1).clamp(min=1)
    assert trainer._policy_scores(output).tolist() == pytest.approx((from_trl * lengths).tolist(), abs=1e-4)
    trainer.args.predicted_rank_score = "mean_log_prob"
    rewards = torch.tensor(list(trainer._logs["rewards"]["words"])[-4:])
    expected = rank_advantages(rewards, 4, "rank_gap", from_trl)
    assert output["advantages"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert trainer._metrics["train"]["rank/policy_oracle_kendall_tau"]


@pytest.mark.usefixtures("one_torch_thread")
def test_predicted_ranks_switch_activation_checkpointing_by_its_current_names(tiny_vlm_dirs, tmp_path):
    trainer, _ = grpo_rank(
        tiny_vlm_dirs["llava"], tmp_path, form="rank_gap", max_steps=1, activation_checkpointing=True
    )
    trainer.model.activation_checkpointing_enable(trainer.args.activation_checkpointing_kwargs)  # as `train` does
    trainer.model.train()
    output = trainer._generate_and_score_completions([row for row in prompt_dataset(1) for _ in range(4)])
    assert output.get("old_per_token_logps") is None  # the predicted ranking runs its own forward pass
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        scores = trainer._policy_scores(output)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert trainer.model.is_activation_checkpointing  # switched back on


def test_a_grpo_config_converts_keeping_every_setting(tmp_path):
    grpo = GRPOConfig(
        str(tmp_path), learning_rate=3e-6, num_generations=3, per_device_train_batch_size=6, steps_per_generation=2,
        beta=0.02, temperature=0.7, max_completion_length=17, loss_type="dr_grpo", hub_token="secret", **CPU,
    )  # fmt: skip
    converted = GRPORankConfig.from_grpo_config(grpo, rank_advantage="rank_gap")
    assert converted.rank_advantage == "rank_gap" and converted.scale_rewards == "none"
    changed = {
        field.name
        for field in dataclasses.fields(GRPOConfig)
        if field.init and getattr(converted, field.name) != getattr(grpo, field.name)
    }
    assert changed == {"scale_rewards"}  # generation_batch_size too is what it was (derived again)
    assert (converted.generation_batch_size, converted.steps_per_generation, converted.beta) == (12, 2, 0.02)
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        GRPORankConfig.from_grpo_config(
            GRPOConfig(str(tmp_path), multi_objective_aggregation="normalize_then_sum", **CPU)
        )


def test_the_trainer_takes_a_grpo_config_converted(tiny_vlm_dirs, tmp_path):
    trainer = GRPORankTrainer(
        model=str(tiny_vlm_dirs["llava"]),
        reward_funcs=words,
        args=GRPOConfig(str(tmp_path), learning_rate=2e-5, num_generations=2, per_device_train_batch_size=2, **CPU),
        train_dataset=prompt_dataset(2),
    )
    assert isinstance(trainer.args, GRPORankConfig)
    assert (trainer.args.learning_rate, trainer.args.num_generations, trainer.args.scale_rewards) == (2e-5, 2, "none")
    with pytest.raises(TypeError, match="GRPORankConfig or a trl.GRPOConfig"):
        GRPORankTrainer(model=str(tiny_vlm_dirs["llava"]), reward_funcs=words, args=object())


@pytest.mark.usefixtures("one_torch_thread")
def test_the_entropy_bonus_enters_the_loss(tiny_vlm_dirs, tmp_path):
    losses = {}
    for coef in (0.0, 0.5):
        trainer, _ = grpo_rank(tiny_vlm_dirs["llava"], tmp_path / str(coef), max_steps=1, entropy_coef=coef, seed=3)
        trainer.train()
        logged = next(log for log in trainer.state.log_history if "loss" in log)
        losses[coef] = (logged["loss"], logged["entropy"])
    (plain, entropy), (with_bonus, same_entropy) = losses[0.0], losses[0.5]
    assert entropy == pytest.approx(same_entropy, rel=1e-4)  # same seed: same samples, same first step
    assert with_bonus == pytest.approx(plain - 0.5 * entropy, abs=1e-3)
