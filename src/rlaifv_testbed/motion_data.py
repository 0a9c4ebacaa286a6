"""MotionWorld as `datasets.Dataset`s of video prompts, and its evaluator.

The `videos` column holds one list of videos per row (one video for MotionWorld rows), each a list of frames:
feature `List(List(Image()))`, so `row["videos"][0]` is the clip's frames as PIL images. The prompt is one user turn
`[{"type": "video"}, {"type": "text", "text": ...}]`.

```yaml
prompt_dataset: rlaifv_testbed.motion_data:motionworld_prompts
evaluation: [motionworld]   # this module's motionworld_eval
```
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset, Features, Image, List, Value
from transformers import PreTrainedModel, ProcessorMixin

from rlaifv_trl.data import assistant_turn
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION
from rlaifv_trl.feedback.rules import polar_question

from .motion import DIRECTIONS, QUESTION_KINDS, Clip, MotionWorld, motion_facts
from .shapes import EVAL_SEED_OFFSET


_MESSAGE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
FEATURES = Features(
    {
        "prompt_id": Value("string"),
        "prompt": List(_MESSAGE),
        "videos": List(List(Image())),
        "kind": Value("string"),
        "answer": Value("string"),
        "objects": List(Value("string")),
        "moved": Value("string"),
        "direction": Value("string"),
        "appearance_order": List(Value("string")),
        "clip_seed": Value("int64"),
    }
)


def video_turn(text: str) -> list[dict]:
    """One user turn with a video placeholder, then the text."""
    return [{"role": "user", "content": [{"type": "video", "text": None}, {"type": "text", "text": text}]}]


def motion_prompt_dataset(
    num_clips: int,
    seed: int = 0,
    start_seed: int = 0,
    kinds: Sequence[str] = ("describe",),
    world: MotionWorld | None = None,
) -> Dataset:
    """Video prompts about MotionWorld clips, with exact ground truth.

    Args:
        num_clips: Number of rows, one clip each; clip i uses seed `start_seed + i`.
        seed: Seed for the choice of question kind per row.
        start_seed: Seed of the first clip.
        kinds: Question kinds to draw from: "describe" (free description), "moved", "direction", "first".
        world: The clip generator (default `MotionWorld()`).

    Returns:
        Columns `prompt_id`, `prompt`, `videos` (`List(List(Image()))`: one video of frames per row), `kind`, `answer`
        (the exact answer; the templated description for "describe"), `objects` (in order of appearance), `moved`,
        `direction`, `appearance_order` and `clip_seed`.
    """
    unknown = [kind for kind in kinds if kind not in QUESTION_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {QUESTION_KINDS}, got {list(kinds)}")
    world = world or MotionWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {name: [] for name in FEATURES}
    for clip_seed in range(start_seed, start_seed + num_clips):
        clip = world.clip(clip_seed)
        kind = rng.choice(list(kinds))
        rows["prompt_id"].append(f"motion-{clip_seed}-{kind}")
        rows["prompt"].append(video_turn(clip.question(kind)))
        rows["videos"].append([clip.frames()])
        rows["kind"].append(kind)
        rows["answer"].append(clip.answer(kind))
        rows["objects"].append(clip.object_names)
        rows["moved"].append(clip.moved)
        rows["direction"].append(clip.direction)
        rows["appearance_order"].append(clip.object_names)
        rows["clip_seed"].append(clip_seed)
    return Dataset.from_dict(rows, features=FEATURES)


_SFT_FEATURES = Features(
    {
        "images": List(Image()),
        "videos": List(List(Image())),
        "prompt": List(_MESSAGE),
        "completion": List(_MESSAGE),
        "clip_seed": Value("int64"),
    }
)


def motion_sft_dataset(
    num_clips: int,
    start_seed: int = 0,
    hallucination_rate: float = 0.0,
    kinds: Sequence[str] = ("describe",),
    world: MotionWorld | None = None,
    seed: int = 0,
) -> Dataset:
    """Prompt-completion rows answering questions about clips, for supervised fine-tuning.

    Args:
        num_clips: Number of rows, one clip each; clip i uses seed `start_seed + i`.
        start_seed: Seed of the first clip.
        hallucination_rate: Fraction of descriptions with one error (`MotionWorld.hallucinated_description`).
        kinds: Question kinds to draw from (see `motion_prompt_dataset`).
        world: The clip generator (default `MotionWorld()`).
        seed: Seed for the choice of kinds and of errors.

    Returns:
        Columns `images` (empty lists, so that TRL's trainers see a vision dataset), `videos`, `prompt`,
        `completion` and `clip_seed`.
    """
    if not 0.0 <= hallucination_rate <= 1.0:
        raise ValueError(f"hallucination_rate must be in [0, 1], got {hallucination_rate}")
    world = world or MotionWorld()
    prompts = motion_prompt_dataset(num_clips, seed=seed, start_seed=start_seed, kinds=kinds, world=world)
    rng = random.Random(seed)
    completions = []
    for kind, clip_seed in zip(prompts["kind"], prompts["clip_seed"]):
        clip = world.clip(clip_seed)
        wrong = kind == "describe" and rng.random() < hallucination_rate
        answer = world.hallucinated_description(clip, rng)[0] if wrong else clip.answer(kind)
        completions.append(assistant_turn(answer))
    return _sft_rows(prompts, completions)


def _sft_rows(prompts: Dataset, completions: list[list[dict]]) -> Dataset:
    """The prompts' clips and prompts with their completions (the stored frames are kept, not decoded)."""
    rows = prompts.select_columns(["videos", "prompt", "clip_seed"])
    rows = rows.add_column("completion", completions, feature=List(_MESSAGE))
    return rows.add_column("images", [[] for _ in completions], feature=List(Image()))


def motion_claims(clip: Clip, world: MotionWorld, rng: random.Random) -> list[tuple[str, bool]]:
    """Four claims about `clip` in the sentences of its templated description, with their truth: a present object, the
    true motion, an absent object and a wrong motion (another direction, or another object moving the true way)."""
    present = rng.choice(clip.object_names)
    absent = rng.choice(world.absent_objects(clip))
    if rng.random() < 0.5 or len(clip.object_names) == 1:
        wrong = (clip.moved, rng.choice([way for way in DIRECTIONS if way != clip.direction]))
    else:
        wrong = (rng.choice([name for name in clip.object_names if name != clip.moved]), clip.direction)
    late = present != clip.first and rng.random() < 0.5
    return [
        (f"Then a {present} appears." if late else f"There is a {present}.", True),
        (f"The {clip.moved} moves {clip.direction}.", True),
        (f"Then a {absent} appears." if rng.random() < 0.5 else f"There is a {absent}.", False),
        ("The {} moves {}.".format(*wrong), False),
    ]


def motion_yes_no_dataset(
    num_clips: int, start_seed: int = 0, world: MotionWorld | None = None, seed: int = 0
) -> Dataset:
    """Polar questions about clips, as the rule-based question writer phrases claims of descriptions, with answers.

    Each clip gets the four claims of `motion_claims` (two true, two false) as questions ending with the yes/no
    instruction. Columns: `images` (empty), `videos`, `prompt`, `completion`, `claim`, `present` (whether the claim
    holds) and `clip_seed`.
    """
    world = world or MotionWorld()
    rng = random.Random(seed)
    rows: dict[str, list] = {key: [] for key in ("videos", "prompt", "completion", "claim", "present", "clip_seed")}
    for clip_seed in range(start_seed, start_seed + num_clips):
        clip = world.clip(clip_seed)
        frames = clip.frames()
        for claim, holds in motion_claims(clip, world, rng):
            rows["videos"].append([frames])
            rows["prompt"].append(video_turn(f"{polar_question(claim)} {DEFAULT_YES_NO_INSTRUCTION}"))
            rows["completion"].append(assistant_turn("Yes" if holds else "No"))
            rows["claim"].append(claim)
            rows["present"].append(holds)
            rows["clip_seed"].append(clip_seed)
    rows["images"] = [[] for _ in rows["claim"]]
    features = Features(
        {**_SFT_FEATURES, "claim": Value("string"), "present": Value("bool"), "clip_seed": Value("int64")}
    )
    return Dataset.from_dict(rows, features=features)


def motion_evaluation_prompts(
    num_clips: int, seed: int = 0, kinds: Sequence[str] = QUESTION_KINDS, world: MotionWorld | None = None
) -> Dataset:
    """Held-out video prompts: clips from seeds at or above `EVAL_SEED_OFFSET`, never used for training data."""
    return motion_prompt_dataset(num_clips, seed, start_seed=EVAL_SEED_OFFSET, kinds=kinds, world=world)


def motionworld_prompts(iteration: int, count: int, seed: int) -> Dataset:
    """The `count` description prompts of `iteration` (from 1): clips `[(iteration - 1) * count, iteration * count)`."""
    first = iteration - 1
    return motion_prompt_dataset(count, seed=seed + first, start_seed=first * count)


@dataclass(frozen=True)
class MotionScores:
    """Hallucination of descriptions and accuracy on temporal questions.

    Attributes:
        response_rate: Descriptions naming an absent object or a motion that did not happen.
        mention_rate: Hallucinated mentions (objects and motions) over all mentions.
        recall: True objects named, over the objects of the clips described.
        question_accuracy: Temporal questions answered right.
        accuracy_by_kind: The accuracy per question kind ("moved", "direction", "first").
        num_descriptions: Descriptions scored.
        num_questions: Temporal questions scored.
    """

    response_rate: float
    mention_rate: float
    recall: float
    question_accuracy: float
    accuracy_by_kind: dict[str, float]
    num_descriptions: int
    num_questions: int


def score_motion_answers(clips: Sequence[Clip], kinds: Sequence[str], answers: Sequence[str]) -> MotionScores:
    """Score each answer against its clip's ground truth (`kind` "describe": hallucination; others: accuracy)."""
    if not len(clips) == len(kinds) == len(answers):
        raise ValueError(f"{len(clips)} clips, {len(kinds)} kinds and {len(answers)} answers: they must match")
    hallucinated_answers = mentions = hallucinated = named = present = 0
    correct: dict[str, list[bool]] = {}
    for clip, kind, answer in zip(clips, kinds, answers):
        if kind == "describe":
            facts, wrong = motion_facts(answer), clip.hallucinations(answer)
            wrong_count = len(wrong.objects) + len(wrong.motions)
            hallucinated_answers += wrong_count > 0
            mentions += len(facts.objects) + len(facts.motions)
            hallucinated += wrong_count
            named += len(set(facts.objects) & set(clip.object_names))
            present += len(clip.object_names)
        else:
            correct.setdefault(kind, []).append(clip.is_correct(kind, answer))
    descriptions = sum(kind == "describe" for kind in kinds)
    questions = [ok for values in correct.values() for ok in values]
    return MotionScores(
        response_rate=hallucinated_answers / descriptions if descriptions else 0.0,
        mention_rate=hallucinated / mentions if mentions else 0.0,
        recall=named / present if present else 0.0,
        question_accuracy=sum(questions) / len(questions) if questions else 0.0,
        accuracy_by_kind={kind: sum(values) / len(values) for kind, values in sorted(correct.items())},
        num_descriptions=descriptions,
        num_questions=len(questions),
    )


def motionworld_eval(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    *,
    num_prompts: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 16,
    kinds: Sequence[str] = QUESTION_KINDS,
) -> dict[str, float]:
    """Hallucination and temporal accuracy of the model's answers about `num_prompts` held-out MotionWorld clips
    (the question `kinds` in turn; `("describe",)` only describes). A temperature of 0 decodes greedily.

    Returns `motion_chair_response`, `motion_chair_mention`, `motion_recall`, `motion_question_accuracy` and
    `motion_accuracy_<kind>` per question kind.
    """
    import torch

    from rlaifv_trl.generation import generate_batch

    world = MotionWorld()
    kinds = [kinds[i % len(kinds)] for i in range(num_prompts)]
    clips = [world.clip(EVAL_SEED_OFFSET + i) for i in range(num_prompts)]
    tokenizer = getattr(processor, "tokenizer", processor)
    settings = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    settings.update({"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False})
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, num_prompts, batch_size):
        batch = range(start, min(start + batch_size, num_prompts))
        prompts = [video_turn(clips[i].question(kinds[i])) for i in batch]
        videos = [[clips[i].frames()] for i in batch]
        answers += generate_batch(model, processor, prompts, [[] for _ in batch], videos=videos, **settings)
    scores = score_motion_answers(clips, kinds, answers)
    return {
        "motion_chair_response": scores.response_rate,
        "motion_chair_mention": scores.mention_rate,
        "motion_recall": scores.recall,
        "motion_question_accuracy": scores.question_accuracy,
        **{f"motion_accuracy_{kind}": value for kind, value in scores.accuracy_by_kind.items()},
    }
