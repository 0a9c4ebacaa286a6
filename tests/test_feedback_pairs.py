"""Scores, rankings, pair building, seeded sampling and the reference's length balancing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaifv_trl.feedback import (
    FeedbackConfig,
    RunReport,
    answer_score,
    candidate_pairs,
    length_balance,
    ranks,
    sample_pairs,
)
from rlaifv_trl.feedback.merge import prompt_results
from rlaifv_trl.feedback.outputs import PromptResult, select_pairs
from rlaifv_trl.feedback.pairs import claim_drop_limit, ranking


def test_score_is_minus_the_rejected_claims_and_none_without_claims():
    assert answer_score([]) is None
    assert answer_score([True, True]) == 0.0
    assert answer_score([True, False, False]) == -2.0


def test_a_confirmed_claim_weight_credits_the_confirmed_claims():
    assert answer_score([True, True, False], confirmed_weight=1.0) == 1.0
    assert answer_score([True, True, False], confirmed_weight=0.5) == 0.0
    assert answer_score([False, False], confirmed_weight=1.0) == -2.0
    assert answer_score([], confirmed_weight=1.0) is None
    for weight in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="confirmed_claim_weight"):
            FeedbackConfig(confirmed_claim_weight=weight)


def test_ranks_and_ranking_keep_ties_and_skip_unscored():
    scores = [0.0, -1.0, None, 0.0, -3.0]
    assert ranks(scores) == [1, 3, None, 1, 4]
    assert ranking(scores) == [0, 3, 1, 4]


def test_pairs_need_the_gap_distinct_texts_and_no_repeats():
    texts = ["a", "b", "c", "a", "d", ""]
    scores = [0.0, -1.0, -1.0, -2.0, None, None]
    pairs = candidate_pairs(texts, scores, min_gap=1)
    assert (0, 3) not in pairs  # same text "a" on both sides
    assert set(pairs) == {(0, 1), (0, 2), (1, 3), (2, 3)}
    assert all(scores[c] - scores[r] >= 1 for c, r in pairs)
    assert candidate_pairs(texts, scores, min_gap=2) == []  # only (0, 3) is 2 apart, and its texts are equal
    # Two candidates with the same text give the same pair once.
    assert candidate_pairs(["x", "x", "y"], [0.0, 0.0, -1.0], 1) == [(0, 2)]


def test_sampling_is_seeded_and_keeps_everything_when_few():
    pairs = [(0, i) for i in range(1, 9)]
    assert sample_pairs(pairs, 2, seed=7) == sample_pairs(pairs, 2, seed=7)
    assert len(set(tuple(sample_pairs(pairs, 2, seed=s)) for s in range(10))) > 1
    assert sample_pairs(pairs[:2], 2, seed=1) == pairs[:2]
    assert sample_pairs(pairs, None, seed=1) == pairs


def test_length_balancing_picks_the_ratio_with_the_closest_mean_lengths():
    # Keeping all four pairs: chosen 15.75 vs rejected 17.5 words (gap 0.1); the (5, 20) pair needs r >= 0.75.
    result = length_balance([(10, 10), (5, 20), (18, 20), (30, 20)], step=0.02)
    assert result.keep == [True, True, True, True]
    assert result.ratio == 0.76
    assert abs(result.gap_after - 0.1) < 1e-9
    # Dropping the much shorter chosen answer closes the gap: the smallest ratio that does it wins.
    result = length_balance([(5, 20), (20, 20), (22, 20), (21, 20)])
    assert result.keep == [False, True, True, True]
    assert result.ratio == 0.0
    assert result.gap_after < result.gap_before
    assert length_balance([]).ratio is None


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 60)), min_size=1, max_size=30))
def test_length_balancing_keeps_exactly_the_pairs_within_the_ratio(lengths):
    result = length_balance(lengths)
    assert len(result.keep) == len(lengths)
    if result.ratio is not None:
        for (chosen, rejected), kept in zip(lengths, result.keep):
            assert kept == ((rejected - chosen) / rejected <= result.ratio)


def _result(row, answers, verdicts):
    return PromptResult(
        row=row,
        prompt_id=f"p{row}",
        seed=row,
        prompt=[],
        instruction="Describe.",
        answers=answers,
        claims=[[f"c{i}" for i in range(len(v))] for v in verdicts],
        questions=[[f"q{i}?" for i in range(len(v))] for v in verdicts],
        p_yes=[[0.9 if ok else 0.1 for ok in v] for v in verdicts],
        p_no=[[0.1 if ok else 0.9 for ok in v] for v in verdicts],
    )


def test_select_pairs_gives_reasons_for_prompts_without_pairs():
    results = [
        _result(0, ["one two", "one two three", "four"], [[True], [False], [True, False, False]]),
        _result(1, ["", "no claims here"], [[], []]),
        _result(2, ["same", "same"], [[True], [False]]),
        _result(3, ["a b", "c d"], [[True], [True]]),
    ]
    selection = select_pairs(results, 1.0, 2, balance=False, balance_step=0.02, seed=0)
    sampled = {(p.result.row, p.chosen, p.rejected) for p in selection.pairs}
    assert len(selection.pairs) == 2 and sampled <= {(0, 0, 1), (0, 0, 2), (0, 1, 2)}
    assert selection.num_possible == 3 and selection.num_sampled == 2
    reasons = {entry["row"]: entry["reason"] for entry in selection.rows_without_pairs}
    assert reasons == {
        1: "no answer with claims",
        2: "no two distinct answers with a score gap >= 1.0",
        3: "no two distinct answers with a score gap >= 1.0",
    }
    again = select_pairs(results, 1.0, 2, balance=False, balance_step=0.02, seed=0)
    assert [(p.chosen, p.rejected) for p in again.pairs] == [(p.chosen, p.rejected) for p in selection.pairs]


def _payloads(answers, verdicts):
    """The stage payloads of one batch holding one prompt, with hand-made labels (p_yes > p_no: confirmed)."""
    stage = {"skipped": [], "seconds": 0.0}
    claims = [[f"There is a {word}." for word in answer.split()] for answer in answers]
    return {
        "candidates": {**stage, "records": [
            {"row": 0, "prompt_id": "p0", "seed": 0, "prompt": [], "instruction": "Describe.", "answers": answers}
        ]},
        "claims": {**stage, "question_writer_fallbacks": 0, "records": [
            {"row": 0, "claims": claims, "questions": [[f"Is there {c[11:-1]}?" for c in cs] for cs in claims]}
        ]},
        "labels": {**stage, "full_forwards": 0, "records": [
            {"row": 0, "p_yes": [[0.9 if ok else 0.1 for ok in v] for v in verdicts],
             "p_no": [[0.1 if ok else 0.9 for ok in v] for v in verdicts]}
        ]},
    }  # fmt: skip


def test_with_a_confirmed_claim_weight_the_answer_confirming_more_wins_and_ties_under_the_paper_score():
    # Both answers name the same absent "pig"; the first also names two true objects, the second one.
    answers = ["cat dog pig", "cat pig"]
    batch = _payloads(answers, [[True, True, False], [True, False]])
    paper = prompt_results([batch], RunReport(), FeedbackConfig().confirmed_claim_weight)
    assert paper[0].scores == [-1.0, -1.0]
    assert select_pairs(paper, 1.0, 2, balance=False, balance_step=0.02, seed=0).pairs == []
    balanced = prompt_results([batch], RunReport(), FeedbackConfig(confirmed_claim_weight=1.0).confirmed_claim_weight)
    assert balanced[0].scores == [1.0, 0.0]
    pairs = select_pairs(balanced, 1.0, 2, balance=False, balance_step=0.02, seed=0).pairs
    assert [(pair.chosen, pair.rejected) for pair in pairs] == [(0, 1)]
    # A weight of 0.5 needs two more confirmed claims for the default gap of 1.
    half = prompt_results([batch], RunReport(), 0.5)
    assert select_pairs(half, 1.0, 2, balance=False, balance_step=0.02, seed=0).pairs == []
    # An answer that drops the absent object and a true one wins under the paper's score and ties under the weight.
    batch = _payloads(["cat dog pig", "cat"], [[True, True, False], [True]])
    assert [p.chosen for p in select_pairs(prompt_results([batch], RunReport()), 1.0, 2, False, 0.02, 0).pairs] == [1]
    assert select_pairs(prompt_results([batch], RunReport(), 1.0), 1.0, 2, False, 0.02, 0).pairs == []


def test_claim_drop_limits_keep_only_pairs_that_do_not_reward_omission():
    # Answer 0 drops the hallucinated claim and keeps both true ones; answer 1 drops it with a true one; answer 2
    # keeps the hallucination and both true claims; answer 3 has only the hallucination; answer 4 names a third true
    # object instead of the hallucination.
    texts = ["a b", "a", "a b x", "x", "a b c"]
    verdicts = [[True, True], [True], [True, True, False], [False], [True, True, True]]
    scores = [answer_score(v) for v in verdicts]
    every = [(0, 2), (0, 3), (1, 2), (1, 3), (4, 2), (4, 3)]
    assert sorted(candidate_pairs(texts, scores, 1.0)) == every
    assert claim_drop_limit(verdicts, None, None) is None
    confirmed = claim_drop_limit(verdicts, 0, None)
    assert sorted(candidate_pairs(texts, scores, 1.0, confirmed)) == [(0, 2), (0, 3), (1, 3), (4, 2), (4, 3)]
    assert sorted(candidate_pairs(texts, scores, 1.0, claim_drop_limit(verdicts, 1, None))) == every
    claims = claim_drop_limit(verdicts, None, 0)  # as many claims: the hallucination replaced, not dropped
    assert sorted(candidate_pairs(texts, scores, 1.0, claims)) == [(0, 3), (1, 3), (4, 2), (4, 3)]
    assert sorted(candidate_pairs(texts, scores, 1.0, claim_drop_limit(verdicts, 0, 0))) == [
        (0, 3),
        (1, 3),
        (4, 2),
        (4, 3),
    ]


def test_select_pairs_max_confirmed_drop_names_the_reason():
    # "cat dog pig" (pig absent) against "cat": the paper's score prefers the answer that also drops the dog.
    omission = prompt_results([_payloads(["cat dog pig", "cat"], [[True, True, False], [True]])], RunReport())
    assert [(p.chosen, p.rejected) for p in select_pairs(omission, 1.0, 2, False, 0.02, 0).pairs] == [(1, 0)]
    dropped = select_pairs(omission, 1.0, 2, False, 0.02, 0, max_confirmed_drop=0)
    assert dropped.pairs == [] and dropped.num_possible == 0
    assert dropped.rows_without_pairs[0]["reason"] == (
        "no two distinct answers with a score gap >= 1.0 whose chosen answer confirms at most 0 claims fewer"
    )
    assert len(select_pairs(omission, 1.0, 2, False, 0.02, 0, max_confirmed_drop=1).pairs) == 1
    both = select_pairs(omission, 1.0, 2, False, 0.02, 0, max_confirmed_drop=1, max_claim_drop=0)
    assert both.rows_without_pairs[0]["reason"].endswith(
        "confirms at most 1 claims fewer and names at most 0 claims fewer"
    )
    # "cat dog" against "cat dog pig": the pig alone is dropped, the pair stays.
    exact = prompt_results([_payloads(["cat dog pig", "cat dog"], [[True, True, False], [True, True]])], RunReport())
    kept = select_pairs(exact, 1.0, 2, False, 0.02, 0, max_confirmed_drop=0)
    assert [(p.chosen, p.rejected) for p in kept.pairs] == [(1, 0)]
    # Dropping the pig keeps both claims confirmed but names one claim fewer.
    assert select_pairs(exact, 1.0, 2, False, 0.02, 0, max_claim_drop=0).pairs == []
    for name in ("max_confirmed_claim_drop", "max_claim_drop"):
        with pytest.raises(ValueError, match=name):
            FeedbackConfig(**{name: -1})
