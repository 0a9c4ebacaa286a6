"""The built-in listwise ranker and its ShapesWorld ranking data."""

import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import EVAL_SEED_OFFSET, ShapesWorld, ranking_dataset, ranking_reply, shapes_objects
from rlaifv_testbed.builtin import BUILTIN_RANKER, builtin_weights_path
from rlaifv_testbed.ranking_data import hallucinated_objects, templated_answer
from rlaifv_trl.data import user_turn
from rlaifv_trl.loading import resolve_model_name
from rlaifv_trl.ranking import ListwiseRanker, parse_ranking, render_query


def test_ranking_reply_puts_fewer_hallucinations_first_and_ties_equal_truths():
    # Candidates 0..3 with 2, 0, 1, 0 hallucinated objects, shown as labels 1..4 in the order [2, 0, 3, 1].
    reply = ranking_reply([2, 0, 1, 0], [2, 0, 3, 1])
    assert reply == "3 = 4 > 1 > 2"
    parsed = parse_ranking(reply, 4)
    assert parsed.status == "ok" and parsed.groups == [[2, 3], [0], [1]]


def test_ranking_rows_are_listwise_queries_with_their_exact_order():
    sampled = [["There is a red circle. There is a blue star.", "There is a green square.", ""] for _ in range(24)]
    rows = ranking_dataset(24, num_candidates=4, sampled_answers=sampled, seed=3)
    world = ShapesWorld()
    first_shown_best = 0
    for row in rows:
        scene = world.scene(row["scene_seed"])
        candidates, order, truths = row["candidates"], row["order"], row["truths"]
        assert sorted(order) == [0, 1, 2, 3] and "" not in candidates
        assert truths == [hallucinated_objects(answer, scene.object_names) for answer in candidates]
        question = row["prompt"][0]["content"][-1]["text"]
        assert question == render_query(
            question.split("\n")[0].removeprefix("Question about the image: "), candidates, order
        )
        parsed = parse_ranking(row["completion"][0]["content"][0]["text"], 4)
        assert parsed.status == "ok"
        shown_truths = [[truths[order[label]] for label in group] for group in parsed.groups]
        assert all(len(set(group)) == 1 for group in shown_truths)  # a tie group holds equal truths
        assert [group[0] for group in shown_truths] == sorted({t for t in truths})  # fewer hallucinations first
        first_shown_best += truths[order[0]] == min(truths)
    assert len({tuple(row["order"]) for row in rows}) > 5  # shuffled presentation orders
    assert first_shown_best < len(rows)  # the first position is not always the best answer
    assert any(answer in sampled[0] for row in rows for answer in row["candidates"])  # sampled answers are used
    with pytest.raises(ValueError, match="sampled_answers"):
        ranking_dataset(4, sampled_answers=sampled[:2])


def test_templated_answers_keep_a_present_object_and_add_at_most_the_allowed_absent_ones():
    world, rng = ShapesWorld(), random.Random(0)
    for seed in range(20):
        scene = world.scene(seed)
        answer = templated_answer(world, scene, rng, max_hallucinated=2)
        assert hallucinated_objects(answer, scene.object_names) <= 2
        assert set(scene.object_names) & set(shapes_objects(answer))


@pytest.fixture(scope="module")
def ranker_model():
    folder = resolve_model_name(BUILTIN_RANKER)
    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder), folder


def test_the_builtin_ranker_holds_exactly_the_shipped_weights(ranker_model):
    model, _, _ = ranker_model
    shipped = load_file(builtin_weights_path(BUILTIN_RANKER))
    state = model.state_dict()
    assert shipped.keys() == state.keys() and all(torch.equal(state[key], value) for key, value in shipped.items())


def test_the_builtin_ranker_ranks_held_out_scenes_with_parseable_replies(ranker_model, one_thread):
    model, processor, _ = ranker_model
    world, rng = ShapesWorld(), random.Random(0)
    scenes = [world.scene(EVAL_SEED_OFFSET + 500 + i) for i in range(6)]
    candidates = [[templated_answer(world, scene, rng) for _ in range(4)] for scene in scenes]
    ranker = ListwiseRanker(model, processor)
    prompts = [user_turn("Describe the image.") for _ in scenes]
    rankings = ranker.rank_batch(prompts, [[scene.render()] for scene in scenes], candidates)
    # Every reply is a ranking in the template's format; the small model still repeats labels in many of them, so a
    # reply may be partial (its missing labels appended, tied, at the end).
    assert all(ranking.status in ("ok", "partial") for ranking in rankings)
    assert ranker.report.num_unparseable == 0 and ranker.report.num_fallbacks == 0
    assert all(sorted(i for group in ranking.groups for i in group) == [0, 1, 2, 3] for ranking in rankings)
