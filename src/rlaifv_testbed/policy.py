"""Train a base policy on ShapesWorld (images) or MotionWorld (videos), and measure how much it hallucinates.

Training has two stages, like real VLMs (whose vision encoders come pretrained):
1. `pretrain_vision`: the vision tower and projector learn to tell which objects a scene holds (and, on MotionWorld
   clips, which one moves and where to), a multi-label objective on max-pooled visual features, through a linear head
   that is then discarded;
2. `train_base_policy`: supervised fine-tuning with TRL's `SFTTrainer` on descriptions (with one error injected into
   a fraction of the answers: an absent object, or on MotionWorld a wrong motion, so that the policy hallucinates
   under sampling, like real VLMs do) and yes/no questions (so that it can label its own claims).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from trl import SFTConfig, SFTTrainer

from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.metrics.chair import ChairResult, chair
from rlaifv_trl.trainer.collator import DataCollatorForVisionLanguageModelingWithVideos

from .bias import CaptionBias
from .data import description_dataset, evaluation_prompts, yes_no_dataset
from .motion import DIRECTIONS, MotionWorld
from .motion_data import motion_sft_dataset, motion_yes_no_dataset
from .shapes import EVAL_SEED_OFFSET, ShapesWorld, all_object_names, shapes_objects


logger = logging.getLogger(__name__)

WORLDS = ("shapesworld", "motionworld")
# Yes/no questions per scene (or clip) of `yes_no_dataset` / `motion_yes_no_dataset`.
_QUESTIONS_PER_SCENE = {"shapesworld": 2, "motionworld": 4}


def _image_features(
    model: PreTrainedModel, image_inputs: dict[str, torch.Tensor], videos: bool = False
) -> torch.Tensor:
    """Max-pooled projected image (or video) features, one row per image (or video): `(num_images, hidden)`."""
    output = model.get_video_features(**image_inputs) if videos else model.get_image_features(**image_inputs)
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    if isinstance(features, (list, tuple)):
        return torch.stack([f.reshape(-1, f.shape[-1]).max(0).values for f in features])
    return features.max(1).values


def _is_vision_tower(parameter_name: str) -> bool:
    return any(part in parameter_name for part in ("vision_tower", "visual.")) and "merger" not in parameter_name


def _vision_batch(
    model: PreTrainedModel, processor: ProcessorMixin, world: str, seeds: range
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-pooled features and multi-label targets of the scenes (or clips) of `seeds`.

    Targets: the objects present (ShapesWorld); on MotionWorld also the object that moves and its direction.
    """
    names = all_object_names()
    if world == "shapesworld":
        scenes = [ShapesWorld().scene(seed) for seed in seeds]
        targets = torch.zeros(len(scenes), len(names))
        for row, scene in enumerate(scenes):
            targets[row, [names.index(name) for name in scene.object_names]] = 1.0
        image_inputs = processor.image_processor([scene.render() for scene in scenes], return_tensors="pt")
        return _image_features(model, image_inputs), targets
    clips = [MotionWorld().clip(seed) for seed in seeds]
    directions = sorted(DIRECTIONS)
    targets = torch.zeros(len(clips), 2 * len(names) + len(directions))
    for row, clip in enumerate(clips):
        targets[row, [names.index(name) for name in clip.object_names]] = 1.0
        targets[row, len(names) + names.index(clip.moved)] = 1.0
        targets[row, 2 * len(names) + directions.index(clip.direction)] = 1.0
    video_inputs = processor.video_processor(videos=[clip.frames() for clip in clips], return_tensors="pt")
    return _image_features(model, dict(video_inputs), videos=True), targets


def _num_vision_targets(world: str) -> int:
    objects = len(all_object_names())
    return {"shapesworld": objects, "motionworld": 2 * objects + len(DIRECTIONS)}[world]


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"Unknown world {world!r}; expected one of {WORLDS}")


def _sft_dataset(
    world: str,
    num_scenes: int,
    num_question_scenes: int,
    hallucination_rate: float,
    seed: int,
    caption_bias: CaptionBias | None = None,
) -> Dataset:
    """The SFT rows of `train_base_policy`: descriptions from seed 0 on, then yes/no questions; on MotionWorld also
    temporal questions (which shape moved, in which direction, what appeared first) about a quarter as many clips."""
    parts = []
    if world == "shapesworld":
        if num_scenes:
            parts.append(
                description_dataset(num_scenes, hallucination_rate=hallucination_rate, seed=seed, bias=caption_bias)
            )
        if num_question_scenes:
            parts.append(yes_no_dataset(num_question_scenes, start_seed=num_scenes, seed=seed))
        columns = ["images", "prompt", "completion"]
    else:
        temporal = num_scenes // 4
        if num_scenes:
            parts.append(motion_sft_dataset(num_scenes, hallucination_rate=hallucination_rate, seed=seed))
        if temporal:
            kinds = ("moved", "direction", "first")
            parts.append(motion_sft_dataset(temporal, start_seed=num_scenes, kinds=kinds, seed=seed))
        if num_question_scenes:
            parts.append(motion_yes_no_dataset(num_question_scenes, start_seed=num_scenes + temporal, seed=seed))
        columns = ["images", "videos", "prompt", "completion"]
    if not parts:
        raise ValueError("Nothing to train on: num_scenes and the number of question scenes are both 0")
    return concatenate_datasets([part.select_columns(columns) for part in parts]).shuffle(seed=seed)


