"""Video prompts through the project's paths on a tiny Qwen2-VL stand-in and MotionWorld clips: encoding, seeded
sampling, prefix-shared labeling, the feedback generator (bad rows skipped), DPO training, and the refusal of a family
without a video processor."""

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import MotionWorld, motion_prompt_dataset
from rlaifv_testbed.motion_data import video_turn
from rlaifv_trl import FeedbackConfig, RLAIFVDPOTrainer, RLAIFVFeedbackGenerator
from rlaifv_trl.feedback import CandidateSampler
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.generation import encode_prompts
from rlaifv_trl.video import prompt_visuals


WORLD = MotionWorld()
CLIPS = [WORLD.clip(seed) for seed in range(6)]
DESCRIBE = video_turn("Describe the video.")
MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})


@pytest.fixture(scope="module")
def qwen(tiny_vlm_dir, one_torch_thread):
    path = tiny_vlm_dir("qwen2_vl", seed=0)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path), path


def test_encoding_gives_video_inputs_and_one_token_per_merged_patch(qwen):
    model, processor, _ = qwen
    inputs = encode_prompts(processor, [DESCRIBE, DESCRIBE], [[], []], model.device, [[c.frames()] for c in CLIPS[:2]])
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[WORLD.num_frames // 2, 4, 4]] * 2  # 2-frame temporal patches, 32x32 frames
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    merge = processor.video_processor.merge_size**2
    assert (inputs["input_ids"] == video_token).sum(dim=1).tolist() == [int(grid[0].prod()) // merge] * 2
    assert "pixel_values_videos" in inputs and "pixel_values" not in inputs
    # the frames are seen: another clip changes the next-token distribution
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1])


def test_seeded_candidates_do_not_depend_on_batching(qwen):
    model, processor, _ = qwen
    sampler = CandidateSampler(model, processor, num_candidates=3, temperature=1.0, max_new_tokens=8)
    videos = [[clip.frames()] for clip in CLIPS[:3]]
    batch = sampler.sample_batch([DESCRIBE] * 3, [[], [], []], [11, 12, 13], videos)
    alone = sampler.sample(DESCRIBE, [], 12, videos[1])
    assert batch[1] == alone
    assert len(set(batch[0])) > 1  # different candidates for one prompt
    assert sampler.sample(DESCRIBE, [], 12, videos[1]) == alone


def test_prefix_shared_labels_equal_plain_forwards(qwen):
    model, processor, _ = qwen
    labeler = YesNoLabeler(model, processor, batch_size=3)
    clip = CLIPS[0]
    questions = [
        f"Is there a {name} in the video? Please answer yes or no." for name in ("red circle", "blue square")
    ] + [f"Did the {clip.moved} move {way}? Please answer yes or no." for way in ("left", "right", "up")]
    shared = labeler.label_group(LabelGroup([], questions, [clip.frames()]))
    assert labeler.num_full_forwards == 0
    for question, label in zip(questions, shared):
        plain = labeler.full_forward([], question, [clip.frames()])
        assert label.p_yes == pytest.approx(plain.p_yes, abs=1e-5) and label.p_no == pytest.approx(
            plain.p_no, abs=1e-5
        )
    other = labeler.label_group(LabelGroup([], questions[:1], [CLIPS[1].frames()]))[0]
    assert other.p_yes != pytest.approx(shared[0].p_yes, abs=1e-7)  # the video is part of the prefix


def test_a_family_without_video_processor_refuses_video_prompts(tiny_vlm_dir, one_torch_thread):
    path = tiny_vlm_dir("llava")
    model, processor = AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)
    with pytest.raises(ValueError, match=r"LlavaProcessor, family Llava\) has no video processor"):
        CandidateSampler(model, processor, num_candidates=1, max_new_tokens=2).sample(
            DESCRIBE, [], 0, [CLIPS[0].frames()]
        )
    with pytest.raises(ValueError, match="Llava"):
        YesNoLabeler(model, processor).full_forward(
            [], "Is there a red circle? Please answer yes or no.", [CLIPS[0].frames()]
        )
    with pytest.raises(ValueError, match="policy's processor.*Llava"):
        RLAIFVFeedbackGenerator(model, processor).generate(motion_prompt_dataset(2), disable_tqdm=True)


