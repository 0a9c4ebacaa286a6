"""Evaluators: functions that measure a policy, run by the recipe on the base policy, after every iteration and,
to choose the best checkpoint, during training.

An evaluator is any function

    evaluator(model, processor, *, num_prompts: int, temperature: float, max_new_tokens: int, seed: int)
        -> dict[str, float]

that answers `num_prompts` prompts of its own with the model and returns named metrics. The recipe's `evaluation`
list names evaluators by built-in name (`BUILTIN_EVALUATORS`) or by import path (`"package.module:function"`).
Metric names must be unique across the evaluators of a run; `metric_for_best_model` names one of them.

Each evaluator runs under a progress bar of its prompts: answers generated with `rlaifv_trl.generation.generate_batch`
(or `rlaifv_trl.benchmarks.generate_answers`) count on it, others with `rlaifv_trl.generation.prompts_answered`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, ProcessorMixin, TrainerCallback

from .generation import prompts_progress
from .plugins import import_function


Evaluator = Callable[..., dict[str, float]]

BUILTIN_EVALUATORS = {
    # CHAIR hallucination rates and recall on held-out ShapesWorld scenes (the synthetic test bed).
    "shapesworld": "rlaifv_trl.synthetic.recipe:shapesworld_chair",
    # POPE accuracy, F1 and yes-ratio of yes/no existence questions about the same held-out scenes.
    "shapesworld_pope": "rlaifv_trl.synthetic.recipe:shapesworld_pope",
    # Hallucination of video descriptions and accuracy on temporal questions about held-out MotionWorld clips.
    "motionworld": "rlaifv_trl.synthetic.motion_data:motionworld_eval",
}
# Evaluators on a dataset of your own (POPE's schema) come from a factory bound in a module of yours:
# `rlaifv_trl.benchmarks.pope_evaluator` (see its docstring and docs/evaluation.md).


@dataclass(frozen=True)
class EvaluationSettings:
    """What every evaluator of a run is called with."""

    num_prompts: int = 200
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


def load_evaluators(names: Sequence[str]) -> dict[str, Evaluator]:
    """The evaluators named in a config, imported now so that a wrong name fails before any long work."""
    evaluators = {}
    for name in names:
        path = BUILTIN_EVALUATORS.get(name, name)
        if ":" not in path:
            raise ValueError(
                f"Unknown evaluator {name!r}: use one of {sorted(BUILTIN_EVALUATORS)} or an import path "
                "'package.module:function'"
            )
        evaluators[name] = import_function(path)
    return evaluators


def run_evaluators(
    evaluators: dict[str, Evaluator],
    model: PreTrainedModel,
    processor: ProcessorMixin,
    settings: EvaluationSettings,
    disable_tqdm: bool = False,
) -> dict[str, float]:
    """Every evaluator's metrics, in one mapping (the model's training mode is restored afterwards). Each evaluator
    shows a progress bar of the prompts it answered, unless `disable_tqdm`."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        for name, evaluator in evaluators.items():
            with prompts_progress(f"Evaluating {name}", settings.num_prompts, disable=disable_tqdm):
                result = evaluator(
                    model,
                    processor,
                    num_prompts=settings.num_prompts,
                    temperature=settings.temperature,
                    max_new_tokens=settings.max_new_tokens,
                    seed=settings.seed,
                )
            if not isinstance(result, dict) or not all(isinstance(v, (int, float)) for v in result.values()):
                raise TypeError(f"Evaluator {name!r} must return a dict of metric names to numbers, got {result!r}")
            clash = sorted(set(result) & set(metrics))
            if clash:
                raise ValueError(f"Evaluator {name!r} returns metrics another evaluator returns too: {clash}")
            metrics.update({key: float(value) for key, value in result.items()})
    finally:
        model.train(was_training)
    return metrics


class EvaluatorCallback(TrainerCallback):
    """Adds the evaluators' metrics (prefixed `eval_`) to every evaluation of a `Trainer`, so that
    `metric_for_best_model` can name one of them and `load_best_model_at_end` keeps the best checkpoint."""

    def __init__(self, evaluators: dict[str, Evaluator], settings: EvaluationSettings):
        self.evaluators, self.settings = evaluators, settings

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        if model is None or processing_class is None or metrics is None:
            return
        disable_tqdm = args.disable_tqdm or not state.is_world_process_zero
        found = run_evaluators(self.evaluators, model, processing_class, self.settings, disable_tqdm)
        found = {f"eval_{key}": value for key, value in found.items()}
        metrics.update(found)  # read afterwards to pick the best checkpoint
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1].update(found)  # the Trainer logged this evaluation before this callback


@dataclass(frozen=True)
class PolicyEvaluation:
    """The recipes' evaluation stage: the named evaluators run on a policy given by name or path, loaded as the
    recipe loads its policy (`loading`), on the main process only (others return `None`, as does a run without
    evaluators), with a progress bar per evaluator unless `disable_tqdm`."""

    evaluators: dict[str, Evaluator]
    settings: EvaluationSettings
    loading: Any
    disable_tqdm: bool = False

    @classmethod
    def from_arguments(cls, script_args: Any, seed: int, loading: Any, disable_tqdm: bool = False) -> PolicyEvaluation:
        """From a recipe's `evaluation`, `evaluation_prompts`, `evaluation_temperature` and
        `evaluation_max_new_tokens` arguments (and its training arguments' `seed` and `disable_tqdm`)."""
        settings = EvaluationSettings(
            script_args.evaluation_prompts, script_args.evaluation_temperature, script_args.evaluation_max_new_tokens,
            seed,
        )  # fmt: skip
        return cls(load_evaluators(script_args.evaluation), settings, loading, disable_tqdm)

    def __call__(self, policy: str) -> dict[str, float] | None:
        from accelerate import PartialState

        from .loading import load_vlm

        if not self.evaluators or not PartialState().is_main_process:
            return None
        model, processor = load_vlm(policy, self.loading)
        return run_evaluators(self.evaluators, model, processor, self.settings, self.disable_tqdm)
