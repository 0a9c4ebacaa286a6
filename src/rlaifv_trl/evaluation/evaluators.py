"""Evaluators: functions that measure a policy, run by the recipe on the base policy, after every iteration and,
to choose the best checkpoint, during training.

An evaluator is any function

    evaluator(model, processor, *, num_prompts: int, temperature: float, max_new_tokens: int, seed: int)
        -> dict[str, float]

that answers `num_prompts` prompts of its own with the model and returns named metrics. The recipe's `evaluation`
list names evaluators:

- `pope` or `pope=<dataset>`: POPE on a dataset in POPE's schema (a Hub id or a local path; `lmms-lab/POPE` by
  default), see `pope_evaluator`;
- `chair=<dataset>`: CHAIR with the COCO vocabulary on a dataset of images and their objects, see `chair_evaluator`;
- a name an installed package registers (entry-point group `rlaifv_trl.evaluators`; `evaluator_names()` lists
  them, e.g. the test bed's `shapesworld`);
- an import path `"package.module:function"`.

Metric names must be unique across the evaluators of a run; `metric_for_best_model` names one of them.

Each evaluator runs under a progress bar of its prompts: answers generated with `rlaifv_trl.generation.generate_batch`
(or `rlaifv_trl.evaluation.generate_answers`) count on it, others with `rlaifv_trl.generation.prompts_answered`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, ProcessorMixin, TrainerCallback

from ..generation import prompts_progress
from ..metrics import chair_metrics, pope_metrics, vocabulary_extractor
from ..plugins import EVALUATORS, import_function, is_import_path, registered_function, registered_names
from ..validation import RowValidation
from .hallucination import (
    BenchmarkRows,
    chair_rows,
    check_columns,
    dataset_folder,
    generate_answers,
    load_table,
    pope_rows,
    seeded_subset,
)


Evaluator = Callable[..., dict[str, float]]

DATASET_EVALUATORS = ("pope", "chair")


@dataclass(frozen=True)
class EvaluationSettings:
    """What every evaluator of a run is called with."""

    num_prompts: int = 200
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    extra_temperatures: tuple[float, ...] = ()


def decoding_suffix(temperature: float) -> str:
    """The suffix of the metrics at a further temperature: `@greedy` for 0, else `@T=<temperature>`."""
    return "@greedy" if not temperature else f"@T={temperature:g}"


def evaluator_names() -> list[str]:
    """The evaluators a config may name without an import path: `pope`, `chair=<dataset>` and the registered ones."""
    return [*DATASET_EVALUATORS, *registered_names(EVALUATORS)]


def load_evaluator(name: str) -> Evaluator:
    """The evaluator `name` names (see the module's docstring), imported now so that a wrong name fails early."""
    kind, sep, dataset = name.partition("=")
    if kind in DATASET_EVALUATORS and (sep or kind == "pope"):
        if sep and not dataset:
            raise ValueError(f"Evaluator {name!r} names no dataset: write {kind}=<Hub id or local path>")
        if kind == "pope":
            return pope_evaluator(dataset or "lmms-lab/POPE")
        return chair_evaluator(dataset)
    if kind == "chair":
        raise ValueError("The chair evaluator needs a dataset: chair=<Hub id or local path> (columns image, objects)")
    registered = registered_function(EVALUATORS, name)
    if registered is not None:
        return registered
    if not is_import_path(name):
        raise ValueError(
            f"Unknown evaluator {name!r}: use one of {evaluator_names()} (pope and chair take =<dataset>) or an import "
            "path 'package.module:function'"
        )
    return import_function(name)


def load_evaluators(names: Sequence[str]) -> dict[str, Evaluator]:
    """The evaluators named in a config, imported now so that a wrong name fails before any long work."""
    return {name: load_evaluator(name) for name in names}


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
    decodings = [(settings.temperature, ""), *((t, decoding_suffix(t)) for t in settings.extra_temperatures)]
    try:
        for temperature, suffix in decodings:
            found: dict[str, float] = {}
            for name, evaluator in evaluators.items():
                with prompts_progress(f"Evaluating {name}{suffix}", settings.num_prompts, disable=disable_tqdm):
                    result = evaluator(
                        model,
                        processor,
                        num_prompts=settings.num_prompts,
                        temperature=temperature,
                        max_new_tokens=settings.max_new_tokens,
                        seed=settings.seed,
                    )
                if not isinstance(result, dict) or not all(isinstance(v, (int, float)) for v in result.values()):
                    raise TypeError(
                        f"Evaluator {name!r} must return a dict of metric names to numbers, got {result!r}"
                    )
                clash = sorted(set(result) & set(found))
                if clash:
                    raise ValueError(f"Evaluator {name!r} returns metrics another evaluator returns too: {clash}")
                found.update({key: float(value) for key, value in result.items()})
            metrics.update({key + suffix: value for key, value in found.items()})
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
        """From a recipe's `evaluation`, `evaluation_prompts`, `evaluation_temperature`,
        `evaluation_extra_temperatures` and `evaluation_max_new_tokens` arguments (and its training arguments' `seed` and `disable_tqdm`)."""
        settings = EvaluationSettings(
            script_args.evaluation_prompts, script_args.evaluation_temperature, script_args.evaluation_max_new_tokens,
            seed, tuple(script_args.evaluation_extra_temperatures),
        )  # fmt: skip
        return cls(load_evaluators(script_args.evaluation), settings, loading, disable_tqdm)

    def __call__(self, policy: str) -> dict[str, float] | None:
        from accelerate import PartialState

        from ..loading import load_vlm

        if not self.evaluators or not PartialState().is_main_process:
            return None
        model, processor = load_vlm(policy, self.loading)
        return run_evaluators(self.evaluators, model, processor, self.settings, self.disable_tqdm)


def pope_evaluator(
    dataset: str,
    split: str | None = None,
    prefix: str = "pope",
    batch_size: int = 8,
    validation: RowValidation | None = None,
) -> Evaluator:
    """A recipe evaluator on a POPE-schema dataset (a local path or a Hub id), returning `<prefix>_accuracy`,
    `<prefix>_f1` and `<prefix>_yes_ratio`. A config names it `pope=<dataset>`; for other settings (a split, a
    prefix), bind it in a module of yours and name that by import path:

    ```python
    # my_evaluators.py; in the recipe config: evaluation: [my_evaluators:pope]
    from rlaifv_trl.evaluation import pope_evaluator

    pope = pope_evaluator("lmms-lab/POPE", split="test")
    ```

    Each evaluation answers a seeded random subset of `num_prompts` questions. Rows are checked like
    `rlaifv-trl evaluate`'s (`validation`; images given by path are read from the dataset's own folder by default).
    """

    def metrics(answers: list[str], rows: BenchmarkRows) -> dict[str, float]:
        found = pope_metrics(answers, rows.references)
        return {f"{prefix}_{key}": float(found[key]) for key in ("accuracy", "f1", "yes_ratio")}

    return _dataset_evaluator(dataset, split, "pope", metrics, batch_size, validation)


def chair_evaluator(
    dataset: str,
    split: str | None = None,
    prefix: str = "chair",
    vocabulary: str = "coco",
    batch_size: int = 8,
    validation: RowValidation | None = None,
) -> Evaluator:
    """A recipe evaluator on a dataset of images and the objects in them (`rlaifv-trl evaluate --benchmark chair`'s
    columns: `image` or `images`, `objects`, optionally `question` or `prompt`), returning `<prefix>_response`,
    `<prefix>_mention` (CHAIR's response and mention hallucination rates, lower is better) and `<prefix>_recall`,
    with the objects read with `vocabulary` (COCO's by default). A config names it `chair=<dataset>`.

    Each evaluation describes a seeded random subset of `num_prompts` images; rows are checked as in `pope_evaluator`.
    """

    def metrics(answers: list[str], rows: BenchmarkRows) -> dict[str, float]:
        found = chair_metrics(answers, rows.references, vocabulary=vocabulary)
        names = {"response_rate": "response", "mention_rate": "mention", "recall": "recall"}
        return {f"{prefix}_{name}": float(found[key]) for key, name in names.items()}

    vocabulary_extractor(vocabulary)  # an unknown vocabulary fails when the config is read
    return _dataset_evaluator(dataset, split, "chair", metrics, batch_size, validation)


def _dataset_evaluator(
    dataset: str,
    split: str | None,
    benchmark: str,
    metrics: Callable[[list[str], BenchmarkRows], dict[str, float]],
    batch_size: int,
    validation: RowValidation | None,
) -> Evaluator:
    """An evaluator answering a seeded subset of a benchmark dataset's rows (read once, on first use)."""
    loaded: list[Dataset] = []
    validation = (validation or RowValidation()).rooted_at(dataset_folder(dataset))
    read_rows = pope_rows if benchmark == "pope" else chair_rows

    def evaluator(
        model: PreTrainedModel,
        processor: ProcessorMixin,
        *,
        num_prompts: int,
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> dict[str, float]:
        if not loaded:  # read once: the recipe evaluates after every iteration
            table = load_table(dataset, split)
            check_columns(table, benchmark)
            loaded.append(table)
        tokenizer = getattr(processor, "tokenizer", processor)
        rows = read_rows(seeded_subset(loaded[0], num_prompts, seed), validation, tokenizer)
        answers = generate_answers(
            model, processor, rows, batch_size=batch_size, temperature=temperature, max_new_tokens=max_new_tokens,
            seed=seed,
        )  # fmt: skip
        return metrics(answers, rows)

    return evaluator
