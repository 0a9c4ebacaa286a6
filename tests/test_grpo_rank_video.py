"""GRPO_rank on video prompts: `GRPORankTrainer` on MotionWorld clips with a tiny Qwen2-VL policy and a
divide-and-conquer oracle whose labeler sees the videos; log-probs checked against plain forwards with the video."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from rlaifv_testbed import motion_prompt_dataset
from rlaifv_trl import GRPORankConfig, GRPORankTrainer
from rlaifv_trl.ranking import DivideAndConquerRanker, RankerReward
from rlaifv_trl.trainer.rank_advantages import rank_advantages
from rlaifv_trl.validation import BadRowError


pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = {"use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}
GROUP = 4


class RecordingReward(RankerReward):
    """The oracle's reward adapter, keeping the videos TRL passed it and the rewards it returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, prompts, completions, **columns):
        rewards = super().__call__(prompts, completions, **columns)
        self.calls.append({"videos": columns.get("videos"), "ids": columns.get("prompt_id"), "rewards": rewards})
        return rewards


class ParameterChange(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.changed = sum(not torch.equal(self.before[n], p) for n, p in model.named_parameters())


@pytest.fixture(scope="module")
def oracle(tiny_vlm_dirs):
    path = tiny_vlm_dirs["qwen2_vl"]
    labeler = AutoModelForImageTextToText.from_pretrained(path)
    return DivideAndConquerRanker(labeler, AutoProcessor.from_pretrained(path), tie_break="labeler_margin")


def video_trainer(tiny_vlm_dirs, tmp_path, oracle, form="gain", **overrides):
    path = tiny_vlm_dirs["qwen2_vl_policy"]
    settings = dict(
        per_device_train_batch_size=4, num_generations=GROUP, max_completion_length=8, max_steps=2,
        learning_rate=1e-3, logging_steps=1, rank_advantage=form,
    )  # fmt: skip
    reward = RecordingReward(oracle, "gain")
    trainer = GRPORankTrainer(
        model=AutoModelForImageTextToText.from_pretrained(path),
        reward_funcs=reward,
        args=GRPORankConfig(str(tmp_path), **{**settings, **overrides}, **CPU),
        train_dataset=motion_prompt_dataset(4),
        processing_class=AutoProcessor.from_pretrained(path),
    )
    return trainer, reward


def plain_log_probs(model, processor, row, prompt_ids, completion_ids, with_video=True):
    """Per-token log-probs of one unpadded prompt + completion from a plain forward with the row's video."""
    ids = torch.tensor([prompt_ids + completion_ids])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if with_video:
        video = processor.video_processor(videos=[row["videos"][0]], return_tensors="pt")
        inputs.update(video)
        inputs["mm_token_type_ids"] = torch.tensor(processor.create_mm_token_type_ids(ids))
    with torch.no_grad():
        logits = model(**inputs).logits[0, len(prompt_ids) - 1 : -1]
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids).unsqueeze(-1)).squeeze(-1)


def unpadded(output, i):
    prompt = output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist()
    completion = output["completion_ids"][i][output["completion_mask"][i].bool()].tolist()
    return prompt, completion


def test_grpo_rank_trains_on_video_prompts_with_the_oracle_seeing_the_videos(tiny_vlm_dirs, tmp_path, oracle):
    # 2 prompts x 4 generations per generation batch, shuffled and split into 2 steps of 4 rows by TRL
    trainer, reward = video_trainer(tiny_vlm_dirs, tmp_path, oracle, gradient_accumulation_steps=2, max_steps=2)
    change = ParameterChange()
    trainer.add_callback(change)
    trainer.train()
    assert change.changed > 0
    clips = {row["prompt_id"]: row["videos"] for row in motion_prompt_dataset(4)}
    for call in reward.calls:  # the oracle was given each row's clip
        assert len(call["videos"]) == 2 * GROUP
        for prompt_id, videos in zip(call["ids"], call["videos"]):
            assert [np.asarray(f).tolist() for f in videos[0]] == [np.asarray(f).tolist() for f in clips[prompt_id][0]]
    rewards = torch.tensor(trainer._logs["rewards"]["gain_rank_reward"])
    assert rewards.tolist() == pytest.approx(reward.calls[-1]["rewards"])
    assert len(set(rewards.tolist())) > 1  # the oracle's ranks differ within the batch
    advantages = torch.tensor(list(trainer._logs["advantages"]))
    assert advantages.tolist() == pytest.approx(rank_advantages(rewards, GROUP, "gain").tolist(), abs=1e-6)
    # After TRL's shuffle and split, each buffered row still carries its own video: the reference log-probs
    # recomputed from the buffered rows equal those computed on the generation batch before the shuffle.
    for batch in trainer._buffered_inputs:
        assert isinstance(batch["pixel_values_videos"], list) and len(batch["pixel_values_videos"]) == 4
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with torch.no_grad(), trainer.video_forwards(batch):
            again, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.ref_model, ids, mask, batch["completion_ids"].size(1), batch_size=3,
                mm_token_type_ids=batch["mm_token_type_ids"],
            )  # fmt: skip
        completion_mask = batch["completion_mask"].bool()
        assert torch.allclose(again[completion_mask], batch["ref_per_token_logps"][completion_mask], atol=1e-5)


