"""RLAIFVFeedbackGenerator end to end on tiny real models: format, audit, report, resume, DPO on the output."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from datasets import Image, List, load_from_disk
from transformers import AutoModelForImageTextToText, AutoProcessor, LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import build_tokenizer, prompt_dataset, shapes_objects
from rlaifv_testbed.builtin import BUILTIN_BIASED_POLICY, BUILTIN_LABELER
from rlaifv_testbed.recipe import shapesworld_prompts
from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator
from rlaifv_trl.cards import public_name
from rlaifv_trl.feedback import derive_seed, split_claims
from rlaifv_trl.manifest import Manifest
from rlaifv_trl.run_lock import RunLock


SMALL = {"num_candidates": 4, "max_new_tokens": 12, "shard_size": 2}
QUIET = {"disable_tqdm": True}


@pytest.fixture(scope="module")
def run(tiny_vlm_dir, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prompts = prompt_dataset(6)
    args = FeedbackConfig(**SMALL)
    output_dir = tmp_path_factory.mktemp("feedback")
    output = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).generate(prompts, output_dir, **QUIET)
    yield prompts, args, output
    torch.set_num_threads(threads)


def test_preference_rows_are_trl_conversational_vision_preference_rows(run):
    prompts, args, output = run
    preference = output.preference
    assert len(preference) > 0
    assert preference.column_names[:4] == ["prompt", "images", "chosen", "rejected"]
    assert preference.features["images"] == List(Image())
    assert preference.features["prompt"] == prompts.features["prompt"]
    by_id = {row["prompt_id"]: row for row in prompts}
    for row in preference:
        source = by_id[row["prompt_id"]]
        assert row["prompt"] == source["prompt"]
        assert [np.asarray(i).tolist() for i in row["images"]] == [np.asarray(i).tolist() for i in source["images"]]
        for side in ("chosen", "rejected"):
            assert row[side] == [
                {"role": "assistant", "content": [{"type": "text", "text": row[side][0]["content"][0]["text"]}]}
            ]
        assert row["chosen_score"] - row["rejected_score"] >= args.min_score_gap
        assert row["chosen"][0]["content"][0]["text"] != row["rejected"][0]["content"][0]["text"]
        assert row["seed"] == derive_seed(42, row["prompt_id"], "candidates")  # generate's default seed
        assert len(row["rejected_rejected_claims"]) == -row["rejected_score"]
        assert len(row["chosen_rejected_claims"]) == -row["chosen_score"]
        assert row["iteration"] == 1 and row["policy_model"] == row["labeler_model"]  # self-feedback
        assert row["claim_splitter"] == row["question_writer"] == "rule-based"
    assert max(len(rows) for rows in preference.to_pandas().groupby("prompt_id").groups.values()) <= 2


def test_audit_keeps_every_candidate_with_claims_questions_labels_and_ranking(run):
    prompts, args, output = run
    audit = output.audit
    assert len(audit) == output.report.num_prompts * args.num_candidates
    for row in audit:
        assert (
            len(row["claims"])
            == len(row["questions"])
            == len(row["p_yes"])
            == len(row["p_no"])
            == len(row["verdicts"])
        )
        assert row["claims"] == split_claims(row["answer"])
        assert all(q.endswith("Please answer yes or no.") for q in row["questions"])
        assert row["verdicts"] == [y > n for y, n in zip(row["p_yes"], row["p_no"])]
        assert all(0 <= p <= 1 for p in row["p_yes"] + row["p_no"])
        if row["claims"]:
            assert row["score"] == -row["num_rejected_claims"] and row["status"] == "scored" and row["rank"] >= 1
        else:
            assert row["score"] is None and row["rank"] is None
    frame = audit.to_pandas()
    for _, group in frame.groupby("prompt_id"):
        scored = group.dropna(subset=["score"])
        for _, candidate in scored.iterrows():
            assert candidate["rank"] == 1 + (scored["score"] > candidate["score"]).sum()
    for row in output.preference:
        chosen = frame[
            (frame.prompt_id == row["prompt_id"]) & (frame.candidate_index == row["chosen_candidate_index"])
        ]
        assert chosen.iloc[0]["answer"] == row["chosen"][0]["content"][0]["text"]
        assert chosen.iloc[0]["times_chosen"] >= 1
    assert frame["times_chosen"].sum() == frame["times_rejected"].sum() == len(output.preference)


def test_report_accounts_for_every_row(run):
    prompts, _, output = run
    report = output.report
    with_pairs = set(output.preference["row_index"])
    skipped = {entry["row"] for entry in report.skipped}
    without = {entry["row"] for entry in report.rows_without_pairs}
    assert with_pairs | skipped | without == set(range(len(prompts)))
    assert not with_pairs & without
    assert report.num_pairs == len(output.preference)
    assert report.num_claims == sum(len(c) for c in output.audit["claims"])
    assert report.num_rejected_claims == sum(output.audit["num_rejected_claims"])
    assert set(report.seconds) == {"candidates", "claims", "labels", "pairs"}
    assert report.to_dict()["skip_reasons"] == report.skip_reasons


def test_outputs_are_saved_and_a_rerun_resumes_without_recomputing(run, tiny_vlm_dir):
    prompts, args, output = run
    root = output.output_dir
    assert load_from_disk(str(root / "preference")).to_list() == output.preference.to_list()
    assert load_from_disk(str(root / "audit")).to_list() == output.audit.to_list()
    assert (root / "report.json").is_file() and (root / "manifest.json").is_file()
    shards = sorted(root.glob("*/shard-*.json"))
    assert len(shards) == 3 * 3  # three stages, six prompts in shards of two
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    (root / "labels" / "shard-00001.json").unlink()
    again = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).generate(prompts, root, **QUIET)
    assert again.preference.to_list() == output.preference.to_list()
    assert again.audit.to_list() == output.audit.to_list()
    redone = [path for path in shards if path.stat().st_mtime_ns != stamps[path]]
    assert redone == [root / "labels" / "shard-00001.json"]


def test_a_different_run_in_the_same_directory_is_refused_unless_overwritten(run, tiny_vlm_dir, tmp_path):
    prompts, args, output = run
    changed = FeedbackConfig(**{**args.to_dict(), "temperature": 1.0})
    generator = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=changed)
    with pytest.raises(ValueError, match="temperature"):
        generator.generate(prompts, output.output_dir, **QUIET)
    with pytest.raises(ValueError, match="seed"):
        RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).generate(prompts, output.output_dir, seed=1)
    # labeler_batch_size changes float rounding only: a resumed run may change it
    smaller = FeedbackConfig(**{**args.to_dict(), "labeler_batch_size": 3})
    again = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=smaller).generate(
        prompts, output.output_dir, **QUIET
    )
    assert again.preference.to_list() == output.preference.to_list()
    # overwrite_output_dir starts afresh: the earlier shards are gone, the new settings are recorded
    copy = tmp_path / "copy"
    shutil.copytree(output.output_dir, copy)
    stale = copy / "candidates" / "shard-00000.json"
    stale.write_text(stale.read_text().replace('"seed"', '"seed_of_another_run"'))
    fresh = generator.generate(prompts, copy, overwrite_output_dir=True, **QUIET)
    assert "seed_of_another_run" not in stale.read_text()
    assert json.loads((copy / "manifest.json").read_text())["settings"]["temperature"] == 1.0
    assert fresh.report.num_prompts == len(prompts)


def test_inside_a_run_folder_the_feedback_uses_the_runs_lock_and_manifest(run, tiny_vlm_dir, tmp_path):
    """Driven by a run that holds the lock of the folder around it (the recipe's), the feedback takes no lock and
    opens no manifest of its own: its settings go to a section of the run's manifest, checked on a rerun."""
    prompts, args, output = run
    generator = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args)
    folder = tmp_path / "feedback" / "iteration-1"
    with RunLock(tmp_path):
        manifest = Manifest.open(tmp_path, {"seed": 42})
        inside = generator.generate(prompts, folder, section=manifest.section("iteration-1/feedback"), **QUIET)
        assert inside.preference.to_list() == output.preference.to_list() and inside.output_dir == folder
        assert not (folder / "manifest.json").exists() and not (folder / ".lock").exists()
        recorded = Manifest.read(tmp_path).sections["iteration-1/feedback"]["settings"]
        assert recorded["seed"] == 42 and recorded["dataset"]["num_rows"] == len(prompts)
        shards = sorted(folder.glob("*/shard-*.json"))
        stamps = {path: path.stat().st_mtime_ns for path in shards}
        (folder / "claims" / "shard-00002.json").unlink()
        again = generator.generate(prompts, folder, section=manifest.section("iteration-1/feedback"), **QUIET)
        assert again.audit.to_list() == output.audit.to_list()
        assert [path for path in shards if path.stat().st_mtime_ns != stamps[path]] == [
            folder / "claims" / "shard-00002.json"
        ]
        with pytest.raises(ValueError, match=r"changed: dataset"):  # other prompts: not mixed with these shards
            generator.generate(
                prompt_dataset(6, start_seed=7), folder, section=manifest.section("iteration-1/feedback"), **QUIET
            )


