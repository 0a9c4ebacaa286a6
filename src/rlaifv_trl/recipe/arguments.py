"""Arguments of the iterative RLAIF-V recipe (`recipes/iterative_dpo.py`), beside `RLAIFVDPOConfig`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..feedback import FeedbackConfig


# FeedbackConfig fields that the recipe sets itself, per iteration or from the training arguments.
RECIPE_OWNED_FEEDBACK_FIELDS = (
    "output_dir", "overwrite_output_dir", "seed", "iteration", "disable_tqdm", "model_init_kwargs", "trust_remote_code",
    "labeler_model_name_or_path",
)  # fmt: skip


@dataclass
class IterativeDPOArguments:
    r"""
    Arguments of the iterative RLAIF-V recipe: which labeler, which prompts, how many iterations, where the
    artifacts go. The base policy and LoRA settings live in TRL's `ModelConfig` (`model_name_or_path`, unset for the
    built-in `"builtin:shapesworld-llava"`, `dtype`, `use_peft`, `lora_r`, ...), training settings in [`RLAIFVDPOConfig`] (its `output_dir` is the run folder) and
    feedback settings in the `feedback` mapping (the fields of [`FeedbackConfig`]).

    Parameters:
        labeler_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            The labeler VLM (Hub id, local folder, or `"builtin:shapesworld-llava-labeler"`). `None` means
            self-feedback: each iteration's policy labels its own claims.
        prompt_dataset (`str`, *optional*, defaults to `"shapesworld"`):
            Source of the (image, instruction) prompts: `"shapesworld"`, or a Hub id / local folder with an image
            column (`images` or `image`) and a text column (`prompt`, `question`, ...).
        prompt_dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Config of the prompt dataset.
        prompt_dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompt dataset.
        prompts_per_iteration (`int`, *optional*, defaults to `4000`):
            Prompts sampled and labeled in each iteration (disjoint across iterations).
        num_iterations (`int`, *optional*, defaults to `4`):
            Iterations of sample -> label -> pairs -> DPO.
        seed_preference_dataset (`str` or `None`, *optional*, defaults to `None`):
            A published preference dataset (openbmb/RLAIF-V-Dataset, trl-lib/rlaif-v, a run's dataset repo, or a
            local folder) whose pairs replace the generated feedback of iteration 0.
        mix_preference_dataset (`str` or `None`, *optional*, defaults to `None`):
            A published preference dataset mixed into every iteration's generated pairs.
        mix_pairs_per_iteration (`int`, *optional*, defaults to `0`):
            Pairs of `mix_preference_dataset` added to each iteration (disjoint across iterations).
        preference_dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Config of the seed and mix preference datasets.
        feedback (`dict` or `str`, *optional*, defaults to `{}`):
            Settings of [`FeedbackConfig`] (a mapping in YAML, a JSON string on the command line). The recipe sets
            `output_dir`, `seed`, `iteration`, `disable_tqdm`, `model_init_kwargs`, `trust_remote_code` and the labeler
            (`labeler_model_name_or_path` above) itself.
        dataset_repo (`str` or `None`, *optional*, defaults to `None`):
            Hub dataset repository for the preference data, one config per iteration. `None` keeps the artifacts in
            the run folder only (push them later with `rlaifv-trl push`).
        model_repo (`str` or `None`, *optional*, defaults to `None`):
            Hub model repository for the trained policies, one branch per iteration (`main` = latest).
        private (`bool`, *optional*, defaults to `False`):
            Create the Hub repositories as private.
        hub_failure (`str`, *optional*, defaults to `"stop"`):
            What to do when a push fails after its retries: `"stop"` the run, or `"continue"` it (the artifacts stay
            in the run folder and the log says how to push them later).
        hub_retry_attempts (`int`, *optional*, defaults to `5`):
            Tries of each Hub request in all, with exponential backoff between them.
        hub_retry_initial_delay (`float`, *optional*, defaults to `2.0`):
            Seconds before the first retry; doubled after each failure (at most 60).
        license (`str` or `None`, *optional*, defaults to `None`):
            License written in the dataset and model cards.
        checkpoint_selection (`str`, *optional*, defaults to `"last"`):
            Which checkpoint starts the next iteration: the `"last"` one, or the `"best"` by the evaluation metric
            (`metric_for_best_model` of the training arguments; the ShapesWorld evaluation adds `eval_chair_response`).
        evaluation (`str` or `None`, *optional*, defaults to `"shapesworld"`):
            `"shapesworld"`: CHAIR hallucination rates of the base policy and of each iteration on held-out
            ShapesWorld scenes. `None`: no evaluation.
        eval_prompts (`int`, *optional*, defaults to `200`):
            Held-out prompts of the evaluation.
        eval_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of the evaluation.
        eval_max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest evaluated answer, in tokens.
    """

    labeler_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Labeler VLM; None: self-feedback (each policy labels its own claims)."}
    )
    prompt_dataset: str = field(
        default="shapesworld", metadata={"help": "Prompt source: shapesworld, Hub id or folder."}
    )
    prompt_dataset_config: str | None = field(default=None, metadata={"help": "Config of the prompt dataset."})
    prompt_dataset_split: str = field(default="train", metadata={"help": "Split of the prompt dataset."})
    prompts_per_iteration: int = field(default=4000, metadata={"help": "Prompts per iteration (disjoint)."})
    num_iterations: int = field(default=4, metadata={"help": "Iterations of sample, label, pairs, DPO."})
    seed_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset replacing iteration 0's generated feedback."}
    )
    mix_preference_dataset: str | None = field(
        default=None, metadata={"help": "Published preference dataset mixed into every iteration."}
    )
    mix_pairs_per_iteration: int = field(default=0, metadata={"help": "Pairs of the mix dataset per iteration."})
    preference_dataset_config: str | None = field(default=None, metadata={"help": "Config of the seed/mix datasets."})
    feedback: dict | str | None = field(
        default_factory=dict, metadata={"help": "FeedbackConfig settings (YAML mapping or JSON string)."}
    )
    dataset_repo: str | None = field(default=None, metadata={"help": "Hub dataset repo (one config per iteration)."})
    model_repo: str | None = field(default=None, metadata={"help": "Hub model repo (one branch per iteration)."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repositories as private."})
    hub_failure: str = field(default="stop", metadata={"help": "After a failed push: stop or continue."})
    hub_retry_attempts: int = field(default=5, metadata={"help": "Tries of each Hub request, with backoff."})
    hub_retry_initial_delay: float = field(default=2.0, metadata={"help": "Seconds before the first Hub retry."})
    license: str | None = field(default=None, metadata={"help": "License written in the cards."})
    checkpoint_selection: str = field(
        default="last", metadata={"help": "Checkpoint for the next iteration: last or best."}
    )
    evaluation: str | None = field(
        default="shapesworld", metadata={"help": "shapesworld (CHAIR on held-out scenes) or None."}
    )
    eval_prompts: int = field(default=200, metadata={"help": "Held-out prompts of the evaluation."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the evaluation."})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Longest evaluated answer, in tokens."})

    def __post_init__(self) -> None:
        if isinstance(self.feedback, str):
            self.feedback = json.loads(self.feedback) if self.feedback.strip() else {}
        self.feedback = dict(self.feedback or {})
        known = {f.name for f in fields(FeedbackConfig)}
        unknown = sorted(set(self.feedback) - known)
        if unknown:
            raise ValueError(f"Unknown feedback settings {unknown}; the fields of FeedbackConfig are {sorted(known)}")
        owned = sorted(set(self.feedback) & set(RECIPE_OWNED_FEEDBACK_FIELDS))
        if owned:
            raise ValueError(f"The recipe sets {owned} itself: remove them from `feedback`")
        if self.evaluation in ("none", "None", ""):
            self.evaluation = None
        checks = {
            "hub_failure": (self.hub_failure, ("stop", "continue")),
            "checkpoint_selection": (self.checkpoint_selection, ("last", "best")),
            "evaluation": (self.evaluation, ("shapesworld", None)),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.num_iterations < 1 or self.prompts_per_iteration < 1:
            raise ValueError("num_iterations and prompts_per_iteration must be at least 1")
        if self.mix_pairs_per_iteration and not self.mix_preference_dataset:
            raise ValueError("mix_pairs_per_iteration needs mix_preference_dataset")
        if self.checkpoint_selection == "best" and self.evaluation is None:
            raise ValueError('checkpoint_selection="best" needs an evaluation (evaluation="shapesworld")')

    def feedback_config(self, **recipe_fields: Any) -> FeedbackConfig:
        """The `FeedbackConfig` of one iteration: the user's settings plus the fields the recipe owns."""
        return FeedbackConfig(**self.feedback, **recipe_fields)
