"""Train a small VLM to rank ShapesWorld answers listwise, as `ListwiseRanker` asks (see `ranking_data`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_trl.data import user_turn
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.loading import load_vlm

from .policy import _is_vision_tower, supervised_fine_tune
from .ranking_data import RANKING_SEED_OFFSET, ranking_dataset
from .shapes import DESCRIPTION_PROMPTS, ShapesWorld


logger = logging.getLogger(__name__)


def sample_policy_answers(
    policy: str | Path,
    num_scenes: int,
    start_seed: int = RANKING_SEED_OFFSET,
    num_answers: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
) -> list[list[str]]:
    """Per scene (seeds from `start_seed`), `num_answers` descriptions sampled from `policy` (a name or path) at
    `temperature`; scene i is sampled with seed i and a description prompt chosen by it."""
    model, processor = load_vlm(str(policy))
    sampler = CandidateSampler(
        model, processor, num_candidates=num_answers, temperature=temperature, max_new_tokens=max_new_tokens
    )
    world, answers = ShapesWorld(), []
    for start in range(0, num_scenes, batch_size):
        indices = range(start, min(start + batch_size, num_scenes))
        prompts = [user_turn(DESCRIPTION_PROMPTS[i % len(DESCRIPTION_PROMPTS)]) for i in indices]
        images = [[world.scene(start_seed + i).render()] for i in indices]
        answers += sampler.sample_batch(prompts, images, list(indices))
    return answers


def train_listwise_ranker(
    model_dir: str | Path,
    output_dir: str | Path,
    policy: str | Path | None = None,
    num_steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    num_scenes: int = 9_600,
    num_sampled_scenes: int = 4_800,
    num_candidates: int = 4,
    max_hallucinated: int = 3,
    freeze_vision: bool = True,
    seed: int = 0,
) -> Path:
    """Supervised fine-tuning of a (tiny) VLM on listwise ranking queries about ShapesWorld scenes.

    Args:
        model_dir: Directory or name of the model to start from (e.g. a trained labeler).
        output_dir: Where the trained model and its processor are saved.
        policy: The policy whose sampled answers (temperature 1.0) are among the candidates; `None`: templated
            candidates only.
        num_steps: Optimizer steps.
        batch_size: Queries per step.
        learning_rate: Peak learning rate of the cosine schedule.
        num_scenes: Queries, one scene each (seeds from `RANKING_SEED_OFFSET`, never used by the other built-ins).
        num_sampled_scenes: Of those, the first ones get policy answers to choose from.
        num_candidates: Answers per query.
        max_hallucinated: Most absent objects added to a templated answer.
        freeze_vision: Keep the vision tower fixed (the projector still trains).
        seed: Seed of the data and of the training run.

    Returns:
        `output_dir`, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
    """
    output_dir = Path(output_dir)
    sampled = None
    if policy is not None and num_sampled_scenes:
        sampled = sample_policy_answers(policy, num_sampled_scenes, num_answers=num_candidates)
        sampled += [[] for _ in range(num_scenes - len(sampled))]
    dataset = ranking_dataset(
        num_scenes,
        num_candidates=num_candidates,
        sampled_answers=sampled,
        max_hallucinated=max_hallucinated,
        seed=seed,
    )
    dataset = dataset.select_columns(["images", "prompt", "completion"]).shuffle(seed=seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    if freeze_vision:
        for name, parameter in model.named_parameters():
            if _is_vision_tower(name):
                parameter.requires_grad_(False)
    torch.manual_seed(seed)
    model = supervised_fine_tune(model, processor, dataset, num_steps, batch_size, learning_rate, seed)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("Saved the listwise ranker to %s", output_dir)
    return output_dir
