"""ShapesWorld preference pairs from the ground truth, in TRL's conversational vision preference format."""

from __future__ import annotations

import random

from datasets import Dataset, Features, Image, List, Value

from .data import _MESSAGE, assistant_turn, user_turn
from .shapes import DESCRIPTION_PROMPTS, ShapesWorld


def oracle_preference_dataset(
    num_scenes: int, start_seed: int = 0, world: ShapesWorld | None = None, seed: int = 0
) -> Dataset:
    """One pair per scene: the true description is chosen, the same description with one absent object is rejected.

    The oracle stand-in for the pairs the feedback generator produces, for tests, examples and benchmarks of DPO
    training and of the implicit reward.

    Returns:
        A dataset with columns `prompt_id`, `images`, `prompt`, `chosen`, `rejected` and `scene_seed`.
    """
    world = world or ShapesWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in ("prompt_id", "images", "prompt", "chosen", "rejected", "scene_seed")}
    for scene_seed in range(start_seed, start_seed + num_scenes):
        scene = world.scene(scene_seed)
        rows["prompt_id"].append(f"shapes-{scene_seed}")
        rows["images"].append([scene.render()])
        rows["prompt"].append(user_turn(rng.choice(DESCRIPTION_PROMPTS)))
        rows["chosen"].append(assistant_turn(scene.description()))
        rows["rejected"].append(assistant_turn(world.hallucinated_description(scene, rng)[0]))
        rows["scene_seed"].append(scene_seed)
    features = Features(
        {
            "prompt_id": Value("string"),
            "images": List(Image()),
            "prompt": List(_MESSAGE),
            "chosen": List(_MESSAGE),
            "rejected": List(_MESSAGE),
            "scene_seed": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)