def _png(frame) -> bytes:
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generator_turns_video_prompts_into_pairs_that_carry_videos_and_skips_bad_rows(qwen):
    model, processor, _ = qwen
    good = motion_prompt_dataset(4)
    raw = good.cast_column("videos", List(List(Image(decode=False)))).to_list()
    frames = [{"bytes": _png(f), "path": None} for f in CLIPS[0].frames()]
    bad = [
        {**raw[0], "prompt_id": "corrupt", "videos": [[frames[0], {"bytes": b"not a png", "path": None}]]},
        {**raw[0], "prompt_id": "empty", "videos": [[]]},
        {**raw[0], "prompt_id": "two-videos", "videos": [frames, frames]},
    ]
    dataset = Dataset.from_list(raw + bad, features=good.features)
    args = FeedbackConfig(num_candidates=4, max_new_tokens=16, temperature=1.0, shard_size=4)
    output = RLAIFVFeedbackGenerator(model, processor, args=args).generate(dataset, disable_tqdm=True)
    skipped = {entry["prompt_id"]: (entry["code"], entry["field"]) for entry in output.report.skipped}
    assert skipped == {
        "corrupt": ("video.frame_unreadable", "videos"),
        "empty": ("video.empty", "videos"),
        "two-videos": ("video.count_mismatch", "prompt"),
    }
    assert output.report.num_prompts == 4 and output.report.num_claims > 0
    preference = output.preference
    assert len(preference) > 0 and preference.features["videos"] == List(List(Image()))
    sources = {row["prompt_id"]: row for row in good}
    for row in preference:
        source = sources[row["prompt_id"]]
        assert row["images"] == [] and row["prompt"] == source["prompt"]
        as_lists = lambda video: [np.asarray(frame).tolist() for frame in video]  # noqa: E731
        assert as_lists(row["videos"][0]) == as_lists(source["videos"][0])
    images, videos = prompt_visuals(preference[0])
    assert images == [] and len(videos) == 1 and len(videos[0]) == WORLD.num_frames


def _video_pairs(num_rows: int) -> Dataset:
    rows = {"prompt": [], "videos": [], "chosen": [], "rejected": []}
    for seed in range(num_rows):
        clip = WORLD.clip(seed)
        wrong = next(way for way in ("left", "right", "up", "down") if way != clip.direction)
        rows["prompt"].append(DESCRIBE)
        rows["videos"].append([clip.frames()])
        rows["chosen"].append([{"role": "assistant", "content": [{"type": "text", "text": clip.description()}]}])
        text = clip.description().replace(f"moves {clip.direction}", f"moves {wrong}")
        rows["rejected"].append([{"role": "assistant", "content": [{"type": "text", "text": text}]}])
    features = Features({"prompt": MESSAGES, "videos": List(List(Image())), "chosen": MESSAGES, "rejected": MESSAGES})
    return Dataset.from_dict(rows, features=features)


def test_dpo_trains_on_video_pairs_with_reference_log_probs_equal_to_trl(qwen, tiny_vlm_dir, dpo_args):
    _, processor, reference_path = qwen
    policy = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir("qwen2_vl", seed=1))
    reference = AutoModelForImageTextToText.from_pretrained(reference_path)
    before = {name: value.clone() for name, value in policy.named_parameters()}
    args = dpo_args(precompute_ref_log_probs=True, learning_rate=1e-3)
    trainer = RLAIFVDPOTrainer(
        policy, ref_model=reference, args=args, train_dataset=_video_pairs(4), processing_class=processor
    )
    dataset = trainer.train_dataset
    assert "videos" in dataset.column_names and "ref_chosen_logps" in dataset.column_names
    batch = trainer.data_collator([dataset[i] for i in range(2)])
    assert batch["video_grid_thw"].shape[0] == 4  # each video for its chosen and its rejected row
    chosen, rejected = trainer.compute_ref_log_probs(reference, batch)  # TRL's own computation on the batch
    assert torch.allclose(chosen, torch.tensor(dataset["ref_chosen_logps"][:2]), atol=1e-4)
    assert torch.allclose(rejected, torch.tensor(dataset["ref_rejected_logps"][:2]), atol=1e-4)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(not torch.equal(before[name], value) for name, value in policy.named_parameters())
    # a family without video processor is refused before anything runs
    llava = tiny_vlm_dir("llava")
    with pytest.raises(ValueError, match="Llava"):
        RLAIFVDPOTrainer(
            AutoModelForImageTextToText.from_pretrained(llava), args=args, train_dataset=_video_pairs(2),
            processing_class=AutoProcessor.from_pretrained(llava),
        )  # fmt: skip