def test_video_log_probs_equal_a_plain_forward_with_the_video(tiny_vlm_dirs, tmp_path, oracle):
    trainer, _ = video_trainer(tiny_vlm_dirs, tmp_path, oracle, max_steps=1)
    rows = [row for row in motion_prompt_dataset(2) for _ in range(GROUP)]
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    assert [tuple(grid.shape) for grid in output["video_grid_thw"]] == [(1, 3)] * len(rows)
    video_token = trainer.processing_class.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (output["mm_token_type_ids"] == 2).equal(
        torch.cat([output["prompt_ids"] == video_token, torch.zeros_like(output["completion_ids"], dtype=bool)], 1)
    )
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    with torch.no_grad(), trainer.video_forwards(output):  # the loss's path: chunks of 3 rows
        policy, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, output["completion_ids"].size(1), batch_size=3,
            mm_token_type_ids=output["mm_token_type_ids"],
        )  # fmt: skip
    processor = trainer.processing_class
    differs = 0
    for i, row in enumerate(rows):
        prompt, completion = unpadded(output, i)
        n = len(completion)
        expected_ref = plain_log_probs(trainer.ref_model, processor, row, prompt, completion)
        assert torch.allclose(output["ref_per_token_logps"][i, :n], expected_ref, atol=1e-4)
        expected = plain_log_probs(trainer.model, processor, row, prompt, completion)
        assert torch.allclose(policy[i, :n], expected, atol=1e-4)
        without = plain_log_probs(trainer.model, processor, row, prompt, completion, with_video=False)
        differs += not torch.allclose(without, expected, atol=1e-4)
    assert differs == len(rows)  # without the video (or its M-RoPE positions) the log-probs are others


def test_rank_gap_predicted_ranks_come_from_forwards_with_the_video(tiny_vlm_dirs, tmp_path, oracle):
    trainer, reward = video_trainer(tiny_vlm_dirs, tmp_path, oracle, form="rank_gap", max_steps=1)
    rows = [row for row in motion_prompt_dataset(1) for _ in range(GROUP)]
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    scores = trainer._policy_scores(output)  # mean log-probability: the policy's predicted ranking
    for i, row in enumerate(rows):
        prompt, completion = unpadded(output, i)
        expected = plain_log_probs(trainer.model, trainer.processing_class, row, prompt, completion).mean()
        assert scores[i].item() == pytest.approx(expected.item(), abs=1e-4)
    rewards = torch.tensor(reward.calls[-1]["rewards"])
    assert output["advantages"].tolist() == pytest.approx(
        rank_advantages(rewards, GROUP, "rank_gap", scores).tolist(), abs=1e-5
    )
    trainer.train()  # two steps of rank_gap on video prompts
    assert len([log for log in trainer.state.log_history if "rank/policy_oracle_kendall_tau" in log]) == 1


def test_video_prompts_are_refused_clearly(tiny_vlm_dirs, tmp_path, oracle):
    llava = tiny_vlm_dirs["llava"]
    with pytest.raises(ValueError, match=r"policy's processor \(LlavaProcessor, family Llava\) has no video"):
        GRPORankTrainer(
            model=AutoModelForImageTextToText.from_pretrained(llava), reward_funcs=RankerReward(oracle),
            args=GRPORankConfig(str(tmp_path), num_generations=2, per_device_train_batch_size=2, **CPU),
            train_dataset=motion_prompt_dataset(2), processing_class=AutoProcessor.from_pretrained(llava),
        )  # fmt: skip
    trainer, _ = video_trainer(tiny_vlm_dirs, tmp_path, oracle)
    row = motion_prompt_dataset(1)[0]
    with pytest.raises(BadRowError, match=r"row 1 \(id 'motion-0-describe'\).*video.empty"):
        trainer._generate_and_score_completions([row, {**row, "videos": [[]]}])
    with pytest.raises(BadRowError, match="video.count_mismatch"):
        trainer._generate_and_score_completions([row, {**row, "videos": row["videos"] * 2}])
