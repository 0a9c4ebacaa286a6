"""Arguments of the iterative RLAIF-V recipe (`recipes/iterative_dpo.py`), beside `FeedbackConfig`, `RLAIFVDPOConfig`
and TRL's `ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class IterativeDPOArguments:
    r"""
    Arguments of the iterative RLAIF-V recipe: which prompts, how many iterations, how policies are evaluated and
    where the artifacts go. The policy and its LoRA / quantization settings live in TRL's `ModelConfig`
    (`model_name_or_path`, `model_revision`, `dtype`, `use_peft`, `load_in_4bit`, ...), the feedback settings
    (candidates, splitter, labeler, pairs) in [`FeedbackConfig`] and the DPO settings in [`RLAIFVDPOConfig`], whose
    `output_dir` is the run folder and whose `seed` seeds the whole run. All four are flat: every field is a YAML key
    and a command-line flag.

    Parameters:
        prompt_dataset (`str`):
            Source of the (image, instruction) prompts: a Hub dataset id or a local folder with an image column
            (`images` or `image`) and a text column (`prompt`, `question`, `instruction` or `query`), or a function
            given by import path, `"package.module:function"`, called as `function(iteration=k, count=n, seed=s)`
            (k from 1) and returning such a dataset (`rlaifv_trl.synthetic.recipe:shapesworld_prompts` draws
            ShapesWorld scenes).
        prompt_dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Config of the prompt dataset.
        prompt_dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompt dataset.
        prompts_per_iteration (`int`, *optional*, defaults to `4000`):
            Prompts sampled and labeled in each iteration (disjoint across iterations).
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
        evaluation (`list[str]`, *optional*, defaults to `[]`):
            Evaluators run on the base policy and after every iteration (and on every checkpoint with
            `checkpoint_selection="best"`): built-in names (`"shapesworld"`: CHAIR on held-out ShapesWorld scenes)
            or import paths `"package.module:function"` of your own (see `rlaifv_trl.evaluation`). Empty (or
            `none`): no evaluation.
        evaluation_prompts (`int`, *optional*, defaults to `200`):
            Prompts each evaluator answers.
        evaluation_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of the evaluated answers (0: greedy).
        evaluation_max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest evaluated answer, in tokens.
        checkpoint_selection (`str`, *optional*, defaults to `"last"`):
            Which checkpoint starts the next iteration: the `"last"` one, or the `"best"` by `metric_for_best_model`
            of the training arguments (one of the evaluators' metrics, e.g. `chair_response` with
            `greater_is_better: false`), evaluated every quarter epoch as in the paper.
        dataset_repo (`str` or `None`, *optional*, defaults to `None`):
            Hub dataset repository for the preference data, one config per iteration. `None` keeps the artifacts in
            the run folder only (push them later with `rlaifv-trl push`).
        model_repo (`str` or `None`, *optional*, defaults to `None`):
            Hub model repository for the trained policies, one branch per iteration (`main` = latest).
        private (`bool`, *optional*, defaults to `False`):
            Create the Hub repositories as private.
        hub_failure (`str`, *optional*, defaults to `"stop"`):
            What to do when the Hub cannot be reached at the start or a push fails after its retries: `"stop"` the
            run, or `"continue"` it (the artifacts stay in the run folder, and the summary says how to push them later
            with `rlaifv-trl push`). A token the Hub rejects stops the run either way.
        hub_retry_attempts (`int`, *optional*, defaults to `5`):
            Tries of each Hub request in all, with exponential backoff between them.
        hub_retry_initial_delay (`float`, *optional*, defaults to `2.0`):
            Seconds before the first retry; doubled after each failure (at most 60).
        license (`str` or `None`, *optional*, defaults to `None`):
            License written in the dataset and model cards.
    """

    # Which fields decide results (see `rlaifv_trl.manifest`); the others may change in a resumed run: where
    # artifacts are pushed and how, and the number of iterations, which may grow (`RecipeRun` refuses shrinking).
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "prompt_dataset", "prompt_dataset_config", "prompt_dataset_split", "prompts_per_iteration",
            "seed_preference_dataset", "mix_preference_dataset", "mix_pairs_per_iteration",
            "preference_dataset_config", "evaluation", "evaluation_prompts", "evaluation_temperature",
            "evaluation_max_new_tokens", "checkpoint_selection",
        }
    )  # fmt: skip
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset(
        {
            "num_iterations", "dataset_repo", "model_repo", "private", "hub_failure", "hub_retry_attempts",
            "hub_retry_initial_delay", "license",
        }
    )  # fmt: skip

    prompt_dataset: str | None = field(
        default=None, metadata={"help": "Prompts: Hub id, local folder, or package.module:function."}
    )
    prompt_dataset_config: str | None = field(default=None, metadata={"help": "Config of the prompt dataset."})
    prompt_dataset_split: str = field(default="train", metadata={"help": "Split of the prompt dataset."})
    prompts_per_iteration: int = field(default=4000, metadata={"help": "Prompts per iteration (disjoint)."})
    num_iterations: int = field(default=4, metadata={"help": "Iterations of sample, label, pairs, DPO."})
    seed_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset replacing iteration 1's generated feedback."}
    )
    mix_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset mixed into every iteration."}
    )
    mix_pairs_per_iteration: int = field(default=0, metadata={"help": "Pairs of the mix dataset per iteration."})
    preference_dataset_config: str | None = field(default=None, metadata={"help": "Config of the seed/mix datasets."})
    evaluation: list[str] = field(
        default_factory=list, metadata={"help": "Evaluators: built-in names (shapesworld) or package.module:function."}
    )
    evaluation_prompts: int = field(default=200, metadata={"help": "Prompts each evaluator answers."})
    evaluation_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: greedy)."})
    evaluation_max_new_tokens: int = field(default=64, metadata={"help": "Longest evaluated answer, in tokens."})
    checkpoint_selection: str = field(
        default="last", metadata={"help": "Checkpoint for the next iteration: last or best (metric_for_best_model)."}
    )
    dataset_repo: str | None = field(default=None, metadata={"help": "Hub dataset repo (one config per iteration)."})
    model_repo: str | None = field(default=None, metadata={"help": "Hub model repo (one branch per iteration)."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repositories as private."})
    hub_failure: str = field(
        default="stop", metadata={"help": "When the Hub is unavailable or a push fails: stop or continue."}
    )
    hub_retry_attempts: int = field(default=5, metadata={"help": "Tries of each Hub request, with backoff."})
    hub_retry_initial_delay: float = field(default=2.0, metadata={"help": "Seconds before the first Hub retry."})
    license: str | None = field(default=None, metadata={"help": "License written in the cards."})

    def __post_init__(self) -> None:
        if not self.prompt_dataset:
            raise ValueError(
                "Set prompt_dataset: a Hub dataset id or local folder of (image, question) rows, or a function "
                "'package.module:function' (e.g. rlaifv_trl.synthetic.recipe:shapesworld_prompts for ShapesWorld)."
            )
        self.evaluation = [name for name in (self.evaluation or []) if name.lower() not in ("none", "")]
        checks = {
            "hub_failure": (self.hub_failure, ("stop", "continue")),
            "checkpoint_selection": (self.checkpoint_selection, ("last", "best")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name in ("num_iterations", "prompts_per_iteration", "evaluation_prompts", "evaluation_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
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
