"""MotionWorld: clips drawn from a seed, their exact ground truth, questions, the fact extractor, the datasets, the
scores, and the row checks of video prompts (no model involved)."""

import io

import numpy as np
import pytest
from datasets import Image, List

from rlaifv_testbed import EVAL_SEED_OFFSET, MotionWorld, motion_facts, motion_prompt_dataset
from rlaifv_testbed.motion import DIRECTIONS, QUESTION_KINDS
from rlaifv_testbed.motion_data import motion_evaluation_prompts, score_motion_answers, video_turn
from rlaifv_testbed.shapes import COLORS
from rlaifv_trl.validation import BadRow, RowValidation, check_visual_prompt_row


WORLD = MotionWorld()
CLIPS = [WORLD.clip(seed) for seed in range(40)]


def pixels(clip, frame, name):
    """(x, y) of the pixels of `name`'s colour inside its box in a frame (boxes never overlap, in any frame)."""
    obj = next(obj for obj in clip.objects if obj.name == name)
    left, top, right, bottom = obj.at(frame).box
    array = np.asarray(clip.frame(frame)).copy()
    mask = np.zeros(array.shape[:2], dtype=bool)
    mask[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = True
    ys, xs = np.nonzero((array == COLORS[obj.color]).all(axis=-1) & mask)
    return xs, ys


def test_the_same_seed_gives_the_same_clip_and_others_differ():
    again = MotionWorld().clip(7)
    assert again == CLIPS[7]
    assert [np.asarray(f).tolist() for f in again.frames()] == [np.asarray(f).tolist() for f in CLIPS[7].frames()]
    assert len({(clip.object_names[0], clip.moved, clip.direction) for clip in CLIPS}) > 10


def test_ground_truth_is_what_the_frames_show():
    for clip in CLIPS:
        assert len(clip.frames()) == WORLD.num_frames
        assert all(frame.size == (WORLD.frame_size, WORLD.frame_size) for frame in clip.frames())
        for obj in clip.objects:
            for frame in range(clip.num_frames):
                xs, _ = pixels(clip, frame, obj.name)
                assert (len(xs) > 0) == (frame >= obj.appears_at), (clip.seed, obj.name, frame)
        # exactly one object moves, by `step` pixels per frame in the stated direction; the others stay put
        dx, dy = (WORLD.step * d for d in DIRECTIONS[clip.direction])
        for obj in clip.objects:
            visible = range(obj.appears_at, clip.num_frames)
            centres = [tuple(np.mean(axis) for axis in pixels(clip, frame, obj.name)) for frame in visible]
            moves = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(centres, centres[1:])]
            expected = (dx, dy) if obj.name == clip.moved else (0, 0)
            assert all(np.allclose(move, expected) for move in moves), (clip.seed, obj.name, moves)
        # one object at frame 0, then each other one at a later frame of its own: a single order of appearance
        frames = [obj.appears_at for obj in clip.objects]
        assert frames[0] == 0 and frames == sorted(set(frames))
        assert clip.first == clip.object_names[0]


def test_questions_have_exact_answers():
    clip = next(clip for clip in CLIPS if len(clip.objects) >= 2)
    for kind in ("moved", "direction", "first"):
        assert clip.is_correct(kind, clip.answer(kind))
    other = next(name for name in clip.object_names if name != clip.moved)
    assert not clip.is_correct("moved", f"The {other}.")
    wrong = next(way for way in DIRECTIONS if way != clip.direction)
    assert not clip.is_correct("direction", f"It moved {wrong}.")
    assert not clip.is_correct("first", f"The {clip.object_names[1]}.")
    assert not clip.is_correct("moved", "Nothing moved.")
    assert clip.question("direction") == f"In which direction did the {clip.moved} move?"
    with pytest.raises(ValueError, match="Unknown question kind"):
        clip.question("count")


def test_motion_facts_and_hallucinations():
    facts = motion_facts("There is a Red circle. The blue square moves to the left. The green triangle went up.")
    assert facts.objects == ["red circle", "blue square", "green triangle"]
    assert facts.motions == [("blue square", "left"), ("green triangle", "up")]
    clip = CLIPS[0]
    assert clip.hallucinations(clip.description()) == type(facts)([], [])
    absent = next(n for n in WORLD._names if n not in clip.object_names)
    wrong = next(way for way in DIRECTIONS if way != clip.direction)
    text = f"{clip.description()} There is a {absent}. The {clip.moved} moves {wrong}."
    found = clip.hallucinations(text)
    assert found.objects == [absent] and found.motions == [(clip.moved, wrong)]


