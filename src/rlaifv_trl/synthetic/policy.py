"""Train a base policy on ShapesWorld, and measure how much it hallucinates.

Training has two stages, like real VLMs (whose vision encoders come pretrained):
1. `pretrain_vision`: the vision tower and projector learn to tell which objects a scene holds (a multi-label
   objective on max-pooled image features, through a linear head that is then discarded);
2. `train_base_policy`: supervised fine-tuning with TRL's `SFTTrainer` on scene descriptions (with an extra, absent
   object injected into a fraction of the answers, so that the policy hallucinates under sampling, like real VLMs
   do) and yes/no existence questions (so that it can label its own claims).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from datasets import concatenate_datasets
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from trl import SFTConfig, SFTTrainer

from ..feedback.labeler import LabelGroup, YesNoLabeler
from ..generation import generate_batch
from ..metrics.chair import ChairResult, chair
from .data import description_dataset, evaluation_prompts, yes_no_dataset
from .shapes import EVAL_SEED_OFFSET, ShapesWorld, all_object_names, shapes_objects


logger = logging.getLogger(__name__)


def _image_features(model: PreTrainedModel, image_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Max-pooled projected image features, one row per image: `(num_images, hidden)`."""
    output = model.get_image_features(**image_inputs)
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    if isinstance(features, (list, tuple)):
        return torch.stack([f.reshape(-1, f.shape[-1]).max(0).values for f in features])
    return features.max(1).values


def _is_vision_tower(parameter_name: str) -> bool:
    return any(part in parameter_name for part in ("vision_tower", "visual.")) and "merger" not in parameter_name


def pretrain_vision(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    num_steps: int = 800,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    start_seed: int = 2_000_000,
) -> float:
    """Teach the vision tower and projector of `model` which ShapesWorld objects an image holds, in place.

    A linear head on max-pooled projected features predicts the scene's objects (one sigmoid per object kind); only
    the vision tower and the projector are updated, and the head is discarded. Scenes come from seeds at and after
    `start_seed`, apart from the SFT and evaluation data. Returns the final loss.
    """
    torch.manual_seed(seed)
    names = all_object_names()
    world = ShapesWorld()
    trained = [p for n, p in model.named_parameters() if "language_model" not in n and "lm_head" not in n]
    head = torch.nn.Linear(model.config.get_text_config().hidden_size, len(names))
    optimizer = torch.optim.AdamW(trained + list(head.parameters()), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=num_steps, pct_start=0.05
    )
    model.train()
    loss = torch.tensor(float("nan"))
    for step in tqdm(range(num_steps), desc="Pretraining the vision tower"):
        scenes = [world.scene(start_seed + step * batch_size + i) for i in range(batch_size)]
        image_inputs = processor.image_processor([scene.render() for scene in scenes], return_tensors="pt")
        targets = torch.zeros(batch_size, len(names))
        for row, scene in enumerate(scenes):
            targets[row, [names.index(name) for name in scene.object_names]] = 1.0
        logits = head(_image_features(model, image_inputs))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    return float(loss)


def train_base_policy(
    model_dir: str | Path,
    output_dir: str | Path,
    num_steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    hallucination_rate: float = 0.3,
    num_scenes: int = 16_000,
    yes_no_fraction: float = 0.5,
    num_question_scenes: int | None = None,
    vision_steps: int = 0,
    freeze_vision: bool = False,
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
        num_scenes: Scenes with a description (0: none, e.g. for a labeler); the data is cycled when
            `num_steps * batch_size` is larger.
        yes_no_fraction: Existence questions per description scene (two questions per scene, one "Yes", one "No").
        num_question_scenes: Scenes with existence questions, overriding `yes_no_fraction` (two questions each).
        vision_steps: Steps of `pretrain_vision` before fine-tuning (0: none).
        freeze_vision: Keep the vision tower fixed during fine-tuning (the projector still trains).
        seed: Seed of the data and of the training run.

    Returns:
        `output_dir`, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
    """
    output_dir = Path(output_dir)
    num_question_scenes = (
        num_question_scenes if num_question_scenes is not None else int(num_scenes * yes_no_fraction) // 2
    )
    parts = []
    if num_scenes:
        parts.append(description_dataset(num_scenes, start_seed=0, hallucination_rate=hallucination_rate, seed=seed))
    if num_question_scenes:
        parts.append(yes_no_dataset(num_question_scenes, start_seed=num_scenes, seed=seed))
    if not parts:
        raise ValueError("Nothing to train on: num_scenes and the number of question scenes are both 0")
    train_dataset = concatenate_datasets(parts)
    train_dataset = train_dataset.select_columns(["images", "prompt", "completion"]).shuffle(seed=seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    if vision_steps:
        pretrain_vision(model, processor, num_steps=vision_steps, batch_size=batch_size, seed=seed)
    if freeze_vision:
        for name, parameter in model.named_parameters():
            if _is_vision_tower(name):
                parameter.requires_grad_(False)
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
    dataset = evaluation_prompts(num_scenes, seed=seed)
    generation = {"max_new_tokens": max_new_tokens}
    generation.update({"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False})
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        answers += generate_batch(model, processor, rows["prompt"], rows["images"], **generation)
    return chair(answers, dataset["objects"], shapes_objects)


def labeling_accuracy(
    model: PreTrainedModel, processor: ProcessorMixin, num_scenes: int = 200, batch_size: int = 64, seed: int = 0
) -> float:
    """How often `model`, used as the RLAIF-V labeler (p_yes > p_no), answers existence questions about held-out
    ShapesWorld scenes correctly; half of the questions ask about present objects, half about absent ones."""
    questions = yes_no_dataset(num_scenes, start_seed=EVAL_SEED_OFFSET + 10 * num_scenes, seed=seed)
    labeler = YesNoLabeler(model, processor, batch_size=batch_size)
    groups = [LabelGroup(row["images"], [row["prompt"][0]["content"][-1]["text"]]) for row in questions]
    labels = [group[0] for group in labeler.label(groups)]
    return sum(label.accepted == present for label, present in zip(labels, questions["present"])) / len(labels)


def _has_accelerator() -> bool:
    return torch.cuda.is_available()