def test_the_pipeline_runs_in_memory_and_gives_the_runners_output(run, tiny_vlm_dir, tmp_path, monkeypatch):
    prompts, args, output = run
    monkeypatch.chdir(tmp_path)
    pipeline = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).pipeline
    in_memory = pipeline.run(prompts)
    assert in_memory.output_dir is None and not list(tmp_path.iterdir())  # no file written
    assert in_memory.preference.to_list() == output.preference.to_list()
    assert (
        in_memory.rankings.to_list() == output.rankings.to_list()
        and in_memory.audit.to_list() == output.audit.to_list()
    )
    assert in_memory.report.skipped == output.report.skipped and in_memory.report.num_pairs == output.report.num_pairs


def test_a_confirmed_claim_weight_scores_every_output_and_keeps_the_labels(run, tiny_vlm_dir):
    prompts, args, output = run
    weighted = FeedbackConfig(**SMALL, confirmed_claim_weight=1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the module's run samples on one thread: the same candidates
    try:
        scored = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=weighted).pipeline.run(prompts)
    finally:
        torch.set_num_threads(threads)
    audit = scored.audit.to_list()
    assert [row["verdicts"] for row in audit] == output.audit["verdicts"]
    for row in audit:
        if row["status"] == "scored":
            assert row["score"] == row["num_claims"] - 2 * row["num_rejected_claims"]  # confirmed - rejected
    scores = {(row["row_index"], row["candidate_index"]): row["score"] for row in audit}
    for row in scored.preference:
        assert row["chosen_score"] == scores[(row["row_index"], row["chosen_candidate_index"])]
        assert row["chosen_score"] - row["rejected_score"] >= weighted.min_score_gap
    for row in scored.rankings:
        assert row["scores"] == [scores[(row["row_index"], i)] for i in range(row["num_candidates"])]
    assert len(scored.preference) > 0


