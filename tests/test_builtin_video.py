"""The built-in MotionWorld models: shipped weights that load by name and describe and label held-out clips."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import EVAL_SEED_OFFSET, MotionWorld, shapes_objects
from rlaifv_testbed.builtin import BUILTIN_VIDEO_LABELER, BUILTIN_VIDEO_POLICY, builtin_weights_path
from rlaifv_testbed.motion_data import motion_yes_no_dataset, video_turn
from rlaifv_trl.feedback import LabelGroup, YesNoLabeler
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.loading import resolve_model_name


@pytest.fixture(scope="module")
def video_models():
    """Both models, loaded through the Auto classes from their `builtin:` names."""
    loaded = {}
    for name in (BUILTIN_VIDEO_POLICY, BUILTIN_VIDEO_LABELER):
        folder = resolve_model_name(name)
        loaded[name] = (
            AutoModelForImageTextToText.from_pretrained(folder).eval(),
            AutoProcessor.from_pretrained(folder),
        )
    return loaded


@pytest.mark.parametrize("name", [BUILTIN_VIDEO_POLICY, BUILTIN_VIDEO_LABELER])
def test_the_named_checkpoints_are_qwen2_vl_with_exactly_the_shipped_weights(video_models, name):
    model, processor = video_models[name]
    assert model.config.model_type == "qwen2_vl" and processor.video_processor is not None
    shipped, state = load_file(builtin_weights_path(name)), model.state_dict()
    assert shipped.keys() == state.keys()
    assert all(torch.equal(state[key], value) for key, value in shipped.items())


def test_the_video_policy_describes_held_out_clips_greedily(video_models, one_thread):
    model, processor = video_models[BUILTIN_VIDEO_POLICY]
    clips = [MotionWorld().clip(EVAL_SEED_OFFSET + i) for i in range(8)]
    prompts = [video_turn("Describe the video.") for _ in clips]
    answers = generate_batch(
        model, processor, prompts, [[] for _ in clips], videos=[[clip.frames()] for clip in clips],
        do_sample=False, max_new_tokens=48,
    )  # fmt: skip
    assert all(answer.startswith("There is a ") and " moves " in answer for answer in answers), answers
    first_right = [shapes_objects(answer)[:1] == [clip.first] for clip, answer in zip(clips, answers)]
    assert sum(first_right) >= 5, answers  # 12 objects: chance is 1 in 12


def test_the_video_labeler_answers_yes_no_questions_about_held_out_clips(video_models, one_thread):
    model, processor = video_models[BUILTIN_VIDEO_LABELER]
    questions = motion_yes_no_dataset(20, start_seed=EVAL_SEED_OFFSET + 500)
    groups = [LabelGroup([], [row["prompt"][0]["content"][-1]["text"]], videos=row["videos"]) for row in questions]
    labels = [group[0] for group in YesNoLabeler(model, processor).label(groups)]
    assert all(0.0 < label.p_yes < 1.0 and 0.0 < label.p_no < 1.0 for label in labels)
    margin = [label.p_yes - label.p_no for label in labels]
    on_objects = [i for i, claim in enumerate(questions["claim"]) if " moves " not in claim]
    true = [margin[i] for i in on_objects if questions["present"][i]]
    false = [margin[i] for i in on_objects if not questions["present"][i]]
    assert sum(true) / len(true) > sum(false) / len(false)  # present objects get more "yes" than absent ones
