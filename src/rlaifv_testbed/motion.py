"""MotionWorld: short clips of moving ShapesWorld shapes whose ground truth is exact.

A clip is a few small frames drawn deterministically from an integer seed. Its shapes (ShapesWorld's colours and
shapes, drawn the same way) appear one at a time: the first is there from frame 0, each other one appears at a later
frame of its own, so the order of appearance has one answer. Exactly one shape moves, by the same step every frame,
left, right, up or down; the others stay put. Shapes never overlap in any frame.

Ground truth per clip: its objects, which one moved, in which direction, and the order of appearance. Temporal
questions ("Which shape moved?", "In which direction did the red circle move?", "What appeared first?") have exact
answers, and a free description ("Describe the video.") hallucinates when it names an object that is not in the clip
or a motion that did not happen (`motion_facts` reads both from text).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from .shapes import COLORS, SHAPES, Scene, SceneObject, all_object_names, shapes_objects


DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DESCRIBE_PROMPT = "Describe the video."
MOVED_QUESTION = "Which shape moved?"
FIRST_QUESTION = "What appeared first?"
QUESTION_KINDS: tuple[str, ...] = ("describe", "moved", "direction", "first")

_MOTION = re.compile(
    rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})\s+(?:moves|moved|is moving|goes|went)\s+(?:to the\s+)?"
    rf"({'|'.join(DIRECTIONS)})\b",
    re.IGNORECASE,
)
_DIRECTION_WORD = re.compile(rf"\b({'|'.join(DIRECTIONS)})\b", re.IGNORECASE)


def describe_motion(names: Sequence[str], moved: str, direction: str) -> str:
    """The templated description of objects appearing in order, then one of them moving, e.g. "There is a red
    circle. Then a blue square appears. The blue square moves left."."""
    first, *others = names
    parts = [f"There is a {first}."] + [f"Then a {name} appears." for name in others]
    return " ".join([*parts, f"The {moved} moves {direction}."])


def direction_question(name: str) -> str:
    """The question asking in which direction the object `name` moved."""
    return f"In which direction did the {name} move?"


@dataclass(frozen=True)
class MotionFacts:
    """What a text says about a clip: the objects it names and the motions it claims, in order."""

    objects: list[str]
    motions: list[tuple[str, str]]


def motion_facts(text: str) -> MotionFacts:
    """The MotionWorld objects ("<colour> <shape>") and motions (("<colour> <shape>", direction)) named in `text`."""
    motions = [(f"{color.lower()} {shape.lower()}", way.lower()) for color, shape, way in _MOTION.findall(text)]
    return MotionFacts(shapes_objects(text), motions)


def first_direction(text: str) -> str | None:
    """The first direction word ("left", "right", "up", "down") in `text`, if any."""
    found = _DIRECTION_WORD.search(text)
    return found.group(1).lower() if found else None


@dataclass(frozen=True)
class MotionObject:
    """One shape of a clip: where it is at frame 0, the frame it appears at, and its step per frame (0 if still)."""

    color: str
    shape: str
    x: int
    y: int
    radius: int
    appears_at: int
    dx: int = 0
    dy: int = 0

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def at(self, frame: int) -> SceneObject:
        """The object as drawn in `frame` (whether or not it is visible yet)."""
        return SceneObject(self.color, self.shape, self.x + self.dx * frame, self.y + self.dy * frame, self.radius)


@dataclass(frozen=True)
class Clip:
    """A MotionWorld clip: its seed, frame size, number of frames and objects in order of appearance."""

    seed: int
    frame_size: int
    num_frames: int
    objects: tuple[MotionObject, ...]
    direction: str

    @property
    def object_names(self) -> list[str]:
        """Names of the objects in order of appearance."""
        return [obj.name for obj in self.objects]

    @property
    def moved(self) -> str:
        """The name of the object that moves."""
        return next(obj.name for obj in self.objects if obj.dx or obj.dy)

    @property
    def first(self) -> str:
        """The name of the object that is there from the first frame."""
        return self.objects[0].name

    def frame(self, index: int) -> Image.Image:
        """Frame `index` as an RGB image (objects drawn like ShapesWorld's, from their appearance frame on)."""
        visible = tuple(obj.at(index) for obj in self.objects if obj.appears_at <= index)
        return Scene(self.seed, self.frame_size, visible).render()

    def frames(self) -> list[Image.Image]:
        """Every frame, in order: the video."""
        return [self.frame(index) for index in range(self.num_frames)]

    def description(self) -> str:
        """The templated description: the objects in order of appearance, then the motion."""
        return describe_motion(self.object_names, self.moved, self.direction)

    def answer(self, kind: str) -> str:
        """The exact answer to a question of `kind` ("moved", "direction", "first"; "describe": the description)."""
        answers = {"describe": self.description, "moved": lambda: f"The {self.moved}.",
                   "direction": lambda: self.direction.capitalize() + ".", "first": lambda: f"The {self.first}."}  # fmt: skip
        if kind not in answers:
            raise ValueError(f"Unknown question kind {kind!r}; expected one of {QUESTION_KINDS}")
        return answers[kind]()

    def question(self, kind: str) -> str:
        """The question of `kind` about this clip."""
        questions = {"describe": DESCRIBE_PROMPT, "moved": MOVED_QUESTION,
                     "direction": direction_question(self.moved), "first": FIRST_QUESTION}  # fmt: skip
        if kind not in questions:
            raise ValueError(f"Unknown question kind {kind!r}; expected one of {QUESTION_KINDS}")
        return questions[kind]

    def is_correct(self, kind: str, text: str) -> bool:
        """Whether `text` answers the question of `kind` right: the first object it names (the first direction
        word, for "direction") is the true one."""
        if kind == "direction":
            return first_direction(text) == self.direction
        named = shapes_objects(text)
        truth = {"moved": self.moved, "first": self.first}.get(kind)
        if truth is None:
            raise ValueError(f"{kind!r} has no single answer; expected one of moved, direction, first")
        return bool(named) and named[0] == truth

    def hallucinations(self, text: str) -> MotionFacts:
        """The objects and motions `text` names that are not in the clip."""
        facts = motion_facts(text)
        truth = (self.moved, self.direction)
        return MotionFacts(
            [name for name in facts.objects if name not in self.object_names],
            [motion for motion in facts.motions if motion != truth],
        )


