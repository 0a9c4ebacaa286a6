"""ShapesWorld as `datasets.Dataset`s in TRL's conversational vision formats.

- `description_dataset`: prompt-completion rows that describe scenes, optionally with hallucinated objects injected
  into a fraction of the answers (to train a base policy that hallucinates under sampling) and with systematic errors
  (`CaptionBias`: to train one that hallucinates in its mode);
- `yes_no_dataset`: existence questions with their answers (to train a labeler, or the policy as its own labeler);
- `prompt_dataset` / `evaluation_prompts`: (image, instruction) rows with ground truth, the input of the feedback
  generator and of the CHAIR evaluation.
"""

from __future__ import annotations

import random

from datasets import Dataset, Features, Image, List, Value

from rlaifv_trl.data import assistant_turn, user_turn

from .bias import CaptionBias
from .shapes import (
    DESCRIPTION_PROMPTS,
    EVAL_SEED_OFFSET,
    Scene,
    ShapesWorld,
    all_object_names,
    describe,
    existence_question,
    shapes_objects,
)


_MESSAGE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}


def _scenes(world: ShapesWorld, start_seed: int, num_scenes: int) -> list[Scene]:
    return [world.scene(seed) for seed in range(start_seed, start_seed + num_scenes)]


def description_dataset(
    num_scenes: int,
    start_seed: int = 0,
    hallucination_rate: float = 0.0,
    world: ShapesWorld | None = None,
    seed: int = 0,
    bias: CaptionBias | None = None,
) -> Dataset:
    """Scene descriptions as prompt-completion rows.

    Args:
        num_scenes: Number of rows, one scene each.
        start_seed: Seed of the first scene; scene i uses seed `start_seed + i`.
        hallucination_rate: Fraction of answers that carry one extra object absent from the scene.
        world: The scene generator (default `ShapesWorld()`).
        seed: Seed for the choice of prompts and of injected objects.
        bias: Systematic errors of the captions (co-occurring partners, usual colours), applied before the random
            injection; `None` for faithful captions.

    Returns:
        A dataset with columns `images`, `prompt`, `completion`, `objects` (ground truth), `hallucinated` (objects
        injected into the answer) and `scene_seed`.
    """
    if not 0.0 <= hallucination_rate <= 1.0:
        raise ValueError(f"hallucination_rate must be in [0, 1], got {hallucination_rate}")
    world = world or ShapesWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {
        k: [] for k in ("images", "prompt", "completion", "objects", "hallucinated", "scene_seed")
    }
    for scene in _scenes(world, start_seed, num_scenes):
        if bias is not None:
            answer, added = _biased_answer(world, scene, bias, rng, hallucination_rate)
        elif rng.random() < hallucination_rate:
            answer, added = world.hallucinated_description(scene, rng)
        else:
            answer, added = scene.description(), []
        rows["images"].append([scene.render()])
        rows["prompt"].append(user_turn(rng.choice(DESCRIPTION_PROMPTS)))
        rows["completion"].append(assistant_turn(answer))
        rows["objects"].append(scene.object_names)
        rows["hallucinated"].append(added)
        rows["scene_seed"].append(scene.seed)
    features = Features(
        {
            "images": List(Image()),
            "prompt": List(_MESSAGE),
            "completion": List(_MESSAGE),
            "objects": List(Value("string")),
            "hallucinated": List(Value("string")),
            "scene_seed": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)


def _biased_answer(
    world: ShapesWorld, scene: Scene, bias: CaptionBias, rng: random.Random, hallucination_rate: float
) -> tuple[str, list[str]]:
    """A caption with `bias`'s errors, plus one random absent object with probability `hallucination_rate`."""
    answer, added = bias.caption(scene, rng)
    if rng.random() < hallucination_rate:
        names = shapes_objects(answer)
        pool = [name for name in world.absent_objects(scene) if name not in names]
        if pool:
            extra = rng.choice(pool)
            order = all_object_names()
            answer = describe(sorted([*names, extra], key=order.index))
            added = sorted([*added, extra], key=order.index)
    return answer, added


def yes_no_dataset(
    num_scenes: int,
    start_seed: int = 0,
    questions_per_scene: int = 2,
    world: ShapesWorld | None = None,
    seed: int = 0,
) -> Dataset:
    """Existence questions ("Is there a red circle in the image? Please answer yes or no.") with answers.

    Half of the questions of each scene ask about a present object (answer "Yes"), half about an absent one
    (answer "No"). Columns: `images`, `prompt`, `completion`, `object`, `present`, `scene_seed`.
    """
    world = world or ShapesWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in ("images", "prompt", "completion", "object", "present", "scene_seed")}
    for scene in _scenes(world, start_seed, num_scenes):
        image = scene.render()
        for i in range(questions_per_scene):
            present = i % 2 == 0
            pool = scene.object_names if present else world.absent_objects(scene)
            name = rng.choice(pool)
            rows["images"].append([image])
            rows["prompt"].append(user_turn(existence_question(name)))
            rows["completion"].append(assistant_turn("Yes" if present else "No"))
            rows["object"].append(name)
            rows["present"].append(present)
            rows["scene_seed"].append(scene.seed)
    features = Features(
        {
            "images": List(Image()),
            "prompt": List(_MESSAGE),
            "completion": List(_MESSAGE),
            "object": Value("string"),
            "present": Value("bool"),
            "scene_seed": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)


def prompt_dataset(
    num_scenes: int,
    start_seed: int = 0,
    world: ShapesWorld | None = None,
    seed: int = 0,
) -> Dataset:
    """(image, instruction) rows with ground truth: the input of the feedback generator.

    Columns: `prompt_id`, `images`, `prompt` (conversational), `objects` (ground truth) and `scene_seed`.
    """
    world = world or ShapesWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in ("prompt_id", "images", "prompt", "objects", "scene_seed")}
    for scene in _scenes(world, start_seed, num_scenes):
        rows["prompt_id"].append(f"shapes-{scene.seed}")
        rows["images"].append([scene.render()])
        rows["prompt"].append(user_turn(rng.choice(DESCRIPTION_PROMPTS)))
        rows["objects"].append(scene.object_names)
        rows["scene_seed"].append(scene.seed)
    features = Features(
        {
            "prompt_id": Value("string"),
            "images": List(Image()),
            "prompt": List(_MESSAGE),
            "objects": List(Value("string")),
            "scene_seed": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)


def evaluation_prompts(num_scenes: int, world: ShapesWorld | None = None, seed: int = 0) -> Dataset:
    """Held-out description prompts with ground truth, drawn from seeds never used for training data."""
    return prompt_dataset(num_scenes, start_seed=EVAL_SEED_OFFSET, world=world, seed=seed)
