"""ShapesWorld as a source of prompts and an evaluator for the recipe (the embedded default's test bed).

```yaml
prompt_dataset: rlaifv_trl.synthetic.recipe:shapesworld_prompts
evaluation: [shapesworld]   # this module's shapesworld_chair
```
"""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedModel, ProcessorMixin

from .data import prompt_dataset
from .policy import evaluate_hallucination


def shapesworld_prompts(iteration: int, count: int, seed: int) -> Dataset:
    """The `count` description prompts of `iteration`: scenes with seeds `[iteration * count, (iteration + 1) *
    count)`, so iterations never share a scene (held-out evaluation scenes never appear)."""
    return prompt_dataset(count, start_seed=iteration * count, seed=seed + iteration)


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
