"""Train a base policy on ShapesWorld with TRL's `SFTTrainer`, and measure how much it hallucinates.

The base policy learns two skills: describing scenes (with an extra, absent object injected into a fraction of the
training answers, so that it hallucinates under sampling, like real VLMs do) and answering yes/no existence
questions (so that it can label its own claims). On 2 CPU cores the "small" LLaVA preset takes about 0.3 s per step
of batch 64: 1,000 steps, enough for a greedy recall near 1, take about 5 minutes.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import concatenate_datasets
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from trl import SFTConfig, SFTTrainer

from ..generation import generate_batch
from ..metrics.chair import ChairResult, chair
from .data import description_dataset, evaluation_prompts, yes_no_dataset
from .shapes import shapes_objects


logger = logging.getLogger(__name__)


def train_base_policy(
    model_dir: str | Path,
    output_dir: str | Path,
    num_steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    hallucination_rate: float = 0.3,
    num_scenes: int = 16_000,
    yes_no_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Supervised fine-tuning of a (tiny) VLM on ShapesWorld descriptions and existence questions.

    Args:
        model_dir: Directory or Hub id of the model to train (e.g. from `build_tiny_vlm`).
        output_dir: Where the trained model and its processor are saved.
        num_steps: Optimizer steps.
        batch_size: Examples per step.
        learning_rate: Peak learning rate of the cosine schedule (3% warmup).
        hallucination_rate: Fraction of description answers that carry one extra, absent object.
        num_scenes: Scenes with a description; the data is cycled when `num_steps * batch_size` is larger.
        yes_no_fraction: Existence questions per description scene (two questions per scene, one "Yes", one "No").
        seed: Seed of the data and of the training run.

    Returns:
        `output_dir`, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
    """
    output_dir = Path(output_dir)
    num_questions = int(num_scenes * yes_no_fraction)
    train_dataset = concatenate_datasets(
        [
            description_dataset(num_scenes, start_seed=0, hallucination_rate=hallucination_rate, seed=seed),
            yes_no_dataset(max(num_questions // 2, 1), start_seed=num_scenes, seed=seed),
        ]
    )
    train_dataset = train_dataset.select_columns(["images", "prompt", "completion"]).shuffle(seed=seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            max_steps=num_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, int(0.03 * num_steps)),
            weight_decay=0.0,
            max_length=None,
            logging_steps=max(1, num_steps // 20),
            save_strategy="no",
            report_to="none",
            use_cpu=not _has_accelerator(),
            bf16=False,
            gradient_checkpointing=False,
            seed=seed,
            data_seed=seed,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=processor)
        trainer.train()
    model = trainer.model.eval()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("Saved the base policy to %s", output_dir)
    return output_dir


def evaluate_hallucination(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    num_scenes: int = 200,
    temperature: float | None = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 50,
    seed: int = 0,
) -> ChairResult:
    """CHAIR rates of the model's descriptions of held-out ShapesWorld scenes.

    Args:
        temperature: Sampling temperature; `None` for greedy decoding.
        num_scenes: Held-out scenes described (one answer each).
    """
    import torch

    dataset = evaluation_prompts(num_scenes, seed=seed)
    generation = {"max_new_tokens": max_new_tokens}
    generation.update({"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False})
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        answers += generate_batch(model, processor, rows["prompt"], rows["images"], **generation)
    return chair(answers, dataset["objects"], shapes_objects)


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()
