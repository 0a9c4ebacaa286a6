"""The GRPO_rank recipe's arguments and stages (Oracle-RLAIF), run by `rlaifv_trl.scripts.grpo_rank`: online GRPO
whose advantages come from an oracle's ranking of each prompt's answers, iteration by iteration (`num_rounds` of
them), the reference refreshed at each iteration."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..loading import ModelLoading, load_vlm
from ..ranking import DivideAndConquerRanker, ListwiseRanker, RankerReward
from ..trainer import GRPORankConfig, GRPORankTrainer
from .prompts import iteration_prompts
from .run import RecipeRun
from .shared_arguments import EvaluationArguments, PromptArguments, check_positive
from .training import ResumableCheckpoints, train_and_save


ORACLES = ("divide_and_conquer", "listwise")


@dataclass
class GRPORankArguments(EvaluationArguments, PromptArguments):
    r"""
    Arguments of the GRPO_rank recipe: which prompts ([`PromptArguments`]), how many iterations, which oracle ranks
    the answers, and how policies are evaluated ([`EvaluationArguments`]); the fields of those two are documented
    there and are flat fields of this class. The policy lives in TRL's `ModelConfig`, the training settings
    (generations per prompt, advantage form, KL, entropy bonus, learning rate, ...) in [`GRPORankConfig`], whose
    `output_dir` is the run folder.

    Parameters:
        num_rounds (`int`, *optional*, defaults to `4`):
            Iterations of the method: iteration k starts from the policy of iteration k - 1 (the base model for
            k = 1), which is also its reference (the KL anchor), and saves its policy as `models/iteration-k` of the
            run folder. Rerunning a finished run with more continues it (the iterations done stay as they are); fewer
            is refused. Not `num_iterations` as in the iterative DPO recipe: TRL's `GRPOConfig`, parsed beside, has a
            `num_iterations` of its own (μ, the updates per generation batch).
        oracle (`str`, *optional*, defaults to `"divide_and_conquer"`):
            The oracle ranker: `"divide_and_conquer"` (RLAIF-V's claim labels: a labeler VLM judges every claim; the
            answer with fewer rejected claims ranks higher, ties kept) or `"listwise"` (a model is shown the
            answers labelled 1..n and asked for their order, under `oracle_num_permutations` presentation orders;
            unusable replies fall back to the divide-and-conquer ranking with the same model).
        oracle_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            The oracle's model (a Hub id, a folder or a `builtin:` name); `None`: the base policy itself.
        oracle_tie_break (`str`, *optional*, defaults to `"keep"`):
            How the divide-and-conquer oracle orders answers with equal scores (see `DivideAndConquerRanker`).
        oracle_confirmed_claim_weight (`float`, *optional*, defaults to `0.0`):
            Credit per confirmed claim in the divide-and-conquer oracle's score (`0.0`: RLAIF-V's, minus the rejected
            claims), as `FeedbackConfig.confirmed_claim_weight` scores the DPO recipe's answers.
        oracle_num_permutations (`int`, *optional*, defaults to `3`):
            Presentation orders per prompt of the listwise oracle (position-bias control).
        oracle_batch_size (`int`, *optional*, defaults to `64`):
            Questions (divide and conquer) or queries (listwise) per oracle forward pass.
    """

    # Which of this class's own fields decide results (see `rlaifv_trl.manifest`; the shared bases list theirs); the
    # others may change in a resumed run (the number of iterations may grow: `RecipeRun` refuses shrinking).
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "oracle",
            "oracle_model_name_or_path",
            "oracle_tie_break",
            "oracle_confirmed_claim_weight",
            "oracle_num_permutations",
        }
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset({"num_rounds", "oracle_batch_size"})

    num_rounds: int = field(default=4, metadata={"help": "Iterations (the reference is refreshed at each)."})
    oracle: str = field(default="divide_and_conquer", metadata={"help": f"The oracle ranker: one of {ORACLES}."})
    oracle_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The oracle's model; None: the base policy itself."}
    )
    oracle_tie_break: str = field(default="keep", metadata={"help": "Tie rule of the divide-and-conquer oracle."})
    oracle_confirmed_claim_weight: float = field(
        default=0.0, metadata={"help": "Credit per confirmed claim of the divide-and-conquer oracle (0: RLAIF-V's)."}
    )
    oracle_num_permutations: int = field(default=3, metadata={"help": "Presentation orders (listwise oracle)."})
    oracle_batch_size: int = field(default=64, metadata={"help": "Questions or queries per oracle forward pass."})

    def __post_init__(self) -> None:
        super().__post_init__()  # prompts, evaluation
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES}, got {self.oracle!r}")
        check_positive(self, "num_rounds", "oracle_num_permutations", "oracle_batch_size")


def oracle_reward(script_args: GRPORankArguments, base_model: str, loading: ModelLoading) -> RankerReward:
    """The oracle ranker of `script_args` as a TRL reward function (only the order of its values counts)."""
    name = script_args.oracle_model_name_or_path or base_model
    model, processor = load_vlm(name, loading, "oracle")
    judge = DivideAndConquerRanker(
        model, processor, tie_break=script_args.oracle_tie_break, batch_size=script_args.oracle_batch_size,
        confirmed_claim_weight=script_args.oracle_confirmed_claim_weight,
    )  # fmt: skip
    if script_args.oracle == "divide_and_conquer":
        return RankerReward(judge, reward="neg_rank", name="divide_and_conquer_rank")
    ranker = ListwiseRanker(
        model, processor, num_permutations=script_args.oracle_num_permutations, fallback=judge,
        batch_size=script_args.oracle_batch_size,
    )  # fmt: skip
    return RankerReward(ranker, reward="neg_rank", name="listwise_rank")


def train_grpo_rank(
    run: RecipeRun,
    iteration: int,
    script_args: GRPORankArguments,
    training_args: GRPORankConfig,
    policy_loading: ModelLoading,
    reward: RankerReward,
    peft_config=None,
) -> dict[str, Any]:
    """GRPO_rank on the prompts of `iteration`, from the policy of `iteration - 1` (also the reference) to the
    policy of `iteration`; resumes from the last complete checkpoint; returns training metrics."""
    prompts = iteration_prompts(
        script_args.prompt_dataset, iteration, script_args.prompts_per_iteration, script_args.prompt_dataset_split,
        script_args.prompt_dataset_config, training_args.seed,
    )  # fmt: skip
    policy = policy_loading.locate(run.policy(iteration - 1))
    model_init_kwargs = {k: v for k, v in policy_loading.model_kwargs().items() if k != "quantization_config"}
    args = copy.deepcopy(training_args)  # not dataclasses.replace: GRPOConfig refuses its own derived batch fields
    args.output_dir, args.model_init_kwargs = str(run.training_dir(iteration)), model_init_kwargs
    holder = [
        GRPORankTrainer(
            model=policy,
            reward_funcs=reward,
            args=args,
            train_dataset=prompts,
            peft_config=peft_config,
            callbacks=[ResumableCheckpoints()],
        )  # fmt: skip
    ]
    return train_and_save(holder, run, iteration, policy, peft_config, policy_loading)