def test_claim_drop_limits_hold_for_every_pair_and_keep_the_labels(one_thread):
    # The biased built-in policy names absent partners: some chosen answers drop true objects with them.
    prompts = shapesworld_prompts(1, 12, seed=0)
    settings = {"labeler_model_name_or_path": BUILTIN_LABELER, "num_candidates": 8, "max_new_tokens": 48}
    outputs = [
        RLAIFVFeedbackGenerator(BUILTIN_BIASED_POLICY, args=FeedbackConfig(**settings, **limits)).pipeline.run(prompts)
        for limits in ({}, {"max_confirmed_claim_drop": 0, "max_claim_drop": 0})
    ]
    full, kept = outputs
    audit = kept.audit.to_list()
    assert [row["verdicts"] for row in audit] == full.audit["verdicts"]
    counts = {(r["row_index"], r["candidate_index"]): (sum(r["verdicts"]), r["num_claims"]) for r in audit}

    def possible(limited: bool) -> int:
        """The pairs the audit allows, counted by hand: score gap >= 1, distinct texts, within the limits."""
        found = set()
        for a, b in itertools.product(audit, audit):
            if a["row_index"] != b["row_index"] or a["score"] is None or b["score"] is None:
                continue
            if a["score"] - b["score"] < 1 or a["answer"].strip() == b["answer"].strip():
                continue
            chosen = counts[(a["row_index"], a["candidate_index"])]
            rejected = counts[(b["row_index"], b["candidate_index"])]
            if not limited or (chosen[0] >= rejected[0] and chosen[1] >= rejected[1]):
                found.add((a["row_index"], a["answer"].strip(), b["answer"].strip()))
        return len(found)

    assert kept.report.num_possible_pairs == possible(True) < possible(False) == full.report.num_possible_pairs
    assert len(kept.preference) > 0
    for row in kept.preference:
        chosen = counts[(row["row_index"], row["chosen_candidate_index"])]
        rejected = counts[(row["row_index"], row["rejected_candidate_index"])]
        assert chosen[0] >= rejected[0] and chosen[1] >= rejected[1]


