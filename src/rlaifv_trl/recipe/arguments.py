"""Arguments of the iterative RLAIF-V recipe (`rlaifv_trl.scripts.iterative_dpo`), beside `FeedbackConfig`,
`RLAIFVDPOConfig` and TRL's `ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .shared_arguments import EvaluationArguments, HubArguments, PromptArguments, check_positive


CHECKPOINT_SELECTIONS = ("last", "best")


@dataclass
class IterativeDPOArguments(HubArguments, EvaluationArguments, PromptArguments):
    r"""
    Arguments of the iterative RLAIF-V recipe: which prompts ([`PromptArguments`]), how many iterations, which
    published preference data, how policies are evaluated ([`EvaluationArguments`]) and where the artifacts go
    ([`HubArguments`]); the fields of those three are documented there and are flat fields of this class. The policy
    and its LoRA / quantization settings live in TRL's `ModelConfig` (`model_name_or_path`, `model_revision`, `dtype`,
    `use_peft`, `load_in_4bit`, ...), the feedback settings (candidates, splitter, labeler, pairs) in
    [`FeedbackConfig`] and the DPO settings in [`RLAIFVDPOConfig`], whose `output_dir` is the run folder and whose
    `seed` seeds the whole run. All are flat: every field is a YAML key and a command-line flag.

    Parameters:
        num_iterations (`int`, *optional*, defaults to `4`):
            Iterations of sample -> label -> pairs -> DPO. Rerunning a finished run with more continues it (the
            iterations done stay as they are); fewer is refused.
        seed_preference_dataset (`str` or `None`, *optional*, defaults to `None`):
            A published preference dataset (openbmb/RLAIF-V-Dataset, trl-lib/rlaif-v, a run's dataset repo, or a
            local folder) whose pairs replace the generated feedback of iteration 1.
        mix_preference_dataset (`str` or `None`, *optional*, defaults to `None`):
            A published preference dataset mixed into every iteration's generated pairs.
        mix_pairs_per_iteration (`int`, *optional*, defaults to `0`):
            Pairs of `mix_preference_dataset` added to each iteration (disjoint across iterations).
        preference_dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Config of the seed and mix preference datasets.
        checkpoint_selection (`str`, *optional*, defaults to `"last"`):
            Which checkpoint starts the next iteration: the `"last"` one, or the `"best"` by `metric_for_best_model`
            of the training arguments (one of the evaluators' metrics, e.g. `chair_response` with
            `greater_is_better: false`), evaluated every quarter epoch as in the paper.
    """

    # Which of this class's own fields decide results (see `rlaifv_trl.manifest`; the shared bases list theirs); the
    # number of iterations may change in a resumed run: it may grow (`RecipeRun` refuses shrinking).
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "seed_preference_dataset", "mix_preference_dataset", "mix_pairs_per_iteration",
            "preference_dataset_config", "checkpoint_selection",
        }
    )  # fmt: skip
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset({"num_iterations"})

    num_iterations: int = field(default=4, metadata={"help": "Iterations of sample, label, pairs, DPO."})
    seed_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset replacing iteration 1's generated feedback."}
    )
    mix_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset mixed into every iteration."}
    )
    mix_pairs_per_iteration: int = field(default=0, metadata={"help": "Pairs of the mix dataset per iteration."})
    preference_dataset_config: str | None = field(default=None, metadata={"help": "Config of the seed/mix datasets."})
    checkpoint_selection: str = field(
        default="last", metadata={"help": "Checkpoint for the next iteration: last or best (metric_for_best_model)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # prompts, evaluation, Hub
        if self.checkpoint_selection not in CHECKPOINT_SELECTIONS:
            raise ValueError(
                f"checkpoint_selection must be one of {CHECKPOINT_SELECTIONS}, got {self.checkpoint_selection!r}"
            )
        check_positive(self, "num_iterations")
        if self.mix_pairs_per_iteration and not self.mix_preference_dataset:
            raise ValueError("mix_pairs_per_iteration needs mix_preference_dataset")
        if self.checkpoint_selection == "best" and not self.evaluation:
            raise ValueError('checkpoint_selection="best" needs an evaluator (e.g. evaluation: [shapesworld])')


def check_recipe_arguments(script_args: IterativeDPOArguments, training_args, model_args, row_validation=None) -> None:
    """Refuse, before any long work, training, model and row settings that the recipe sets itself or cannot
    honour."""
    problems = []
    if row_validation is not None and row_validation.strict:
        problems.append("strict is not used: set strict_rows, which applies to every dataset the recipe reads")
    if model_args.model_name_or_path is None:
        problems.append("set model_name_or_path: the policy to align (a Hub id, a folder, or builtin:<name>)")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        problems.append("a 4/8-bit policy can only be trained with a LoRA adapter: set use_peft")
    if training_args.push_to_hub:
        problems.append("push_to_hub is not used: set model_repo (one branch per iteration) and dataset_repo")
    if training_args.resume_from_checkpoint:
        problems.append("resume_from_checkpoint is not used: run the same command again and the run resumes itself")
    if script_args.checkpoint_selection == "last" and getattr(training_args.eval_strategy, "value", "no") != "no":
        problems.append("evaluation during training comes with checkpoint_selection: best (leave eval_strategy unset)")
    if script_args.checkpoint_selection == "best" and not training_args.metric_for_best_model:
        problems.append(
            "checkpoint_selection: best needs metric_for_best_model (one of the evaluators' metrics, e.g. "
            "chair_response) and greater_is_better"
        )
    if problems:
        raise ValueError("The recipe cannot run with these settings:\n- " + "\n- ".join(problems))
