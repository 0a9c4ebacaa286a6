"""Arguments both recipes read, shared the way TRL shares `DatasetMixtureConfig`: prompts, evaluation and, for the
iterative DPO recipe, the Hub. A recipe's argument class inherits them and stays one flat dataclass, so every field is
a YAML key and a flag. Each class checks its own fields, lists them in its own `result_fields` /
`fields_not_affecting_results` (`rlaifv_trl.manifest.result_fields` joins the lists along the class hierarchy) and
documents them in its own docstring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


HUB_FAILURES = ("stop", "continue")


class CheckedArguments:
    """The end of the chain of checks: each argument class's `__post_init__` runs its bases' checks, then its own."""

    def __post_init__(self) -> None:
        pass


def check_positive(arguments: object, *names: str) -> None:
    """Refuse any of the integer fields `names` of `arguments` below 1."""
    for name in names:
        if getattr(arguments, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(arguments, name)}")


@dataclass
class PromptArguments(CheckedArguments):
    r"""
    Where a recipe's (image or video, instruction) prompts come from, and how many each iteration takes.

    Parameters:
        prompt_dataset (`str`):
            Source of the prompts: a Hub dataset id or a local folder with an image column (`images` or `image`) and
            a text column (`prompt`, `question`, `instruction` or `query`), or a function given by import path,
            `"package.module:function"`, called as `function(iteration=k, count=n, seed=s)` (k from 1) and returning
            such a dataset (`rlaifv_testbed.recipe:shapesworld_prompts` draws ShapesWorld scenes).
        prompt_dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Config of the prompt dataset.
        prompt_dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompt dataset.
        prompts_per_iteration (`int`, *optional*, defaults to `4000`):
            Prompts each iteration takes (disjoint across iterations): the iterative DPO recipe samples and labels
            answers to them, GRPO_rank trains on them online (`num_generations` answers each per epoch).
    """

    # Which fields decide results (see `rlaifv_trl.manifest`): all of them.
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {"prompt_dataset", "prompt_dataset_config", "prompt_dataset_split", "prompts_per_iteration"}
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset()

    prompt_dataset: str | None = field(
        default=None, metadata={"help": "Prompts: Hub id, local folder, or package.module:function."}
    )
    prompt_dataset_config: str | None = field(default=None, metadata={"help": "Config of the prompt dataset."})
    prompt_dataset_split: str = field(default="train", metadata={"help": "Split of the prompt dataset."})
    prompts_per_iteration: int = field(default=4000, metadata={"help": "Prompts per iteration (disjoint)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prompt_dataset:
            raise ValueError(
                "Set prompt_dataset: a Hub dataset id or local folder of (image, question) rows, or a function "
                "'package.module:function' (e.g. rlaifv_testbed.recipe:shapesworld_prompts for ShapesWorld)."
            )
        check_positive(self, "prompts_per_iteration")


@dataclass
class EvaluationArguments(CheckedArguments):
    r"""
    How a recipe evaluates the base policy and the policy of every iteration (see `rlaifv_trl.evaluation`).

    Parameters:
        evaluation (`list[str]`, *optional*, defaults to `[]`):
            Evaluators run on the base policy and after every iteration (and, in the iterative DPO recipe with
            `checkpoint_selection="best"`, on every checkpoint): `"pope"` or `"pope=<dataset>"` (POPE on a Hub or
            local dataset, `lmms-lab/POPE` by default), `"chair=<dataset>"` (CHAIR with COCO's vocabulary), names
            installed packages register (the test bed's `"shapesworld"`: CHAIR on held-out ShapesWorld scenes) or
            import paths `"package.module:function"` of your own. Empty (or `none`): no evaluation.
        evaluation_prompts (`int`, *optional*, defaults to `200`):
            Prompts each evaluator answers.
        evaluation_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of the evaluated answers (0: greedy).
        evaluation_extra_temperatures (`list[float]`, *optional*, defaults to `[]`):
            Further temperatures every evaluator also runs at (0: greedy), so that a policy is compared with the
            base at several decodings (a lower temperature alone lowers hallucination rates). Their metrics are
            named with a suffix, `@greedy` or `@T=<temperature>` (e.g. `chair_response@greedy`); the metrics at
            `evaluation_temperature` keep their plain names.
        evaluation_max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest evaluated answer, in tokens.
    """

    # Which fields decide results (see `rlaifv_trl.manifest`): all of them (the recorded metrics depend on them).
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "evaluation",
            "evaluation_prompts",
            "evaluation_temperature",
            "evaluation_extra_temperatures",
            "evaluation_max_new_tokens",
        }
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset()

    evaluation: list[str] = field(
        default_factory=list,
        metadata={"help": "Evaluators: pope[=dataset], chair=dataset, registered names, package.module:function."},
    )
    evaluation_prompts: int = field(default=200, metadata={"help": "Prompts each evaluator answers."})
    evaluation_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: greedy)."})
    evaluation_extra_temperatures: list[float] = field(
        default_factory=list,
        metadata={"help": "Further temperatures evaluated (0: greedy); their metrics are suffixed @greedy, @T=<t>."},
    )
    evaluation_max_new_tokens: int = field(default=64, metadata={"help": "Longest evaluated answer, in tokens."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.evaluation = [name for name in (self.evaluation or []) if name.lower() not in ("none", "")]
        check_positive(self, "evaluation_prompts", "evaluation_max_new_tokens")
        self.evaluation_extra_temperatures = [float(t) for t in self.evaluation_extra_temperatures or []]
        for temperature in (self.evaluation_temperature, *self.evaluation_extra_temperatures):
            if temperature < 0:
                raise ValueError(f"evaluation_temperature must be at least 0, got {temperature}")
        if self.evaluation_temperature in self.evaluation_extra_temperatures:
            raise ValueError(
                f"evaluation_extra_temperatures repeats evaluation_temperature ({self.evaluation_temperature})"
            )


@dataclass
class HubArguments(CheckedArguments):
    r"""
    Where a recipe pushes its artifacts on the Hub, and what it does when the Hub fails.

    Parameters:
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

    # Where artifacts are pushed and how may change in a resumed run: none of these decide results.
    result_fields: ClassVar[frozenset[str]] = frozenset()
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset(
        {
            "dataset_repo", "model_repo", "private", "hub_failure", "hub_retry_attempts", "hub_retry_initial_delay",
            "license",
        }
    )  # fmt: skip

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
        super().__post_init__()
        if self.hub_failure not in HUB_FAILURES:
            raise ValueError(f"hub_failure must be one of {HUB_FAILURES}, got {self.hub_failure!r}")
        check_positive(self, "hub_retry_attempts")
        if self.hub_retry_initial_delay < 0:
            raise ValueError(f"hub_retry_initial_delay must be at least 0, got {self.hub_retry_initial_delay}")
