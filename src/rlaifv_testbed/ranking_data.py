"""ShapesWorld listwise ranking queries with their exact answers, to train a listwise ranker.

Each row shows one scene and `num_candidates` answers to a description prompt, rendered exactly as
`ListwiseRanker.query` renders them (`DEFAULT_TEMPLATE`), in a random presentation order. The candidates mix answers
sampled from a policy (when given) and templated descriptions (`describe`) of the scene with 0..`max_hallucinated`
absent objects added and some present objects left out.

The target reply is the ground-truth order in the template's format, e.g. "2 > 1 = 3 > 4": an answer's truth is its
number of hallucinated objects (distinct objects it names that the scene lacks), fewer first; answers with equal
truths are tied with "=" (labels in increasing order). Omissions do not count: an answer that leaves out present
objects is as good as a complete one with the same hallucinations, as with RLAIF-V's score (minus the rejected
claims) and the benchmarks' ground truth. Shuffling the presentation order of every row keeps the data free of any
position prior.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, Features, Image, List, Value

from rlaifv_trl.data import assistant_turn, user_turn
from rlaifv_trl.ranking.listwise import render_query

from .shapes import DESCRIPTION_PROMPTS, Scene, ShapesWorld, all_object_names, describe, shapes_objects


# Seeds of the ranking training scenes: apart from the policy and labeler data (below 1_000_000), the evaluation
# scenes (from 1_000_000) and the vision pretraining scenes (from 2_000_000).
RANKING_SEED_OFFSET = 3_000_000
_MESSAGE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}


def hallucinated_objects(answer: str, present: Sequence[str]) -> int:
    """How many distinct ShapesWorld objects `answer` names that are not in `present`."""
    return len(set(shapes_objects(answer)) - set(present))


def ranking_reply(truths: Sequence[int], order: Sequence[int]) -> str:
    """The ground-truth reply for candidates with `truths` (hallucinated objects) shown in `order`: shown labels,
    fewer hallucinations first, equal truths joined by "=", e.g. "2 > 1 = 3 > 4"."""
    groups: dict[int, list[int]] = {}
    for label, candidate in enumerate(order, start=1):
        groups.setdefault(truths[candidate], []).append(label)
    return " > ".join(" = ".join(str(label) for label in groups[truth]) for truth in sorted(groups))


def templated_answer(world: ShapesWorld, scene: Scene, rng: random.Random, max_hallucinated: int = 3) -> str:
    """A templated description of `scene` keeping a random non-empty subset of its objects and adding 0 to
    `max_hallucinated` absent ones, in canonical order (so that only the image tells which are absent)."""
    kept = rng.sample(scene.object_names, rng.randint(1, len(scene.object_names)))
    absent = world.absent_objects(scene)
    added = rng.sample(absent, min(rng.randint(0, max_hallucinated), len(absent)))
    names = all_object_names()
    return describe(sorted(kept + added, key=names.index))


def ranking_dataset(
    num_scenes: int,
    start_seed: int = RANKING_SEED_OFFSET,
    num_candidates: int = 4,
    sampled_answers: Sequence[Sequence[str]] | None = None,
    max_hallucinated: int = 3,
    world: ShapesWorld | None = None,
    seed: int = 0,
) -> Dataset:
    """Listwise ranking queries about ShapesWorld scenes, with their ground-truth replies as completions.

    Args:
        num_scenes: Rows, one scene each (scene i uses seed `start_seed + i`).
        start_seed: Seed of the first scene.
        num_candidates: Answers shown per query.
        sampled_answers: Per scene, answers sampled from a policy (at least `num_scenes` lists); each row takes a
            random number of them (0 to all, at most `num_candidates`) and fills up with templated answers.
            `None`: templated answers only.
        max_hallucinated: Most absent objects added to a templated answer.
        world: The scene generator (default `ShapesWorld()`).
        seed: Seed of the prompts, templated answers and presentation orders.

    Returns:
        A dataset with columns `images`, `prompt`, `completion`, `candidates`, `order` (candidate shown as label
        k + 1), `truths` (hallucinated objects per candidate) and `scene_seed`.
    """
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be at least 2, got {num_candidates}")
    if sampled_answers is not None and len(sampled_answers) < num_scenes:
        raise ValueError(f"sampled_answers has {len(sampled_answers)} lists of answers for {num_scenes} scenes")
    world = world or ShapesWorld()
    rng = random.Random(seed)
    columns = ("images", "prompt", "completion", "candidates", "order", "truths", "scene_seed")
    rows: dict[str, list] = {column: [] for column in columns}
    for index in range(num_scenes):
        scene = world.scene(start_seed + index)
        pool = [answer for answer in (sampled_answers[index] if sampled_answers is not None else []) if answer.strip()]
        candidates = rng.sample(pool, rng.randint(0, min(len(pool), num_candidates)))
        candidates += [
            templated_answer(world, scene, rng, max_hallucinated) for _ in range(num_candidates - len(candidates))
        ]
        truths = [hallucinated_objects(answer, scene.object_names) for answer in candidates]
        order = rng.sample(range(num_candidates), num_candidates)
        prompt = user_turn(rng.choice(DESCRIPTION_PROMPTS))
        rows["images"].append([scene.render()])
        rows["prompt"].append(user_turn(render_query(prompt, candidates, order)))
        rows["completion"].append(assistant_turn(ranking_reply(truths, order)))
        rows["candidates"].append(candidates)
        rows["order"].append(order)
        rows["truths"].append(truths)
        rows["scene_seed"].append(scene.seed)
    features = Features(
        {
            "images": List(Image()),
            "prompt": List(_MESSAGE),
            "completion": List(_MESSAGE),
            "candidates": List(Value("string")),
            "order": List(Value("int64")),
            "truths": List(Value("int64")),
            "scene_seed": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)