def test_plain_dpo_trainer_trains_on_the_output(run, tiny_vlm_dir, tmp_path):
    _, _, output = run
    path = tiny_vlm_dir("llava")
    model = AutoModelForImageTextToText.from_pretrained(path)
    ref_model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_steps=2,
        per_device_train_batch_size=2, logging_steps=1, save_strategy="no", learning_rate=1e-3,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=output.preference, processing_class=processor
    )
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sharding_batching_and_order_do_not_change_the_pairs(tiny_vlm_dir, one_thread):
    prompts = prompt_dataset(4, start_seed=100)
    policy = str(tiny_vlm_dir("llava"))

    def pairs(dataset, shard_size, sampling_batch_size=1):
        args = FeedbackConfig(
            **{
                **SMALL,
                "shard_size": shard_size,
                "length_balancing": False,
                "sampling_batch_size": sampling_batch_size,
            }
        )
        preference = RLAIFVFeedbackGenerator(policy, args=args).generate(dataset, **QUIET).preference
        return sorted(
            (r["prompt_id"], r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"])
            for r in preference
        )

    reference = pairs(prompts, 1)
    assert reference
    assert pairs(prompts.shuffle(seed=0), 3, sampling_batch_size=2) == reference


def test_qwen2_vl_policy_with_a_separate_llava_labeler(tiny_vlm_dir, one_thread):
    prompts = prompt_dataset(3, start_seed=200)
    policy, labeler = str(tiny_vlm_dir("qwen2_vl")), str(tiny_vlm_dir("llava", seed=1))
    args = FeedbackConfig(**{**SMALL, "num_candidates": 3, "labeler_model_name_or_path": labeler})
    output = RLAIFVFeedbackGenerator(policy, args=args).generate(prompts, **QUIET)
    assert len(output.audit) == 9 and output.output_dir is None
    # provenance is published: local paths appear as "local: <folder>"
    assert set(output.audit["labeler_model"]) == {public_name(labeler)} and set(output.audit["policy_model"]) == {
        public_name(policy)
    }
    assert public_name(labeler) != public_name(policy) and "/" not in public_name(labeler)
    assert output.report.num_labeler_full_forwards == 0


def save_tiny_language_model(folder) -> str:
    """A one-layer Llama with the project's tokenizer, saved in `folder`."""
    tokenizer = build_tokenizer("llava")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_language_model_splitter_from_the_config(tiny_vlm_dir, tmp_path, one_thread):
    save_tiny_language_model(tmp_path)
    args = FeedbackConfig(**{**SMALL, "num_candidates": 2, "splitter_model_name_or_path": str(tmp_path)})
    args.splitter_max_new_tokens = 16
    output = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).generate(prompt_dataset(2), **QUIET)
    assert (
        set(output.audit["claim_splitter"]) == set(output.audit["question_writer"]) == {f"llm:local: {tmp_path.name}"}
    )
    assert len(output.audit) == 4
    questions = [q for qs in output.audit["questions"] for q in qs]
    assert all(q.endswith("? Please answer yes or no.") for q in questions)


def test_a_shards_records_divided_together_equal_record_by_record(tiny_vlm_dir, tmp_path, one_thread):
    from rlaifv_trl.feedback import CausalLMRunner, LLMClaimSplitter, LLMQuestionWriter

    runner = CausalLMRunner(save_tiny_language_model(tmp_path), max_new_tokens=16)

    class OneByOne:  # only `split`: the divide stage goes record by record
        name = "llm-one-by-one"

        def __init__(self):
            self.inner = LLMClaimSplitter(runner)

        def split(self, prompts, answers, seed):
            return self.inner.split(prompts, answers, seed)

    class FailingTogether(LLMClaimSplitter):  # a shard at once fails: the records are divided one at a time
        def split_groups(self, groups):
            raise RuntimeError("a request of the shard failed")

    args = FeedbackConfig(**{**SMALL, "num_candidates": 2, "shard_size": 3})
    outputs = []
    for splitter in (LLMClaimSplitter(runner), OneByOne(), FailingTogether(runner)):
        generator = RLAIFVFeedbackGenerator(
            str(tiny_vlm_dir("llava")), args=args, claim_splitter=splitter, question_writer=LLMQuestionWriter(runner)
        )
        audit = generator.generate(prompt_dataset(3), **QUIET).audit
        outputs.append((audit["claims"], audit["questions"], audit["status"]))
    assert outputs[0] == outputs[1] == outputs[2]
    assert any(claims for answers in outputs[0][0] for claims in answers)


class ShapesWorldSplitter:
    """A user splitter for ShapesWorld: one claim per object mentioned, nothing else."""

    name = "shapes-world"

    def split(self, prompts, answers, seed):
        return [[f"There is a {name}." for name in shapes_objects(answer)] for answer in answers]


def test_empty_answers_and_answers_without_claims_are_counted(tiny_vlm_dir, one_thread):
    policy = str(tiny_vlm_dir("llava"))
    eos = AutoProcessor.from_pretrained(policy).tokenizer.eos_token_id
    prompts = prompt_dataset(2, start_seed=300)
    empty = FeedbackConfig(**{**SMALL, "generation_kwargs": {"sequence_bias": [[[eos], 100.0]]}})
    output = RLAIFVFeedbackGenerator(policy, args=empty).generate(prompts, **QUIET)
    assert output.report.num_empty_answers == 8 and len(output.preference) == 0
    assert set(output.audit["status"]) == {"empty answer"}
    assert [entry["reason"] for entry in output.report.rows_without_pairs] == ["no answer with claims"] * 2

    output = RLAIFVFeedbackGenerator(
        policy, args=FeedbackConfig(**SMALL), claim_splitter=ShapesWorldSplitter()
    ).generate(prompts, **QUIET)
    no_claims = sum(status == "no claims" for status in output.audit["status"])
    assert no_claims == output.report.num_answers_without_claims > 0
    assert set(output.audit["claim_splitter"]) == {"shapes-world"}
