"""ShapesWorld: determinism, ground truth checked against the pixels, datasets and CHAIR."""

import random
from collections import deque

import numpy as np
import pytest

from rlaifv_testbed import (
    COLORS,
    EVAL_SEED_OFFSET,
    ShapesWorld,
    description_dataset,
    evaluation_prompts,
    prompt_dataset,
    shapes_objects,
    yes_no_dataset,
)
from rlaifv_testbed.shapes import BACKGROUND, describe
from rlaifv_trl.metrics import chair


def _components(pixels: np.ndarray, rgb: tuple[int, int, int]) -> list[list[tuple[int, int]]]:
    """4-connected regions of one exact colour, found by flood fill."""
    mask = np.all(pixels == np.array(rgb, dtype=np.uint8), axis=-1)
    seen = np.zeros_like(mask)
    regions = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        queue, region = deque([(y, x)]), []
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            region.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        regions.append(region)
    return regions


def _classify(region: list[tuple[int, int]]) -> str:
    """Shape of a filled region from how much of its bounding box it covers."""
    ys, xs = zip(*region)
    fill = len(region) / ((max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1))
    return "square" if fill > 0.95 else "circle" if fill > 0.68 else "triangle"


def _objects_seen_in(image) -> set[str]:
    pixels = np.asarray(image)
    found = set()
    for color, rgb in COLORS.items():
        for region in _components(pixels, rgb):
            found.add(f"{color} {_classify(region)}")
    return found


def test_same_seed_same_scene_and_pixels():
    world = ShapesWorld()
    a, b = world.scene(17), world.scene(17)
    assert a == b
    assert np.array_equal(np.asarray(a.render()), np.asarray(b.render()))
    assert world.scene(18) != a


def test_scenes_have_the_configured_sizes_and_distinct_objects():
    world = ShapesWorld(min_objects=1, max_objects=4)
    counts = set()
    for seed in range(300):
        scene = world.scene(seed)
        counts.add(len(scene.objects))
        assert len(set(scene.object_names)) == len(scene.object_names)
        assert scene.render().size == (48, 48) and scene.render().mode == "RGB"
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("seed", range(0, 400, 7))
def test_ground_truth_matches_the_drawn_pixels(seed):
    scene = ShapesWorld().scene(seed)
    image = scene.render()
    assert _objects_seen_in(image) == set(scene.object_names)
    pixels = np.asarray(image).reshape(-1, 3)
    allowed = {tuple(BACKGROUND)} | {COLORS[obj.color] for obj in scene.objects}
    assert {tuple(p) for p in np.unique(pixels, axis=0)} == allowed


def test_description_dataset_injects_absent_objects_at_the_requested_rate():
    ds = description_dataset(400, hallucination_rate=0.3, seed=1)
    assert set(ds.column_names) >= {"images", "prompt", "completion", "objects", "hallucinated"}
    injected = [row for row in ds if row["hallucinated"]]
    assert 0.22 < len(injected) / len(ds) < 0.38
    for row in ds.select(range(60)):
        answer = row["completion"][0]["content"][0]["text"]
        mentioned = shapes_objects(answer)
        assert set(mentioned) == set(row["objects"]) | set(row["hallucinated"])
        assert not set(row["hallucinated"]) & set(row["objects"])
        assert row["prompt"][0]["content"][0]["type"] == "image"
        assert _objects_seen_in(row["images"][0]) == set(row["objects"])


def test_clean_descriptions_are_exact_and_deterministic():
    a = description_dataset(20, start_seed=5)
    b = description_dataset(20, start_seed=5)
    assert a["completion"] == b["completion"] and a["prompt"] == b["prompt"]
    for row in a:
        assert row["completion"][0]["content"][0]["text"] == describe(row["objects"])
        assert row["hallucinated"] == []


def test_yes_no_answers_are_true_of_the_image():
    ds = yes_no_dataset(50, start_seed=100, questions_per_scene=4)
    assert len(ds) == 200
    assert sum(ds["present"]) == 100
    for row in ds:
        seen = _objects_seen_in(row["images"][0])
        question = row["prompt"][0]["content"][1]["text"]
        assert question.endswith("Please answer yes or no.") and row["object"] in question
        assert (row["object"] in seen) == row["present"]
        assert row["completion"][0]["content"][0]["text"] == ("Yes" if row["present"] else "No")


def test_evaluation_prompts_are_held_out():
    train = prompt_dataset(30)
    held_out = evaluation_prompts(30)
    assert min(held_out["scene_seed"]) >= EVAL_SEED_OFFSET
    assert not set(train["prompt_id"]) & set(held_out["prompt_id"])
    assert len(set(held_out["prompt_id"])) == 30


def test_chair_counts_response_and_mention_hallucinations():
    truth = [["red circle", "blue square"], ["green triangle"], ["yellow circle"]]
    answers = [
        "There is a red circle. There is a blue square.",  # exact
        "There is a green triangle. There is a red square.",  # one of two mentions hallucinated
        "Nothing to see.",  # no mention at all
    ]
    result = chair(answers, truth, shapes_objects)
    assert result.num_answers_with_objects == 2
    assert result.response_rate == pytest.approx(1 / 2)
    assert result.mention_rate == pytest.approx(1 / 4)
    assert result.recall == pytest.approx(3 / 4)


def test_chair_matches_injected_hallucinations():
    ds = description_dataset(300, hallucination_rate=0.5, seed=3)
    answers = [row[0]["content"][0]["text"] for row in ds["completion"]]
    result = chair(answers, ds["objects"], shapes_objects)
    expected = sum(bool(h) for h in ds["hallucinated"]) / len(ds)
    assert result.response_rate == pytest.approx(expected)
    assert result.recall == 1.0


def test_hallucinated_description_inserts_exactly_the_reported_objects():
    world, rng = ShapesWorld(), random.Random(0)
    for seed in range(50):
        scene = world.scene(seed)
        text, added = world.hallucinated_description(scene, rng, extra=2)
        assert sorted(shapes_objects(text)) == sorted(scene.object_names + added)
