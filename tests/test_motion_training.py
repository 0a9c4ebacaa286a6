"""Training data for MotionWorld models (descriptions with one error, yes/no questions about objects and motions) and
supervised fine-tuning of a Qwen2-VL stand-in on videos with TRL's `SFTTrainer`."""

import random

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import MotionWorld, shapes_objects, train_base_policy
from rlaifv_testbed.motion_data import motion_sft_dataset, motion_yes_no_dataset
from rlaifv_trl.feedback.rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from rlaifv_trl.trainer.collator import DataCollatorForVisionLanguageModelingWithVideos


def test_hallucinated_descriptions_carry_exactly_one_wrong_fact():
    world, rng = MotionWorld(), random.Random(0)
    kinds = set()
    for seed in range(60):
        clip = world.clip(seed)
        text, wrong = world.hallucinated_description(clip, rng)
        found = clip.hallucinations(text)
        assert len(found.objects) + len(found.motions) == 1 and len(wrong) == 1
        kinds.add("object" if found.objects else "motion")
        assert found.objects == wrong or [f"{name} moves {way}" for name, way in found.motions] == wrong
        assert set(shapes_objects(text)) == set(clip.object_names) | set(found.objects)
    assert kinds == {"object", "motion"}


def test_yes_no_questions_are_the_rule_based_questions_of_description_claims():
    dataset = motion_yes_no_dataset(20, start_seed=100)
    assert len(dataset) == 80 and sum(dataset["present"]) == 40
    writer, splitter = RuleBasedQuestionWriter(), RuleBasedClaimSplitter()
    world = MotionWorld()
    for row in dataset:
        found = world.clip(row["clip_seed"]).hallucinations(row["claim"])
        assert (not found.objects and not found.motions) == row["present"]
        assert splitter.split([""], [row["claim"]]) == [[row["claim"]]]
        question = row["prompt"][0]["content"][-1]["text"]
        assert question == f"{writer.write([row['claim']])[0]} Please answer yes or no."
        assert row["completion"][0]["content"][0]["text"] == ("Yes" if row["present"] else "No")
    assert writer.write(["Then a red circle appears."]) == ["Does a red circle appear?"]


def test_the_sft_collator_encodes_videos_with_their_prompts(tiny_vlm_dir):
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir("qwen2_vl"))
    rows = motion_sft_dataset(3, hallucination_rate=0.0).select_columns(["images", "videos", "prompt", "completion"])
    batch = DataCollatorForVisionLanguageModelingWithVideos(processor, completion_only_loss=True)(
        [dict(row) for row in rows]
    )
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4]] * 3  # 4 frames of 32x32: 2 temporal patches of 4x4
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert ((batch["input_ids"] == video_token).sum(1) == 2 * 4).all()  # 2x2 patches merged into one token
    assert (batch["labels"][batch["input_ids"] == video_token] == -100).all()
    answer = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert answer.startswith(rows[0]["completion"][0]["content"][0]["text"])


@pytest.mark.usefixtures("one_thread")
def test_sft_on_motionworld_teaches_descriptions(tiny_vlm_dir, tmp_path):
    base = tiny_vlm_dir("qwen2_vl")
    trained = train_base_policy(
        base, tmp_path / "policy", num_steps=30, batch_size=16, num_scenes=160, vision_steps=3, freeze_vision=True,
        world="motionworld",
    )  # fmt: skip
    processor = AutoProcessor.from_pretrained(trained)
    held_out = motion_sft_dataset(8, start_seed=900_000).select_columns(["images", "videos", "prompt", "completion"])
    collator = DataCollatorForVisionLanguageModelingWithVideos(processor, completion_only_loss=True)

    def loss(folder) -> float:
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        batch = collator([dict(row) for row in held_out])
        batch.pop("completion_mask", None)
        with torch.no_grad():
            return float(model(**batch).loss)

    assert loss(trained) < 0.75 * loss(base)
    with pytest.raises(ValueError, match="Unknown world"):
        train_base_policy(base, tmp_path / "nope", world="nowhere")
