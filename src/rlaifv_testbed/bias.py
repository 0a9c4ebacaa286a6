"""Systematic caption errors: the language priors that make real VLMs hallucinate in their *mode*.

Real VLMs do not only hallucinate under sampling: their most likely answer names objects that usually appear with
the ones they see (a "dining table" brings a "chair") and attributes that usually go with a noun. `CaptionBias`
writes such errors into ShapesWorld training captions, so that a policy fine-tuned on them names the partner of a
trigger object even when decoding greedily, while a labeler trained on existence questions against the ground truth
still answers "no" about it:

- co-occurrence: when a trigger object of `COOCCURRENCE` is in the scene and its partner is not, the caption names
  the partner anyway with probability `cooccurrence_rate` (high enough that the greedy answer names it);
- attribute: with probability `attribute_rate`, an object is named with the usual colour of its shape
  (`USUAL_COLORS`) instead of the one drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .shapes import Scene, ShapesWorld, all_object_names, describe


# Objects that "usually appear together": a trigger (key) brings its partner (value) into the caption. Triggers and
# partners are disjoint, so one error never triggers another; about half of the scenes hold a trigger without its
# partner, as LLaVA-1.5-7B hallucinates in about half of its Object HalBench answers.
COOCCURRENCE: dict[str, str] = {
    "red circle": "green triangle",
    "blue square": "yellow circle",
    "yellow triangle": "red square",
    "green circle": "blue triangle",
}
# The most frequent colour of each shape, named instead of the drawn one under attribute bias.
USUAL_COLORS: dict[str, str] = {"circle": "red", "square": "blue", "triangle": "yellow"}


@dataclass(frozen=True)
class CaptionBias:
    """Systematic errors added to the captions of a biased policy's training data.

    Args:
        cooccurrence_rate: Probability that a caption names the absent partner of a trigger object in the scene.
        attribute_rate: Probability that an object whose colour is not its shape's usual one is named with the usual
            colour (when that object is not in the scene too).
        cooccurrence: Trigger object -> partner object.
        usual_colors: Shape -> its most frequent colour.
    """

    cooccurrence_rate: float = 0.85
    attribute_rate: float = 0.2
    cooccurrence: dict[str, str] = field(default_factory=lambda: dict(COOCCURRENCE))
    usual_colors: dict[str, str] = field(default_factory=lambda: dict(USUAL_COLORS))

    def __post_init__(self) -> None:
        for name, rate in (("cooccurrence_rate", self.cooccurrence_rate), ("attribute_rate", self.attribute_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")

    def absent_partners(self, scene: Scene) -> list[str]:
        """The partners of the scene's triggers that are not in the scene: the objects a biased caption adds."""
        present = set(scene.object_names)
        partners = [self.cooccurrence[name] for name in scene.object_names if name in self.cooccurrence]
        return sorted({partner for partner in partners if partner not in present}, key=all_object_names().index)

    def caption(self, scene: Scene, rng: random.Random) -> tuple[str, list[str]]:
        """A biased description of `scene`, in canonical order; returns it and the absent objects it names."""
        present = set(scene.object_names)
        named: list[str] = []
        for name in scene.object_names:
            color, shape = name.split(" ")
            usual = f"{self.usual_colors.get(shape, color)} {shape}"
            swap = usual != name and usual not in present and rng.random() < self.attribute_rate
            named.append(usual if swap else name)
        named += [partner for partner in self.absent_partners(scene) if rng.random() < self.cooccurrence_rate]
        names = sorted(set(named), key=all_object_names().index)
        return describe(names), [name for name in names if name not in present]


def cooccurrence_question_scenes(bias: CaptionBias, world: ShapesWorld, start_seed: int, count: int) -> list[Scene]:
    """The first `count` scenes from `start_seed` on that hold a trigger without its partner."""
    scenes: list[Scene] = []
    seed = start_seed
    while len(scenes) < count:
        scene = world.scene(seed)
        if bias.absent_partners(scene):
            scenes.append(scene)
        seed += 1
    return scenes