@dataclass
class MotionWorld:
    """Generator of MotionWorld clips.

    Args:
        frame_size: Side of the square frames, in pixels.
        num_frames: Frames per clip (even numbers suit Qwen2-VL's 2-frame temporal patches).
        min_objects: Fewest objects in a clip.
        max_objects: Most objects (at most `num_frames`: each appears at a frame of its own).
        radius: Half-size range of an object, in pixels.
        step: Pixels the moving object travels per frame.
    """

    frame_size: int = 48
    num_frames: int = 4
    min_objects: int = 1
    max_objects: int = 3
    radius: tuple[int, int] = (5, 7)
    step: int = 4
    _names: list[str] = field(default_factory=all_object_names, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be at least 2, got {self.num_frames}")
        if not 1 <= self.min_objects <= self.max_objects <= min(self.num_frames, len(self._names)):
            raise ValueError(f"Need 1 <= min_objects <= max_objects <= min(num_frames, {len(self._names)})")
        travel = self.step * (self.num_frames - 1)
        if 2 * self.radius[1] + travel + 4 > self.frame_size:
            raise ValueError("The moving object does not fit in the frame: lower radius, step or num_frames")

    def clip(self, seed: int) -> Clip:
        """The clip for `seed`: the same seed always gives the same clip."""
        rng = random.Random(seed)
        for _ in range(1000):
            clip = self._attempt(rng, seed)
            if clip is not None:
                return clip
        raise RuntimeError(f"No clip fits for seed {seed}: enlarge the frame or lower max_objects")

    def absent_objects(self, clip: Clip) -> list[str]:
        """The objects MotionWorld can draw that `clip` does not hold."""
        return [name for name in self._names if name not in clip.object_names]

    def hallucinated_description(self, clip: Clip, rng: random.Random) -> tuple[str, list[str]]:
        """A description of `clip` with one error; returns it and the wrong fact.

        Half of the time an absent object appears at a random place of the order of appearance (the wrong fact is its
        name), otherwise the moving object goes another way (the wrong fact is "<name> moves <direction>").
        """
        if rng.random() < 0.5:
            added = rng.choice(self.absent_objects(clip))
            names = clip.object_names
            names.insert(rng.randint(0, len(names)), added)
            return describe_motion(names, clip.moved, clip.direction), [added]
        wrong = rng.choice([way for way in DIRECTIONS if way != clip.direction])
        return describe_motion(clip.object_names, clip.moved, wrong), [f"{clip.moved} moves {wrong}"]

    def _attempt(self, rng: random.Random, seed: int) -> Clip | None:
        count = rng.randint(self.min_objects, self.max_objects)
        names = rng.sample(self._names, count)
        appear = [0, *sorted(rng.sample(range(1, self.num_frames), count - 1))]
        mover = rng.randrange(count)
        direction = rng.choice(sorted(DIRECTIONS))
        last = self.num_frames - 1
        placed: list[MotionObject] = []
        for index, (name, frame) in enumerate(zip(names, appear)):
            color, shape = name.split(" ")
            dx, dy = (self.step * d for d in DIRECTIONS[direction]) if index == mover else (0, 0)
            for _ in range(200):
                radius = rng.randint(*self.radius)
                low, high = radius + 1, self.frame_size - radius - 2
                x = rng.randint(low - min(0, dx * last), high - max(0, dx * last))
                y = rng.randint(low - min(0, dy * last), high - max(0, dy * last))
                candidate = MotionObject(color, shape, x, y, radius, frame, dx, dy)
                if all(_apart_throughout(candidate, other, self.num_frames) for other in placed):
                    placed.append(candidate)
                    break
            else:
                return None
        return Clip(seed, self.frame_size, self.num_frames, tuple(placed), direction)


def _apart_throughout(a: MotionObject, b: MotionObject, num_frames: int, gap: int = 2) -> bool:
    """Whether two objects' boxes stay `gap` pixels apart in every frame."""
    for frame in range(num_frames):
        first, second = a.at(frame).box, b.at(frame).box
        apart = (
            first[2] + gap < second[0]
            or second[2] + gap < first[0]
            or first[3] + gap < second[1]
            or second[3] + gap < first[1]
        )
        if not apart:
            return False
    return True
