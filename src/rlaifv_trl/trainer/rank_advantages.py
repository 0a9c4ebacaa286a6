"""Rank-aware advantages of GRPO_rank (Oracle-RLAIF, arXiv 2510.02561), as plain tensor functions.

Ranks start at 0 (the best answer of its group). The gain of a rank is the DCG gain of the method's reviews,
`gain(r) = 1 / ((1 + r) * log2(2 + r))`: 1 for the best answer, 0.32 for the second, 0.17 for the third, so the top of a
ranking weighs most. Tied answers share their positions: each gets the mean gain of the positions the tie occupies
(a two-way tie for first gets (1 + 0.32) / 2 each), so a group's gains always sum to the same total.

Three advantage forms, each a documented reading of the method (its exact formula is not public):

- `"gain"`: the oracle rank's gain minus its group's mean gain (no division by the standard deviation).
- `"rank_gap"`: gain(oracle rank) - gain(the rank the policy gives the answer), centred on the group: positive when
  the oracle ranks an answer above where the policy's own likelihood puts it, negative when below; larger near the
  top. This reads "the penalty grows with the gap between predicted and oracle rank and weighs the top most".
- `"ndcg_penalty"`: the reviews' formula taken literally: delta_i = 1 - gain(predicted rank) / gain(oracle rank) and
  advantage_i = mean_j(delta_j) - delta_i.

Answers whose reward is NaN (every reward function returned None) are left out of their group's ranking and get
advantage 0.
"""

from __future__ import annotations

import math

import torch


ADVANTAGE_FORMS = ("gain", "rank_gap", "ndcg_penalty")


def dcg_gain(rank: torch.Tensor | float) -> torch.Tensor:
    """1 / ((1 + r) * log2(2 + r)) for 0-based rank(s) r."""
    rank = torch.as_tensor(rank, dtype=torch.float64)
    return 1.0 / ((1.0 + rank) * torch.log2(2.0 + rank))


def tie_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks of `values` (a 1-D tensor, higher is better) where ties share the lowest rank of their group
    (competition ranking: 10, 7, 7, 3 -> 0, 1, 1, 3). NaN values get rank -1."""
    ranks = torch.full(values.shape, -1, dtype=torch.long)
    valid = ~torch.isnan(values)
    scored = values[valid]
    ranks[valid] = (scored.unsqueeze(0) > scored.unsqueeze(1)).sum(dim=1)
    return ranks


def tie_gains(values: torch.Tensor) -> torch.Tensor:
    """The gain of each value's rank in its group, ties sharing the mean gain of the positions they occupy; NaN
    values get gain NaN."""
    gains = torch.full(values.shape, math.nan, dtype=torch.float64)
    valid = ~torch.isnan(values)
    scored = values[valid]
    better = (scored.unsqueeze(0) > scored.unsqueeze(1)).sum(dim=1)  # first position of each tie
    equal = (scored.unsqueeze(0) == scored.unsqueeze(1)).sum(dim=1)  # size of each tie
    positions = torch.arange(len(scored), dtype=torch.float64)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), dcg_gain(positions).cumsum(0)])
    gains[valid] = (cumulative[better + equal] - cumulative[better]) / equal
    return gains


def order_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks of `values` without ties (higher is better; equal values keep their order). NaN values get -1."""
    ranks = torch.full(values.shape, -1, dtype=torch.long)
    valid = torch.nonzero(~torch.isnan(values)).flatten()
    order = valid[torch.argsort(-values[valid], stable=True)]
    ranks[order] = torch.arange(len(order))
    return ranks


def rank_advantages(
    rewards: torch.Tensor, num_generations: int, form: str = "gain", policy_scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Advantages from the oracle's order of each group of `num_generations` consecutive answers.

    Args:
        rewards: One value per answer (higher is better); only their order within a group counts.
        num_generations: Answers per group (consecutive in `rewards`).
        form: One of `ADVANTAGE_FORMS` (see the module docstring).
        policy_scores: For `"rank_gap"` and `"ndcg_penalty"`: the policy's score of each answer (its mean or summed
            log-probability), whose order is the policy's predicted ranking.
    """
    if form not in ADVANTAGE_FORMS:
        raise ValueError(f"Unknown rank advantage {form!r}: choose one of {list(ADVANTAGE_FORMS)}")
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    if form != "gain" and policy_scores is None:
        raise ValueError(f"The {form!r} advantage needs the policy's scores of the answers")
    groups = rewards.detach().double().cpu().view(-1, num_generations)
    advantages = torch.zeros_like(groups)
    for g, values in enumerate(groups):
        valid = ~torch.isnan(values)
        if valid.sum() < 2:
            continue  # nothing to compare: no signal
        oracle = tie_gains(values)[valid]
        if form == "gain":
            advantage = oracle - oracle.mean()
        else:
            scores = policy_scores.detach().double().cpu().view(-1, num_generations)[g][valid]
            predicted = dcg_gain(order_ranks(scores))
            if form == "rank_gap":
                gap = oracle - predicted
                advantage = gap - gap.mean()
            else:
                delta = 1.0 - predicted / oracle
                advantage = delta.mean() - delta
        advantages[g, valid] = advantage
    return advantages.view(-1).to(device=rewards.device, dtype=torch.float32)


def kendall_tau(first: torch.Tensor, second: torch.Tensor) -> float:
    """Kendall's tau-a between two scorings of the same items (pairs tied in either count as discordant-free 0)."""
    i, j = torch.triu_indices(len(first), len(first), offset=1)
    if len(i) == 0:
        return math.nan
    concordance = torch.sign(first[i] - first[j]) * torch.sign(second[i] - second[j])
    return float(concordance.double().mean())