def pretrain_vision(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    num_steps: int = 800,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    start_seed: int = 2_000_000,
    world: str = "shapesworld",
) -> float:
    """Teach the vision tower and projector of `model` which objects a ShapesWorld image holds (or, with
    `world="motionworld"`, which objects a MotionWorld clip holds, which one moves and in which direction), in place.

    A linear head on max-pooled projected features predicts the targets (one sigmoid each); only the vision tower and
    the projector are updated, and the head is discarded. Scenes come from seeds at and after `start_seed`, apart from
    the SFT and evaluation data. Returns the final loss.
    """
    _check_world(world)
    torch.manual_seed(seed)
    trained = [p for n, p in model.named_parameters() if "language_model" not in n and "lm_head" not in n]
    head = torch.nn.Linear(model.config.get_text_config().hidden_size, _num_vision_targets(world))
    optimizer = torch.optim.AdamW(trained + list(head.parameters()), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=num_steps, pct_start=0.05
    )
    model.train()
    loss = torch.tensor(float("nan"))
    for step in tqdm(range(num_steps), desc="Pretraining the vision tower"):
        first = start_seed + step * batch_size
        features, targets = _vision_batch(model, processor, world, range(first, first + batch_size))
        logits = head(features)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    return float(loss.detach())


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
    world: str = "shapesworld",
    caption_bias: CaptionBias | None = None,
) -> Path:
    """Supervised fine-tuning of a (tiny) VLM on ShapesWorld (or MotionWorld) descriptions and yes/no questions.

    Args:
        model_dir: Directory or Hub id of the model to train (e.g. from `build_tiny_vlm`).
        output_dir: Where the trained model and its processor are saved.
        num_steps: Optimizer steps.
        batch_size: Examples per step.
        learning_rate: Peak learning rate of the cosine schedule (3% warmup).
        hallucination_rate: Fraction of description answers that carry one error (an extra, absent object; on
            MotionWorld, half of the time a wrong motion instead).
        num_scenes: Scenes with a description (0: none, e.g. for a labeler); the data is cycled when
            `num_steps * batch_size` is larger.
        yes_no_fraction: Yes/no questions per description scene (half "Yes", half "No"; two per ShapesWorld scene,
            four per MotionWorld clip).
        num_question_scenes: Scenes with yes/no questions, overriding `yes_no_fraction`.
        vision_steps: Steps of `pretrain_vision` before fine-tuning (0: none).
        freeze_vision: Keep the vision tower fixed during fine-tuning (the projector still trains).
        seed: Seed of the data and of the training run.
        world: "shapesworld" (image scenes) or "motionworld" (video clips, for models whose processor takes videos).
        caption_bias: Systematic errors of the ShapesWorld descriptions (co-occurring partners, usual colours), so
            that the policy hallucinates in its mode; `None` for none.

    Returns:
        `output_dir`, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
    """
    _check_world(world)
    output_dir = Path(output_dir)
    if num_question_scenes is None:
        num_question_scenes = int(num_scenes * yes_no_fraction) // _QUESTIONS_PER_SCENE[world]
    if caption_bias is not None and world != "shapesworld":
        raise ValueError("caption_bias applies to ShapesWorld descriptions only")
    train_dataset = _sft_dataset(world, num_scenes, num_question_scenes, hallucination_rate, seed, caption_bias)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    if vision_steps:
        loss = pretrain_vision(model, processor, num_steps=vision_steps, batch_size=batch_size, seed=seed, world=world)
        logger.info("Vision pretraining: final loss %.4f", loss)
    if freeze_vision:
        for name, parameter in model.named_parameters():
            if _is_vision_tower(name):
                parameter.requires_grad_(False)
    model = supervised_fine_tune(
        model, processor, train_dataset, num_steps, batch_size, learning_rate, seed, world=world
    )
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("Saved the base policy to %s", output_dir)
    return output_dir


def supervised_fine_tune(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    train_dataset: Dataset,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    max_length: int | None = None,
    world: str = "shapesworld",
) -> PreTrainedModel:
    """Train `model` on prompt-completion rows with TRL's `SFTTrainer` (cosine schedule, 3% warmup, loss on the
    completions) and return it in eval mode; `world="motionworld"` rows carry `videos`."""
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            max_steps=num_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, int(0.03 * num_steps)),
            weight_decay=0.0,
            max_length=max_length,
            logging_steps=max(1, num_steps // 20),
            save_strategy="no",
            report_to="none",
            use_cpu=not _has_accelerator(),
            bf16=False,
            activation_checkpointing=False,
            seed=seed,
            data_seed=seed,
            remove_unused_columns=world == "shapesworld",  # keep `videos`
        )
        collator = None  # SFTTrainer's own, loss on the completions only
        if world == "motionworld":
            collator = DataCollatorForVisionLanguageModelingWithVideos(processor, completion_only_loss=True)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train_dataset, processing_class=processor, data_collator=collator
        )
        trainer.train()
    return trainer.model.eval()


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
    model: PreTrainedModel,
    processor: ProcessorMixin,
    num_scenes: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    world: str = "shapesworld",
) -> float:
    """How often `model`, used as the RLAIF-V labeler (p_yes > p_no), answers yes/no questions about held-out scenes
    correctly; half of the questions ask about present objects (on MotionWorld clips: present objects and true
    motions), half about absent ones (absent objects and wrong motions)."""
    _check_world(world)
    start = EVAL_SEED_OFFSET + 10 * num_scenes
    build = yes_no_dataset if world == "shapesworld" else motion_yes_no_dataset
    questions = build(num_scenes, start_seed=start, seed=seed)
    labeler = YesNoLabeler(model, processor, batch_size=batch_size)
    groups = [
        LabelGroup(row["images"], [row["prompt"][0]["content"][-1]["text"]], videos=row.get("videos") or [])
        for row in questions
    ]
    labels = [group[0] for group in labeler.label(groups)]
    return sum(label.accepted == present for label, present in zip(labels, questions["present"])) / len(labels)


def _has_accelerator() -> bool:
    return torch.cuda.is_available()
