"""ShapesWorld: procedurally drawn scenes whose ground truth is exact.

Every scene is a small RGB image with one to four coloured shapes on a plain background, drawn deterministically
from an integer seed. Because the objects are known exactly, so is hallucination: a description that names an object
that is not in its scene is wrong, with no annotator in the loop. ShapesWorld is the embedded default of rlaifv-trl,
used to train tiny policies and labelers on a CPU and to measure CHAIR-style hallucination rates.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw


SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
BACKGROUND: tuple[int, int, int] = (235, 235, 235)
YES_NO_INSTRUCTION = "Please answer yes or no."

DESCRIPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image.",
    "What objects are in the image?",
    "List the shapes in the picture.",
    "Describe the shapes you see in this image.",
)

# Seeds at or above this offset are never used for training data, so evaluation scenes are unseen.
EVAL_SEED_OFFSET = 1_000_000


_MENTION = re.compile(rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})s?\b", re.IGNORECASE)


def shapes_objects(text: str) -> list[str]:
    """ShapesWorld objects mentioned in `text`, in order, as "<colour> <shape>" names."""
    return [f"{color.lower()} {shape.lower()}" for color, shape in _MENTION.findall(text)]


def chair_vocabulary() -> tuple[Callable[[str], list[str]], Callable[[str], str]]:
    """ShapesWorld's CHAIR vocabulary (registered as "shapesworld"): the object extractor and the normalization of
    ground-truth names."""
    return shapes_objects, lambda name: " ".join(name.lower().split())


def all_object_names() -> list[str]:
    """Every object ShapesWorld can draw, as "<colour> <shape>" names."""
    return [f"{color} {shape}" for color in COLORS for shape in SHAPES]


def describe(objects: Iterable[str]) -> str:
    """The templated description of a list of object names, e.g. "There is a red circle. There is a blue square."."""
    return " ".join(f"There is a {name}." for name in objects)


def existence_question(name: str) -> str:
    """The polar question asking whether an object is in the image, with the yes/no instruction."""
    return f"Is there a {name} in the image? {YES_NO_INSTRUCTION}"


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its colour, shape, centre and half-size in pixels."""

    color: str
    shape: str
    x: int
    y: int
    radius: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x - self.radius, self.y - self.radius, self.x + self.radius, self.y + self.radius)


@dataclass(frozen=True)
class Scene:
    """A ShapesWorld scene: the seed it was drawn from and its objects, in canonical order (colour, then shape)."""

    seed: int
    image_size: int
    objects: tuple[SceneObject, ...]

    @property
    def object_names(self) -> list[str]:
        """Names of the objects in canonical order (the order of `all_object_names`)."""
        return [obj.name for obj in self.objects]

    def render(self) -> Image.Image:
        """Draw the scene as an RGB image (no anti-aliasing: every object pixel has its exact colour)."""
        image = Image.new("RGB", (self.image_size, self.image_size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            fill = COLORS[obj.color]
            left, top, right, bottom = obj.box
            if obj.shape == "circle":
                draw.ellipse((left, top, right, bottom), fill=fill)
            elif obj.shape == "square":
                draw.rectangle((left, top, right, bottom), fill=fill)
            elif obj.shape == "triangle":
                draw.polygon([(obj.x, top), (right, bottom), (left, bottom)], fill=fill)
            else:
                raise ValueError(f"Unknown shape {obj.shape!r}")
        return image

    def description(self) -> str:
        return describe(self.object_names)


@dataclass
class ShapesWorld:
    """Generator of ShapesWorld scenes and the datasets built from them.

    Args:
        image_size: Side of the square images, in pixels.
        min_objects: Fewest objects in a scene.
        max_objects: Most objects in a scene. Objects in one scene never overlap and have distinct (colour, shape).
        min_radius: Smallest half-size of an object, in pixels.
        max_radius: Largest half-size of an object, in pixels.
    """

    image_size: int = 48
    min_objects: int = 1
    max_objects: int = 4
    min_radius: int = 5
    max_radius: int = 8
    _names: list[str] = field(default_factory=all_object_names, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= len(self._names):
            raise ValueError(f"Need 1 <= min_objects <= max_objects <= {len(self._names)}")
        if 2 * self.max_radius + 2 > self.image_size:
            raise ValueError("Objects do not fit in the image: lower max_radius or raise image_size")

    def scene(self, seed: int) -> Scene:
        """The scene for `seed`: the same seed always gives the same scene."""
        rng = random.Random(seed)
        count = rng.randint(self.min_objects, self.max_objects)
        names = rng.sample(self._names, count)
        placed: list[SceneObject] = []
        for name in names:
            color, shape = name.split(" ")
            for _ in range(1000):
                radius = rng.randint(self.min_radius, self.max_radius)
                x = rng.randint(radius + 1, self.image_size - radius - 2)
                y = rng.randint(radius + 1, self.image_size - radius - 2)
                candidate = SceneObject(color, shape, x, y, radius)
                if all(_apart(candidate, other) for other in placed):
                    placed.append(candidate)
                    break
        placed.sort(key=lambda obj: self._names.index(obj.name))
        return Scene(seed=seed, image_size=self.image_size, objects=tuple(placed))

    def hallucinated_description(self, scene: Scene, rng: random.Random, extra: int = 1) -> tuple[str, list[str]]:
        """A description of `scene` with `extra` absent objects added in canonical order; returns it and them.

        Keeping the canonical order means nothing but the image tells an injected object from a real one.
        """
        added = rng.sample(self.absent_objects(scene), min(extra, len(self._names) - len(scene.objects)))
        names = sorted(scene.object_names + added, key=self._names.index)
        return describe(names), added

    def absent_objects(self, scene: Scene) -> list[str]:
        return [name for name in self._names if name not in scene.object_names]


def _apart(a: SceneObject, b: SceneObject, gap: int = 2) -> bool:
    """Whether the bounding boxes of two objects are at least `gap` pixels apart."""
    return (
        a.box[2] + gap < b.box[0]
        or b.box[2] + gap < a.box[0]
        or a.box[3] + gap < b.box[1]
        or b.box[3] + gap < a.box[1]
    )


def seeds(start: int, count: int) -> Sequence[int]:
    """A contiguous range of scene seeds."""
    return range(start, start + count)