def test_prompt_dataset_columns_features_and_held_out_seeds():
    dataset = motion_prompt_dataset(8, seed=3, kinds=QUESTION_KINDS)
    assert dataset.features["videos"] == List(List(Image()))
    row = dataset[0]
    clip = WORLD.clip(row["clip_seed"])
    assert row["prompt"] == video_turn(clip.question(row["kind"]))
    assert row["prompt"][0]["content"][0]["type"] == "video"
    assert len(row["videos"]) == 1
    assert [np.asarray(f).tolist() for f in row["videos"][0]] == [np.asarray(f).tolist() for f in clip.frames()]
    assert row["answer"] == clip.answer(row["kind"]) and row["moved"] == clip.moved
    assert row["appearance_order"] == clip.object_names and row["direction"] == clip.direction
    assert set(dataset["kind"]) <= set(QUESTION_KINDS) and len(set(dataset["prompt_id"])) == 8
    assert motion_prompt_dataset(8, seed=3, kinds=QUESTION_KINDS)["prompt_id"] == dataset["prompt_id"]
    held_out = motion_evaluation_prompts(3)
    assert min(held_out["clip_seed"]) >= EVAL_SEED_OFFSET
    with pytest.raises(ValueError, match="kinds"):
        motion_prompt_dataset(2, kinds=("count",))


def test_scores_count_hallucinations_and_right_answers():
    clips = CLIPS[:8]
    kinds = [QUESTION_KINDS[i % 4] for i in range(8)]
    perfect = score_motion_answers(clips, kinds, [clip.answer(kind) for clip, kind in zip(clips, kinds)])
    assert perfect.response_rate == perfect.mention_rate == 0.0
    assert perfect.recall == 1.0 and perfect.question_accuracy == 1.0 and perfect.num_descriptions == 2
    absent = next(n for n in WORLD._names if n not in clips[0].object_names)
    answers = [f"{clips[0].description()} There is a {absent}.", "Red.", "Down.", "Nothing."] + [
        clip.answer(kind) for clip, kind in zip(clips[4:], kinds[4:])
    ]
    scores = score_motion_answers(clips, kinds, answers)
    assert scores.response_rate == 0.5  # one of the two descriptions
    # each description names its objects, the moving one again with its motion, and the motion; plus the absent one
    mentions = (len(clips[0].object_names) + 2 + 1) + (len(clips[4].object_names) + 2)
    assert scores.mention_rate == pytest.approx(1 / mentions)
    expected_direction = (clips[2].direction == "down") + 1
    assert scores.accuracy_by_kind["direction"] == expected_direction / 2
    assert scores.accuracy_by_kind["moved"] == scores.accuracy_by_kind["first"] == 0.5


def _frame_bytes(frame) -> dict:
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda row: row.update(videos=[[{"bytes": b"not a png", "path": None}] * 4]), "video.frame_unreadable"),
        (lambda row: row.update(videos=[[]]), "video.empty"),
        (lambda row: row.update(videos=[]), "video.missing"),
        (lambda row: row.update(videos=[row["videos"][0], row["videos"][0]]), "video.count_mismatch"),
        (
            lambda row: row["videos"][0].append(_frame_bytes(CLIPS[0].frame(0).resize((20, 20)))),
            "video.frame_size_mismatch",
        ),
        (lambda row: row.update(videos="clip.mp4"), "video.malformed"),
    ],
)
def test_bad_video_rows_raise_a_code_naming_the_field(change, code):
    row = {"prompt": video_turn("Describe the video."), "videos": [[_frame_bytes(f) for f in CLIPS[0].frames()]]}
    prompt, images, videos = check_visual_prompt_row(row, None, "videos", RowValidation())
    assert images == [] and len(videos) == 1 and len(videos[0]) == WORLD.num_frames and prompt == row["prompt"]
    change(row)
    with pytest.raises(BadRow) as raised:
        check_visual_prompt_row(row, None, "videos", RowValidation())
    assert raised.value.code == code
    assert raised.value.field == ("prompt" if code == "video.count_mismatch" else "videos")


def test_dataset_card_mentions_the_videos_column_only_when_present():
    from rlaifv_trl.cards import DatasetCardInfo, IterationStats, render_dataset_card

    stats = IterationStats(
        iteration=1, policy="org/policy", labeler="org/labeler", num_prompts=4, num_candidates=16, num_claims=40,
        num_rejected_claims=9, num_pairs=3, chosen_mean_words=10.0, rejected_mean_words=11.0,
    )  # fmt: skip
    configs = [{"config_name": "iteration-1", "data_files": [{"split": "train", "path": "iteration-1/*.parquet"}]}]
    with_videos = str(
        render_dataset_card("org/data", [stats], DatasetCardInfo("rule-based", has_videos=True), configs)
    )
    without = str(render_dataset_card("org/data", [stats], DatasetCardInfo("rule-based"), configs))
    assert "`videos` column" in with_videos and "List(List(Image()))" in with_videos
    assert "`videos`" not in without
