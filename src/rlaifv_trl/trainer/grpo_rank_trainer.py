"""`GRPORankTrainer`: TRL's `GRPOTrainer` with rank-aware advantages (GRPO_rank of Oracle-RLAIF)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer

from .checkpoints import CheckpointsMixin
from .grpo_rank_config import GRPORankConfig
from .grpo_video import VideoPromptsMixin
from .rank_advantages import kendall_tau, rank_advantages


logger = logging.getLogger(__name__)

# The multimodal inputs `GRPOTrainer._generate_and_score_completions` returns and its forward passes take.
FORWARD_FIELDS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip


@contextmanager
def activation_checkpointing_disabled(model: PreTrainedModel, kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Activation checkpointing off inside the block (a forward pass under `torch.no_grad()`), restored after, with
    transformers' current `activation_checkpointing_*` methods."""
    was_enabled = model.is_activation_checkpointing
    if was_enabled:
        model.activation_checkpointing_disable()
    try:
        yield
    finally:
        if was_enabled:
            model.activation_checkpointing_enable(kwargs)


class GRPORankTrainer(CheckpointsMixin, VideoPromptsMixin, GRPOTrainer):
    """GRPO_rank: online GRPO whose advantages come from an oracle's ranking of each group of answers.

    A drop-in `trl.GRPOTrainer`: same arguments, same datasets (images included), same generation, loss, KL,
    entropy bonus, PEFT and vLLM options. The reward functions play the oracle ranker: their (weighted) sum orders each
    prompt's `num_generations` answers, ties kept, and `args.rank_advantage` turns the ranks into advantages
    (`rlaifv_trl.trainer.rank_advantages`). Any ranker works: the project's `RankerReward` (a listwise VLM/LLM or the
    divide-and-conquer labeler), a TRL reward model, or a plain function.

    Video prompts: a dataset with a `videos` column (one list of videos per row, each a list of frames, as
    `rlaifv_testbed.motion_prompt_dataset` makes) and `{"type": "video"}` placeholders in its prompts trains as
    an image dataset does, for families whose processor takes videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...; others are
    refused naming the family). The videos are encoded with the prompts, given to generation and to every forward pass
    (old, reference and policy log-probs, the predicted ranks, the loss), and reach the reward functions as the
    `videos` column (`RankerReward` ranks with them). Generation with vLLM, tools and environments take no videos.
    See `rlaifv_trl.trainer.grpo_video`.

    Logged in addition to TRL's metrics: `rank/advantage_abs_mean`, and for the forms that use the policy's predicted
    ranking, `rank/policy_oracle_kendall_tau` (how well the policy's own likelihood order agrees with the oracle).

    Example:

    ```python
    from rlaifv_trl import GRPORankConfig, GRPORankTrainer, RankerReward

    trainer = GRPORankTrainer(
        model="Qwen/Qwen2-VL-2B-Instruct",
        reward_funcs=RankerReward(ranker),
        args=GRPORankConfig("grpo-rank", num_generations=5),
        train_dataset=prompts,  # columns `prompt` (conversational) and `images`
    )
    trainer.train()
    ```
    """

    _tag_names = ["trl", "grpo", "grpo-rank", "oracle-rlaif", "rlaif-v"]
    _name = "GRPO_rank"

    def __init__(self, model: Any, reward_funcs: Any, args: GRPORankConfig | None = None, **kwargs: Any):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GRPORankConfig(f"{name.split('/')[-1]}-GRPO-rank")
        elif isinstance(args, GRPOConfig) and not isinstance(args, GRPORankConfig):
            logger.warning(
                "GRPORankTrainer got a trl.GRPOConfig: converted with GRPORankConfig.from_grpo_config (scale_rewards "
                "%r -> 'none', beta %s kept, rank_advantage='gain'). Pass a GRPORankConfig to choose them.",
                args.scale_rewards,
                args.beta,
            )
            args = GRPORankConfig.from_grpo_config(args)
        elif not isinstance(args, GRPORankConfig):
            raise TypeError(f"GRPORankTrainer takes a GRPORankConfig or a trl.GRPOConfig, got {type(args).__name__}")
        self._oracle_rewards: torch.Tensor | None = None
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._check_video_support()

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._oracle_rewards = rewards_per_func  # every process's answers, in process order
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        rewards_per_func = self._oracle_rewards
        unscorable = torch.isnan(rewards_per_func).all(dim=1)
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        policy_scores = None
        if self.args.rank_advantage != "gain":
            policy_scores = self.accelerator.gather(self._policy_scores(output))
        advantages = rank_advantages(rewards, num_generations, self.args.rank_advantage, policy_scores)

        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        output["advantages"] = advantages[start : start + local].to(output["advantages"].device)
        logged = self._logs["advantages"]  # TRL logged its own advantages of every process last: replace them
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        self._metrics[mode]["rank/advantage_abs_mean"].append(advantages.abs().mean().item())
        if policy_scores is not None:
            taus = [
                kendall_tau(r[~torch.isnan(r)], s[~torch.isnan(r)])
                for r, s in zip(rewards.cpu().view(-1, num_generations), policy_scores.cpu().view(-1, num_generations))
            ]
            taus = [tau for tau in taus if not math.isnan(tau)]
            if taus:
                self._metrics[mode]["rank/policy_oracle_kendall_tau"].append(sum(taus) / len(taus))
        return output

    def _policy_scores(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The policy's mean (or summed) log-probability of each local answer: its predicted ranking's score."""
        mask = inputs["completion_mask"]
        per_token = inputs.get("old_per_token_logps")
        if per_token is None:
            completion_ids = inputs["completion_ids"]
            with (
                torch.no_grad(),
                activation_checkpointing_disabled(self.model, self.args.activation_checkpointing_kwargs),
                self.video_forwards(inputs),
            ):
                per_token, _, _ = self._get_per_token_logps_and_entropies(
                    self.model,
                    torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
                    torch.cat([inputs["prompt_mask"], mask], dim=1),
                    completion_ids.size(1),
                    batch_size=self.args.per_device_train_batch_size,
                    **{name: inputs[name] for name in FORWARD_FIELDS if name in inputs},
                )
        total = (per_token * mask).sum(dim=1)
        if self.args.predicted_rank_score == "sum_log_prob":
            return total
        return total / mask.sum(dim=1).clamp(min=1)
