"""ShapesWorld as a source of prompts and an evaluator for the recipe (the embedded default's test bed).

```yaml
prompt_dataset: rlaifv_testbed.recipe:shapesworld_prompts
evaluation: [shapesworld, shapesworld_pope]   # this module's shapesworld_chair and shapesworld_pope (registered
                                              # in the entry-point group rlaifv_trl.evaluators)
```

`shapesworld_pope_adversarial` asks about the absent partners of `bias.COOCCURRENCE` instead (POPE's adversarial
split), the claims a policy with co-occurrence priors hallucinates.
"""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedModel, ProcessorMixin

from rlaifv_trl.evaluation.hallucination import BenchmarkRows, generate_answers
from rlaifv_trl.metrics.pope import pope_metrics

from .adversarial import adversarial_question_rows
from .benchmark import shapesworld_question_rows
from .data import prompt_dataset
from .policy import evaluate_hallucination


def shapesworld_prompts(iteration: int, count: int, seed: int) -> Dataset:
    """The `count` description prompts of `iteration` (from 1): scenes with seeds `[(iteration - 1) * count,
    iteration * count)`, so iterations never share a scene (held-out evaluation scenes never appear)."""
    first = iteration - 1
    return prompt_dataset(count, start_seed=first * count, seed=seed + first)


def shapesworld_chair(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    *,
    num_prompts: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """CHAIR hallucination rates and recall of the model's descriptions of held-out ShapesWorld scenes.

    Returns `chair_response` (answers with a hallucinated object), `chair_mention` (hallucinated object mentions)
    and `chair_recall` (true objects mentioned); lower CHAIR is better. A temperature of 0 decodes greedily.
    """
    result = evaluate_hallucination(
        model, processor, num_scenes=num_prompts, temperature=temperature or None, max_new_tokens=max_new_tokens,
        seed=seed,
    )  # fmt: skip
    return {
        "chair_response": result.response_rate,
        "chair_mention": result.mention_rate,
        "chair_recall": result.recall,
    }


def shapesworld_pope(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    *,
    num_prompts: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """POPE metrics of the model's answers to `num_prompts` yes/no existence questions about held-out ShapesWorld
    scenes (half about present objects, half about absent ones).

    Returns `pope_accuracy`, `pope_f1` and `pope_yes_ratio` (0.5 for an unbiased model); answers that say neither
    yes nor no count as wrong. A temperature of 0 decodes greedily.
    """
    rows = shapesworld_question_rows(num_prompts, seed=seed)
    return _pope(model, processor, rows, "pope", temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


def shapesworld_pope_adversarial(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    *,
    num_prompts: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """POPE's adversarial split on ShapesWorld: `num_prompts` yes/no questions about held-out scenes holding an
    object of `bias.COOCCURRENCE` without its usual partner, half about that absent partner, half about a present
    object.

    Returns `pope_adversarial_accuracy`, `pope_adversarial_f1` and `pope_adversarial_yes_ratio`.
    """
    rows = adversarial_question_rows(num_prompts, seed=seed)
    return _pope(
        model, processor, rows, "pope_adversarial", temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )


def _pope(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    rows: BenchmarkRows,
    prefix: str,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    answers = generate_answers(
        model, processor, rows, batch_size=50, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    metrics = pope_metrics(answers, rows.references)
    return {f"{prefix}_{key}": metrics[key] for key in ("accuracy", "f1", "yes_ratio")}
