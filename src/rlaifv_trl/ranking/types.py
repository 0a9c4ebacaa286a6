"""The result of ranking one prompt's candidates, and the protocol every oracle ranker follows.

A ranking is a list of tie groups from best to worst (candidate ids are positions in the candidate list, 0-based); a
candidate's rank is the position of its group, so tied candidates share a rank and 0 is best. Scores, where a ranker
has them, are "higher is better"; `None` marks a candidate the ranker could not score, ranked last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..feedback.pairs import group_ranks, tie_groups


STATUSES = ("ok", "partial", "unparseable", "fallback")


@dataclass(frozen=True)
class Ranking:
    """One prompt's candidates ordered by an oracle.

    Attributes:
        groups: Candidate ids from best to worst as tie groups, e.g. `[[2], [0, 3], [1]]`.
        ranks: Per candidate, the position of its group (0 = best; ties share a rank).
        scores: Per candidate, what induced the order, higher is better (claim scores, mean Borda points, ...);
            `None` for a candidate without one.
        status: "ok"; "partial" (some ranker replies were incomplete or unusable, the others decided); "fallback"
            (no usable reply: the fallback ranker decided); "unparseable" (no usable reply and no fallback: all tied).
    """

    groups: list[list[int]]
    ranks: list[int]
    scores: list[float | None]
    status: str = "ok"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Unknown ranking status {self.status!r}; one of {STATUSES}")

    @property
    def num_candidates(self) -> int:
        return len(self.ranks)

    @classmethod
    def from_groups(
        cls, groups: Sequence[Sequence[int]], scores: Sequence[float | None] | None = None, status: str = "ok"
    ) -> Ranking:
        """The ranking given by tie groups (which must hold every candidate id once)."""
        groups = [list(group) for group in groups if group]
        n = sum(len(group) for group in groups)
        return cls(groups, group_ranks(groups, n), list(scores) if scores is not None else [None] * n, status)

    @classmethod
    def from_keys(
        cls, keys: Sequence[Any], scores: Sequence[float | None] | None = None, status: str = "ok"
    ) -> Ranking:
        """Candidates ordered by descending sort key (equal keys tie, in id order); `None` keys last, tied."""
        return cls.from_groups(tie_groups(keys), scores if scores is not None else keys, status)

    @classmethod
    def all_tied(cls, num_candidates: int, status: str = "ok") -> Ranking:
        return cls.from_groups([list(range(num_candidates))], status=status)


@runtime_checkable
class Ranker(Protocol):
    """Orders the candidate answers to a prompt.

    `prompt` is the instruction text or a conversational prompt; `images_or_video` the prompt's images (a list of PIL
    images; frames given here are read as separate images); `candidates` the answers. Videos go in the `videos`
    keyword: the prompt's videos, each a list of frames, shown to the model as videos (`rank_batch`: one list of
    videos per prompt). Callers pass `videos` only when there are some, so rankers without the keyword keep working
    on image prompts. `rank_batch` ranks several prompts (batched where the ranker can).
    """

    name: str

    def rank(
        self, prompt: Any, images_or_video: list[Any], candidates: Sequence[str], videos: Sequence[Any] | None = None
    ) -> Ranking: ...

    def rank_batch(
        self,
        prompts: Sequence[Any],
        images_or_videos: Sequence[list[Any]],
        candidates: Sequence[Sequence[str]],
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> list[Ranking]: ...
