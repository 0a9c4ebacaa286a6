"""The rankings dataset of a feedback run: built from the claim labels, saved, published and loaded back."""

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from huggingface_hub import DatasetCard

from rlaifv_testbed import prompt_dataset
from rlaifv_testbed.builtin import BUILTIN_LABELER, BUILTIN_POLICY
from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator, load_preference_dataset, load_ranking_dataset
from rlaifv_trl.artifacts import dataset_configs, write_iteration_dataset
from rlaifv_trl.cards import DatasetCardInfo, IterationStats, render_dataset_card
from rlaifv_trl.feedback.pairs import group_ranks, tie_groups
from rlaifv_trl.hub import RetryPolicy, push_dataset


FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
COLUMNS = [
    "prompt", "images", "prompt_id", "row_index", "candidates", "scores", "ranking", "ranks", "num_candidates", "seed",
    "iteration", "policy_model", "labeler_model", "claim_splitter", "question_writer",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    args = FeedbackConfig(num_candidates=4, max_new_tokens=24, shard_size=4, temperature=1.0)
    generator = RLAIFVFeedbackGenerator(BUILTIN_POLICY, args=args, labeler_model=BUILTIN_LABELER)
    folder = tmp_path_factory.mktemp("feedback")
    output = generator.generate(prompt_dataset(6), folder, iteration=2, disable_tqdm=True)
    yield output
    torch.set_num_threads(threads)


def test_tie_groups_put_equal_scores_together_and_unscored_answers_last():
    scores = [-1.0, -3.0, 0.0, -1.0, None, None]
    groups = tie_groups(scores)
    assert groups == [[2], [0, 3], [1], [4, 5]]
    assert group_ranks(groups, 6) == [1, 2, 0, 1, 3, 3]
    assert tie_groups([-2.0, -2.0]) == [[0, 1]] and tie_groups([None]) == [[0]] and tie_groups([]) == []
    with pytest.raises(ValueError, match="each of 2 candidate ids once"):
        group_ranks([[0]], 2)


def test_every_prompt_gets_a_ranking_consistent_with_the_audit_scores(run):
    rankings, audit = run.rankings, run.audit
    assert rankings.column_names == COLUMNS
    assert len(rankings) == run.report.num_prompts == 6
    by_prompt = {}
    for row in audit:
        by_prompt.setdefault(row["prompt_id"], {})[row["candidate_index"]] = row
    num_groups = []
    for row in rankings:
        candidates = by_prompt[row["prompt_id"]]
        assert row["num_candidates"] == len(row["candidates"]) == len(candidates) == 4
        assert row["candidates"] == [candidates[i]["answer"] for i in range(4)]
        assert row["scores"] == [candidates[i]["score"] for i in range(4)]
        assert sorted(i for group in row["ranking"] for i in group) == [0, 1, 2, 3]
        assert row["ranks"] == group_ranks(row["ranking"], 4)
        for a in range(4):
            for b in range(4):
                sa, sb = row["scores"][a], row["scores"][b]
                if sa is not None and sb is not None:  # the ranks order the candidates as the audit ranks do
                    assert (row["ranks"][a] < row["ranks"][b]) == (candidates[a]["rank"] < candidates[b]["rank"])
                    assert (row["ranks"][a] == row["ranks"][b]) == (sa == sb)
                elif sa is None and sb is not None:
                    assert row["ranks"][a] > row["ranks"][b]
        assert len(row["images"]) == 1 and row["iteration"] == 2
        assert row["policy_model"] == candidates[0]["policy_model"] and row["seed"] == candidates[0]["seed"]
        num_groups.append(len(row["ranking"]))
    assert max(num_groups) > 1  # the sampled answers differ in rejected claims


def test_rankings_are_saved_beside_the_pairs_and_the_audit(run):
    saved = load_from_disk(str(run.output_dir / "rankings"))
    assert saved.column_names == COLUMNS
    assert saved["ranking"] == run.rankings["ranking"] and saved["candidates"] == run.rankings["candidates"]


def write_rankings_run(root, rankings):
    """A run folder with the rankings of iteration 1, and its dataset card."""
    write_iteration_dataset(rankings, root, 1, rankings=True)
    stats = IterationStats(1, "builtin:shapesworld-llava", "builtin:shapesworld-llava-labeler", 6, 24, 60, 9, 0, 0, 0)
    card = render_dataset_card("tester/ranks", [stats], DatasetCardInfo(splitter="rules"), dataset_configs(root))
    card.save(root / "dataset" / "README.md")


def assert_same_rankings(loaded, expected):
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        for column in ("prompt", "prompt_id", "candidates", "scores", "ranking", "ranks", "num_candidates"):
            assert got[column] == want[column]
        assert np.array_equal(np.asarray(got["images"][0]), np.asarray(want["images"][0]))


def test_rankings_config_is_pushed_documented_and_loaded_back_equal(run, hub_repo_id, tmp_path):
    write_rankings_run(tmp_path, run.rankings)
    assert [c["config_name"] for c in dataset_configs(tmp_path)] == ["iteration-1-rankings"]
    push_dataset(tmp_path, hub_repo_id, iterations=[1], retry=FAST)
    card = DatasetCard.load(hub_repo_id, repo_type="dataset")
    assert "## Rankings" in card.text and "`iteration-1-rankings`" in card.text and "| `ranking` |" in card.text
    assert [c["config_name"] for c in card.data.configs] == ["iteration-1-rankings"]
    loaded, report = load_preference_dataset(hub_repo_id, name="iteration-1-rankings", return_report=True)
    assert report.num_skipped == 0
    assert_same_rankings(loaded, run.rankings)
    assert_same_rankings(load_ranking_dataset(str(tmp_path / "dataset"), name="iteration-1-rankings"), run.rankings)


def test_bad_rankings_rows_are_skipped_and_counted(run, tmp_path):
    broken = {1: {"ranking": [[0, 1]]}, 3: {"ranks": [0, 0, 0, 9]}, 4: {"candidates": []}}

    def damage(row, index):
        return {**row, **broken.get(index, {})}

    write_rankings_run(tmp_path, run.rankings.map(damage, with_indices=True))
    loaded, report = load_preference_dataset(
        str(tmp_path / "dataset"), name="iteration-1-rankings", return_report=True
    )
    assert len(loaded) == 3 and report.num_skipped == 3
    assert report.by_code()["ranking.malformed"]["count"] == 3
    assert [entry["field"] for entry in report.skipped] == ["ranking", "ranks", "candidates"]
    with pytest.raises(ValueError, match="Not a rankings dataset"):
        write_iteration_dataset(run.rankings.select_columns(["prompt", "images"]), tmp_path / "other", 1)
        load_ranking_dataset(str(tmp_path / "other" / "dataset"), name="iteration-1")
