"""Scores, per-prompt rankings (tie groups), preference pairs and length balancing.

An answer's score is minus its number of rejected claims (RLAIF-V's), plus `confirmed_weight` times its number of
confirmed claims when that weight is set; an answer with no claim has no score and never enters a pair. Within a prompt, every two answers whose scores differ by at least the gap form a pair (the higher one is
chosen), identical texts excepted, and, when largest drops of confirmed claims or of claims are set, only if the
chosen answer confirms (or names) no more than that many claims fewer than the rejected one; `k` of them are sampled with a generator seeded by the prompt. Length balancing
(as in the reference implementation) then searches a grid of ratios r and drops, over the whole dataset, the pairs
whose chosen answer is shorter than the rejected one by more than r of the rejected length, keeping the r whose kept
pairs have the closest mean chosen and rejected lengths.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def answer_score(verdicts: Sequence[bool], confirmed_weight: float = 0.0) -> float | None:
    """`confirmed_weight` times the number of confirmed claims minus the number of rejected ones (0: RLAIF-V's score,
    minus the rejected claims); None for an answer with no claim."""
    if not verdicts:
        return None
    score = -float(sum(not verdict for verdict in verdicts))
    if confirmed_weight:
        score += confirmed_weight * sum(bool(verdict) for verdict in verdicts)
    return score


def ranks(scores: Sequence[float | None]) -> list[int | None]:
    """Competition ranks (1 = best, ties share a rank) of the scored answers; None for unscored ones."""
    return [
        None if score is None else 1 + sum(other is not None and other > score for other in scores) for score in scores
    ]


def ranking(scores: Sequence[float | None]) -> list[int]:
    """Indices of the scored answers from best to worst (ties in index order)."""
    scored = [i for i, score in enumerate(scores) if score is not None]
    return sorted(scored, key=lambda i: (-scores[i], i))


def tie_groups(scores: Sequence[Any]) -> list[list[int]]:
    """Candidate indices from best to worst as tie groups: the scored answers by descending score (equal scores form
    one group, in index order), then every unscored (`None`) answer in one last group of its own. Any sortable score
    works, e.g. a tuple (score, tie-breaker)."""
    ordered = sorted((i for i, score in enumerate(scores) if score is not None), key=lambda i: scores[i], reverse=True)
    groups: list[list[int]] = []
    for i in ordered:  # a stable sort: equal scores stay in index order
        if groups and scores[groups[-1][0]] == scores[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    unscored = [i for i, score in enumerate(scores) if score is None]
    return groups + ([unscored] if unscored else [])


def group_ranks(groups: Sequence[Sequence[int]], num_candidates: int) -> list[int]:
    """Each candidate's rank: the position of its tie group (0 = best; tied candidates share a rank)."""
    if sorted(i for group in groups for i in group) != list(range(num_candidates)):
        raise ValueError(
            f"Tie groups {[list(g) for g in groups]} do not hold each of {num_candidates} candidate ids once"
        )
    ranked = [0] * num_candidates
    for position, group in enumerate(groups):
        for i in group:
            ranked[i] = position
    return ranked


def candidate_pairs(
    texts: Sequence[str],
    scores: Sequence[float | None],
    min_gap: float,
    allowed: Callable[[int, int], bool] | None = None,
) -> list[tuple[int, int]]:
    """Every (chosen, rejected) index pair whose scores differ by at least `min_gap`, one per distinct text pair,
    among those `allowed(chosen, rejected)` accepts (all when None)."""
    pairs, seen = [], set()
    for chosen in ranking(scores):
        for rejected in ranking(scores):
            if scores[chosen] - scores[rejected] < min_gap:
                continue
            if allowed is not None and not allowed(chosen, rejected):
                continue
            key = (texts[chosen].strip(), texts[rejected].strip())
            if key[0] == key[1] or key in seen:
                continue
            seen.add(key)
            pairs.append((chosen, rejected))
    return pairs


def claim_drop_limit(
    verdicts: Sequence[Sequence[bool]], max_confirmed_drop: int | None, max_claim_drop: int | None
) -> Callable[[int, int], bool] | None:
    """The pairs (chosen, rejected) of answers with these claim `verdicts` whose chosen answer confirms at most
    `max_confirmed_drop` claims fewer, and names at most `max_claim_drop` claims fewer, than the rejected one
    (None: no such limit; 0: at least as many), so that no pair prefers an answer for leaving true claims out."""
    if max_confirmed_drop is None and max_claim_drop is None:
        return None
    confirmed = [sum(map(bool, answer)) for answer in verdicts]
    claims = [len(answer) for answer in verdicts]

    def allowed(chosen: int, rejected: int) -> bool:
        if max_confirmed_drop is not None and confirmed[rejected] - confirmed[chosen] > max_confirmed_drop:
            return False
        return max_claim_drop is None or claims[rejected] - claims[chosen] <= max_claim_drop

    return allowed


def sample_pairs(pairs: Sequence[tuple[int, int]], k: int | None, seed: int) -> list[tuple[int, int]]:
    """`k` pairs drawn without replacement by a generator seeded with `seed` (all of them when `k` is None)."""
    if k is None or len(pairs) <= k:
        return list(pairs)
    return random.Random(seed).sample(list(pairs), k)


def num_words(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class LengthBalance:
    """The outcome of length balancing.

    Attributes:
        ratio: The chosen cut ratio, or None when there was nothing to balance.
        keep: For each pair, whether it is kept.
        gap_before: |mean chosen - mean rejected| / mean rejected length over all pairs.
        gap_after: The same over the kept pairs.
    """

    ratio: float | None
    keep: list[bool]
    gap_before: float | None
    gap_after: float | None


def _relative_gap(lengths: Sequence[tuple[int, int]]) -> float | None:
    if not lengths:
        return None
    chosen = sum(c for c, _ in lengths) / len(lengths)
    rejected = sum(r for _, r in lengths) / len(lengths)
    return abs(chosen - rejected) / rejected if rejected else None


def length_balance(lengths: Sequence[tuple[int, int]], step: float = 0.02) -> LengthBalance:
    """Pick the cut ratio r in {0, step, 2 step, ...} < 1 that makes chosen and rejected lengths closest.

    A pair (chosen length c, rejected length r_len) is dropped at ratio r when `(r_len - c) / r_len > r`. Among the
    ratios with the smallest relative gap of mean lengths, the one keeping the most pairs wins, then the smallest.
    """
    before = _relative_gap(lengths)
    if not lengths:
        return LengthBalance(None, [], None, None)
    best: tuple[float, int, float, list[bool]] | None = None
    grid = [round(i * step, 10) for i in range(int(round(1 / step))) if i * step < 1]
    for ratio in grid:
        keep = [rejected == 0 or (rejected - chosen) / rejected <= ratio for chosen, rejected in lengths]
        gap = _relative_gap([pair for pair, kept in zip(lengths, keep) if kept])
        if gap is None:
            continue
        candidate = (gap, -sum(keep), ratio, keep)
        if best is None or candidate[:3] < best[:3]:
            best = candidate
    if best is None:
        return LengthBalance(None, [True] * len(lengths), before, before)
    gap, _, ratio, keep = best
    return LengthBalance(ratio, keep, before, gap)
