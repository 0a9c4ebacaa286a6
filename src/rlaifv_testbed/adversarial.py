"""Adversarial existence questions: about the absent partner that usually appears with an object in the scene.

POPE's adversarial split asks about the objects that co-occur most often with the ones present; on ShapesWorld
these are the partners of `bias.COOCCURRENCE`. The same questions measure whether a labeler stays accurate on exactly
the claims a biased policy hallucinates (`claim_labeling_accuracy`).
"""

from __future__ import annotations

import math
import random

from transformers import PreTrainedModel, ProcessorMixin

from rlaifv_trl.data import user_turn
from rlaifv_trl.evaluation.hallucination import BenchmarkRows
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler

from .bias import CaptionBias, cooccurrence_question_scenes
from .shapes import EVAL_SEED_OFFSET, ShapesWorld, existence_question


def adversarial_question_rows(num_prompts: int, seed: int = 0, bias: CaptionBias | None = None) -> BenchmarkRows:
    """`num_prompts` existence questions about held-out scenes holding a trigger without its partner: half ask
    about that absent partner ("no"), half about an object of the scene ("yes"), alternating."""
    bias = bias or CaptionBias()
    rng = random.Random(seed)
    scenes = cooccurrence_question_scenes(bias, ShapesWorld(), EVAL_SEED_OFFSET, math.ceil(num_prompts / 2))
    prompts, images, references, ids = [], [], [], []
    for scene in scenes:
        image = scene.render()
        for name, answer in (
            (rng.choice(bias.absent_partners(scene)), "no"),
            (rng.choice(scene.object_names), "yes"),
        ):
            prompts.append(user_turn(existence_question(name)))
            images.append([image])
            references.append(answer)
            ids.append(scene.seed)
    return BenchmarkRows(
        "pope", prompts[:num_prompts], images[:num_prompts], references[:num_prompts], ids=ids[:num_prompts]
    )


def claim_labeling_accuracy(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    num_scenes: int = 200,
    batch_size: int = 64,
    bias: CaptionBias | None = None,
) -> dict[str, float]:
    """How often `model`, as the RLAIF-V labeler (p_yes > p_no), labels the claims of held-out scenes holding a
    trigger without its partner correctly, by kind of claim.

    Returns `partner` (the absent partners a biased caption names: should be "no"), `other_absent` (the other absent
    objects: "no") and `present` (the scene's objects: "yes"), each the fraction labeled correctly.
    """
    bias = bias or CaptionBias()
    world = ShapesWorld()
    scenes = cooccurrence_question_scenes(bias, world, EVAL_SEED_OFFSET, num_scenes)
    groups, kinds = [], []
    for scene in scenes:
        partners = bias.absent_partners(scene)
        claims = {
            "partner": partners,
            "other_absent": [name for name in world.absent_objects(scene) if name not in partners],
            "present": scene.object_names,
        }
        questions = []
        for kind, names in claims.items():
            questions += [existence_question(name) for name in names]
            kinds += [kind] * len(names)
        groups.append(LabelGroup([scene.render()], questions))
    labels = [
        label for group in YesNoLabeler(model, processor, batch_size=batch_size).label(groups) for label in group
    ]
    accuracy = {}
    for kind in ("partner", "other_absent", "present"):
        correct = [label.accepted == (kind == "present") for label, k in zip(labels, kinds) if k == kind]
        accuracy[kind] = sum(correct) / len(correct)
    return accuracy
