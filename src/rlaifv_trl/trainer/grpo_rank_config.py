"""Configuration of `GRPORankTrainer`: TRL's `GRPOConfig` with rank-aware advantages (Oracle-RLAIF's GRPO_rank)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl import GRPOConfig

from .rank_advantages import ADVANTAGE_FORMS
from .rlaifv_dpo_config import follow_cpu_bf16


PREDICTED_RANK_SCORES = ("mean_log_prob", "sum_log_prob")


@dataclass
class GRPORankConfig(GRPOConfig):
    r"""
    Configuration class for the [`GRPORankTrainer`].

    A [`~trl.GRPOConfig`] for GRPO_rank ([Oracle-RLAIF](https://huggingface.co/papers/2510.02561)): the reward
    functions act as an *oracle ranker* (only the order of a group's rewards counts), and the advantages come from
    the ranks through a DCG gain that weighs the top of the ranking most, without division by the standard deviation.
    Everything else (the clipped surrogate, the KL to the reference with coefficient `beta`, the entropy bonus
    `entropy_coef`, generation, vLLM, PEFT) is TRL's. See `rlaifv_trl.trainer.rank_advantages` for the formulas.

    Parameters:
        rank_advantage (`str`, *optional*, defaults to `"gain"`):
            How advantages come from ranks. `"gain"`: the gain of the oracle rank minus its group's mean (method note,
            option a). `"rank_gap"`: the gain of the oracle rank minus the gain of the rank the policy gives the
            answer (by its own log-likelihood), centred on the group (option b, read as a signed penalty).
            `"ndcg_penalty"`: the reviews' formula taken literally, mean(delta) - delta_i with
            delta_i = 1 - gain(policy rank) / gain(oracle rank). `"gain"` is the default because it trained best on the
            project's test bed (see `benchmarks/ranking_comparison.py`).
        predicted_rank_score (`str`, *optional*, defaults to `"mean_log_prob"`):
            The policy's score whose order is its predicted ranking (for `"rank_gap"` and `"ndcg_penalty"`):
            `"mean_log_prob"` (length-normalized) or `"sum_log_prob"`.
        beta (`float`, *optional*, defaults to `0.04`):
            KL coefficient to the reference policy (GRPO_rank keeps a KL term; TRL's `GRPOConfig` defaults to 0).
        scale_rewards (`str`, *optional*, defaults to `"none"`):
            Must stay `"none"`: rank advantages are not divided by a standard deviation.

    > As in [`RLAIFVDPOConfig`], `bf16` defaults to `False` when training on a CPU without native bfloat16.

    A [`~trl.GRPOConfig`] converts with [`GRPORankConfig.from_grpo_config`] (`GRPORankTrainer` does it for you).
    """

    # Which of the fields declared here decide results (see `rlaifv_trl.manifest`; those of `GRPOConfig` and
    # `TrainingArguments` are listed in `rlaifv_trl.upstream_fields`): all of them.
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {"rank_advantage", "predicted_rank_score", "beta", "scale_rewards"}
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset()

    rank_advantage: str = field(
        default="gain",
        metadata={"help": f"How advantages come from the oracle's ranks: one of {list(ADVANTAGE_FORMS)}."},
    )
    predicted_rank_score: str = field(
        default="mean_log_prob",
        metadata={
            "help": "The policy's score whose order is its predicted ranking (rank_gap, ndcg_penalty): "
            f"one of {list(PREDICTED_RANK_SCORES)}."
        },
    )
    beta: float = field(default=0.04, metadata={"help": "KL coefficient to the reference policy."})
    scale_rewards: str = field(
        default="none", metadata={"help": "Must be 'none': rank advantages are not scaled by a standard deviation."}
    )

    def __post_init__(self):
        follow_cpu_bf16(self)
        super().__post_init__()
        if self.rank_advantage not in ADVANTAGE_FORMS:
            raise ValueError(f"rank_advantage must be one of {list(ADVANTAGE_FORMS)}, got {self.rank_advantage!r}")
        if self.predicted_rank_score not in PREDICTED_RANK_SCORES:
            raise ValueError(
                f"predicted_rank_score must be one of {list(PREDICTED_RANK_SCORES)}, got {self.predicted_rank_score!r}"
            )
        if self.scale_rewards != "none":
            raise ValueError(
                f"GRPO_rank does not scale advantages (scale_rewards={self.scale_rewards!r}): its advantages come from "
                "ranks. Leave scale_rewards='none', or use trl.GRPOTrainer for scaled scalar rewards."
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "GRPO_rank orders answers by the weighted sum of the reward functions: "
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} has no meaning here."
            )

    @classmethod
    def from_grpo_config(cls, config: GRPOConfig, **changes: Any) -> GRPORankConfig:
        """The GRPO_rank config with every setting of a `trl.GRPOConfig`, by these rules:

        - every field keeps its value (`beta` included: TRL's default there is 0, no KL term);
        - `scale_rewards` becomes `"none"`: rank advantages are not divided by a standard deviation;
        - `generation_batch_size` is derived again from `steps_per_generation` (a built `GRPOConfig` holds both, and
          only one may be given);
        - the GRPO_rank fields (`rank_advantage`, `predicted_rank_score`) take their defaults, or `changes`;
        - `changes` override any field. A setting GRPO_rank cannot honour (`multi_objective_aggregation` other than
          `"sum_then_normalize"`) is refused.
        """
        values = {item.name: getattr(config, item.name) for item in dataclasses.fields(config) if item.init}
        values = {name: value for name, value in values.items() if name in cls.__dataclass_fields__}
        values.update(generation_batch_size=None, scale_rewards="none")
        values.update(changes)
        return cls(**values)
