"""Assemble the stage results into the preference, audit and rankings datasets and the pair counts.

Preference dataset: TRL's conversational vision preference format plus provenance columns.

| column | content |
|---|---|
| `prompt` | the input prompt, unchanged (a plain-string prompt becomes one user turn with the images first) |
| `images` | the row's images, converted to RGB (empty for a video-only row) |
| `videos` | only when the prompt dataset has a `videos` column: the row's videos, each a list of frames |
| `chosen`, `rejected` | `[{"role": "assistant", "content": [{"type": "text", "text": answer}]}]` |
| `prompt_id`, `row_index` | the prompt's id and its row in the input dataset |
| `chosen_score`, `rejected_score` | minus the number of rejected claims |
| `chosen_num_claims`, `rejected_num_claims` | claims found in each answer |
| `chosen_rejected_claims`, `rejected_rejected_claims` | the claims the labeler rejected |
| `chosen_candidate_index`, `rejected_candidate_index` | positions among the prompt's candidates (audit dataset) |
| `seed` | the prompt's sampling seed |
| `iteration`, `policy_model`, `labeler_model`, `claim_splitter`, `question_writer` | provenance of the run |

Audit dataset: one row per candidate with its prompt id, row, prompt text (`instruction`), answer, claims, questions, p_yes, p_no, verdicts, score, rank in its prompt
(1 = best, ties share a rank), status ("scored", "empty answer", "no claims") and how often it was chosen or rejected
in the preference dataset.

Rankings dataset: one row per prompt with all its candidates ordered by their claim-label scores (the data of
ranking-based training, e.g. GRPO_rank). Prompts whose candidates all tie are kept (their ranking is one group).

| column | content |
|---|---|
| `prompt`, `images` | as in the preference dataset |
| `prompt_id`, `row_index` | the prompt's id and its row in the input dataset |
| `candidates` | the prompt's answers, in sampling order (candidate id = position) |
| `scores` | minus the number of rejected claims per candidate; null for an empty answer or one without claims |
| `ranking` | candidate ids from best to worst as tie groups, e.g. `[[2], [0, 3], [1]]`: equal scores share a group (in id order); the unscored candidates come last, in one group of their own |
| `ranks` | per candidate, the position of its group in `ranking` (0 = best; tied candidates share a rank) |
| `num_candidates` | the number of candidates |
| `seed`, `iteration`, `policy_model`, `labeler_model`, `claim_splitter`, `question_writer` | as in the preference dataset |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, Image, List, Value

from .inputs import MESSAGE_FEATURE
from .pairs import (
    answer_score,
    candidate_pairs,
    claim_drop_limit,
    group_ranks,
    length_balance,
    num_words,
    ranks,
    sample_pairs,
    tie_groups,
)
from .sampling import derive_seed


RUN_PROVENANCE = ("policy_model", "labeler_model", "claim_splitter", "question_writer")
PREFERENCE_PROVENANCE = Features(
    {
        "prompt_id": Value("string"),
        "row_index": Value("int64"),
        "chosen_score": Value("float64"),
        "rejected_score": Value("float64"),
        "chosen_num_claims": Value("int64"),
        "rejected_num_claims": Value("int64"),
        "chosen_rejected_claims": List(Value("string")),
        "rejected_rejected_claims": List(Value("string")),
        "chosen_candidate_index": Value("int64"),
        "rejected_candidate_index": Value("int64"),
        "seed": Value("int64"),
        "iteration": Value("int64"),
        **{name: Value("string") for name in RUN_PROVENANCE},
    }
)
AUDIT_FEATURES = Features(
    {
        "prompt_id": Value("string"),
        "row_index": Value("int64"),
        "candidate_index": Value("int64"),
        "seed": Value("int64"),
        "instruction": Value("string"),
        "answer": Value("string"),
        "num_words": Value("int64"),
        "claims": List(Value("string")),
        "questions": List(Value("string")),
        "p_yes": List(Value("float64")),
        "p_no": List(Value("float64")),
        "verdicts": List(Value("bool")),
        "num_claims": Value("int64"),
        "num_rejected_claims": Value("int64"),
        "score": Value("float64"),
        "rank": Value("int64"),
        "status": Value("string"),
        "times_chosen": Value("int64"),
        "times_rejected": Value("int64"),
        "iteration": Value("int64"),
        **{name: Value("string") for name in RUN_PROVENANCE},
    }
)
RANKING_PROVENANCE = Features(
    {
        "prompt_id": Value("string"),
        "row_index": Value("int64"),
        "candidates": List(Value("string")),
        "scores": List(Value("float64")),
        "ranking": List(List(Value("int64"))),
        "ranks": List(Value("int64")),
        "num_candidates": Value("int64"),
        "seed": Value("int64"),
        "iteration": Value("int64"),
        **{name: Value("string") for name in RUN_PROVENANCE},
    }
)


@dataclass
class PromptResult:
    """Everything the stages found for one prompt."""

    row: int
    prompt_id: str
    seed: int
    prompt: list[dict[str, Any]]
    instruction: str
    answers: list[str]
    claims: list[list[str]]
    questions: list[list[str]]
    p_yes: list[list[float]]
    p_no: list[list[float]]
    confirmed_claim_weight: float = 0.0

    @property
    def verdicts(self) -> list[list[bool]]:
        return [[yes > no for yes, no in zip(ys, ns)] for ys, ns in zip(self.p_yes, self.p_no)]

    @property
    def scores(self) -> list[float | None]:
        return [answer_score(verdicts, self.confirmed_claim_weight) for verdicts in self.verdicts]

    def rejected_claims(self, candidate: int) -> list[str]:
        return [claim for claim, ok in zip(self.claims[candidate], self.verdicts[candidate]) if not ok]


@dataclass(frozen=True)
class Pair:
    result: PromptResult
    chosen: int
    rejected: int


@dataclass
class PairSelection:
    pairs: list[Pair]
    rows_without_pairs: list[dict[str, Any]]
    num_possible: int
    num_sampled: int
    ratio: float | None
    gap_before: float | None
    gap_after: float | None


def select_pairs(
    results: list[PromptResult],
    min_gap: float,
    pairs_per_prompt: int | None,
    balance: bool,
    balance_step: float,
    seed: int,
    max_confirmed_drop: int | None = None,
    max_claim_drop: int | None = None,
) -> PairSelection:
    """Pairs of every prompt (sampled with the prompt's own generator), then length balancing over all of them;
    `max_confirmed_drop` and `max_claim_drop` as in `claim_drop_limit`."""
    sampled: list[Pair] = []
    without: list[dict[str, Any]] = []
    num_possible = 0
    for result in results:
        scores = result.scores
        allowed = claim_drop_limit(result.verdicts, max_confirmed_drop, max_claim_drop)
        possible = candidate_pairs(result.answers, scores, min_gap, allowed)
        num_possible += len(possible)
        chosen = sample_pairs(possible, pairs_per_prompt, derive_seed(seed, result.prompt_id, "pairs"))
        sampled += [Pair(result, c, r) for c, r in chosen]
        if not possible:
            scored = sum(score is not None for score in scores)
            reason = (
                "no answer with claims" if scored == 0 else f"no two distinct answers with a score gap >= {min_gap}"
            )
            if scored and max_confirmed_drop is not None:
                reason += f" whose chosen answer confirms at most {max_confirmed_drop} claims fewer"
            if scored and max_claim_drop is not None:
                reason += f" {'and' if max_confirmed_drop is not None else 'whose chosen answer'} names at most "
                reason += f"{max_claim_drop} claims fewer"
            without.append({"row": result.row, "prompt_id": result.prompt_id, "reason": reason})
    lengths = [(num_words(p.result.answers[p.chosen]), num_words(p.result.answers[p.rejected])) for p in sampled]
    if balance:
        outcome = length_balance(lengths, balance_step)
        kept = [pair for pair, keep in zip(sampled, outcome.keep) if keep]
        ratio, before, after = outcome.ratio, outcome.gap_before, outcome.gap_after
    else:
        kept, ratio, before, after = sampled, None, None, None
    kept_rows = {pair.result.row for pair in kept}
    for row, prompt_id in sorted(
        {(p.result.row, p.result.prompt_id) for p in sampled if p.result.row not in kept_rows}
    ):
        without.append({"row": row, "prompt_id": prompt_id, "reason": "all pairs removed by length balancing"})
    without.sort(key=lambda entry: entry["row"])
    return PairSelection(kept, without, num_possible, len(sampled), ratio, before, after)


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def preference_dataset(
    pairs: list[Pair],
    images: dict[int, list],
    prompt_feature: Any,
    iteration: int,
    provenance: dict[str, str],
    videos: dict[int, list[list]] | None = None,
) -> Dataset:
    """The preference rows of `pairs`, with `images[row]` as each row's images (and `videos[row]` as its videos, a
    `videos` column `List(List(Image()))`, when `videos` is given)."""
    video_feature = {"videos": List(List(Image()))} if videos is not None else {}
    features = Features(
        {
            "prompt": prompt_feature,
            "images": List(Image()),
            **video_feature,
            "chosen": List(MESSAGE_FEATURE),
            "rejected": List(MESSAGE_FEATURE),
            **PREFERENCE_PROVENANCE,
        }
    )
    rows = []
    for pair in pairs:
        result, chosen, rejected = pair.result, pair.chosen, pair.rejected
        scores = result.scores
        rows.append(
            {
                "prompt": result.prompt,
                "images": images[result.row],
                **({"videos": videos[result.row]} if videos is not None else {}),
                "chosen": _assistant(result.answers[chosen]),
                "rejected": _assistant(result.answers[rejected]),
                "prompt_id": result.prompt_id,
                "row_index": result.row,
                "chosen_score": scores[chosen],
                "rejected_score": scores[rejected],
                "chosen_num_claims": len(result.claims[chosen]),
                "rejected_num_claims": len(result.claims[rejected]),
                "chosen_rejected_claims": result.rejected_claims(chosen),
                "rejected_rejected_claims": result.rejected_claims(rejected),
                "chosen_candidate_index": chosen,
                "rejected_candidate_index": rejected,
                "seed": result.seed,
                "iteration": iteration,
                **provenance,
            }
        )
    return _dataset(rows, features)


def audit_dataset(
    results: list[PromptResult], pairs: list[Pair], iteration: int, provenance: dict[str, str]
) -> Dataset:
    """One row per candidate: claims, questions, probabilities, verdicts, score, rank and use in the pairs."""
    chosen_count: dict[tuple[int, int], int] = {}
    rejected_count: dict[tuple[int, int], int] = {}
    for pair in pairs:
        chosen_count[(pair.result.row, pair.chosen)] = chosen_count.get((pair.result.row, pair.chosen), 0) + 1
        rejected_count[(pair.result.row, pair.rejected)] = rejected_count.get((pair.result.row, pair.rejected), 0) + 1
    rows = []
    for result in results:
        scores, verdicts = result.scores, result.verdicts
        for i, answer in enumerate(result.answers):
            status = "scored" if scores[i] is not None else ("empty answer" if not answer.strip() else "no claims")
            rows.append(
                {
                    "prompt_id": result.prompt_id,
                    "row_index": result.row,
                    "candidate_index": i,
                    "seed": result.seed,
                    "instruction": result.instruction,
                    "answer": answer,
                    "num_words": num_words(answer),
                    "claims": result.claims[i],
                    "questions": result.questions[i],
                    "p_yes": result.p_yes[i],
                    "p_no": result.p_no[i],
                    "verdicts": verdicts[i],
                    "num_claims": len(result.claims[i]),
                    "num_rejected_claims": sum(not ok for ok in verdicts[i]),
                    "score": scores[i],
                    "rank": ranks(scores)[i],
                    "status": status,
                    "times_chosen": chosen_count.get((result.row, i), 0),
                    "times_rejected": rejected_count.get((result.row, i), 0),
                    "iteration": iteration,
                    **provenance,
                }
            )
    return _dataset(rows, AUDIT_FEATURES)


def rankings_dataset(
    results: list[PromptResult],
    images: dict[int, list],
    prompt_feature: Any,
    iteration: int,
    provenance: dict[str, str],
    videos: dict[int, list[list]] | None = None,
) -> Dataset:
    """One row per prompt: its candidates, their scores and their ranking as tie groups (`images[row]`: its images,
    and `videos[row]` its videos when given, as in `preference_dataset`)."""
    video_feature = {"videos": List(List(Image()))} if videos is not None else {}
    features = Features({"prompt": prompt_feature, "images": List(Image()), **video_feature, **RANKING_PROVENANCE})
    rows = []
    for result in results:
        scores = result.scores
        groups = tie_groups(scores)
        rows.append(
            {
                "prompt": result.prompt,
                "images": images[result.row],
                **({"videos": videos[result.row]} if videos is not None else {}),
                "prompt_id": result.prompt_id,
                "row_index": result.row,
                "candidates": result.answers,
                "scores": scores,
                "ranking": groups,
                "ranks": group_ranks(groups, len(result.answers)),
                "num_candidates": len(result.answers),
                "seed": result.seed,
                "iteration": iteration,
                **provenance,
            }
        )
    return _dataset(rows, features)


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    """A dataset of `rows` with `features`, also when there is no row."""
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
