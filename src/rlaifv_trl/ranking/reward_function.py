"""`RankerReward`: an oracle ranker as a TRL reward function (`GRPOTrainer(reward_funcs=...)`).

TRL calls a reward function with the batch's prompts and completions and every other dataset column as keyword
arguments (`images`, `videos`, `prompt_id`, ...), each prompt repeated `num_generations` times consecutively. The
completions of one call are grouped by identical prompt, images and videos (compared by pixels), and `prompt_id` when
the column exists; each group is ranked by the oracle (all groups in one `rank_batch`, with the row's `images` or
`image` value as images, and its `videos` value, when the column has any video, as `videos=`: one list of videos per
prompt, each a list of frames), and each completion gets, with r its 0-based rank in its group:

- "gain": 1 / ((1 + r) * log2(2 + r)), the DCG gain of Oracle-RLAIF's GRPO_rank (1 for the best, then 0.32, 0.17, 0.11, ...);
- "neg_rank": -r;
- "score": the ranker's own score (claim score, or aggregate Borda points); a candidate without one gets the
  group's lowest score minus 1 (0 when no candidate has one), so it stays below every scored candidate.

Groups are formed within one call: when a prompt's generations are split across processes (or calls), each part is
ranked on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from PIL import Image

from ..trainer.rank_advantages import dcg_gain as rank_gain
from ..validation import message_text, row_videos
from .types import Ranker, Ranking


REWARDS = ("gain", "neg_rank", "score")


def dcg_gain(rank: int) -> float:
    """1 / ((1 + rank) * log2(2 + rank)): 1 for rank 0, then decreasing (GRPO_rank's gain, as a float)."""
    return float(rank_gain(rank))


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or (conversational) the text of its messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return message_text(completion.get("content"))
    return " ".join(completion_text(message) for message in completion)


def _content_key(value: Any) -> str:
    """A key equal for equal prompts or images: images (which TRL puts inside conversational prompts, decoded anew
    for every repetition) count by their pixels, not by object identity."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=_digest)


def _digest(value: Any) -> str:
    if isinstance(value, Image.Image):
        return f"{value.mode}{value.size}:" + hashlib.sha1(value.tobytes()).hexdigest()
    return repr(value)


class RankerReward:
    """A ranker as a reward function with TRL's signature `(prompts, completions, **kwargs) -> list[float]`.

    Args:
        ranker: The oracle (`DivideAndConquerRanker`, `ListwiseRanker`, or any `Ranker`).
        reward: "gain", "neg_rank" or "score" (see the module docstring).
        name: The reward's `__name__` (TRL logs it as `rewards/<name>/mean`); default `"<reward>_rank_reward"`.
    """

    def __init__(self, ranker: Ranker, reward: str = "gain", name: str | None = None):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        self.ranker, self.reward = ranker, reward
        self.__name__ = name or f"{reward}_rank_reward"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        visuals = kwargs.get("images") or kwargs.get("image")
        videos = kwargs.get("videos") if any(kwargs.get("videos") or []) else None
        ids = kwargs.get("prompt_id")
        groups: dict[tuple[str, str, str, Any], list[int]] = {}
        for i, prompt in enumerate(prompts):
            key = (
                _content_key(prompt),
                _content_key(visuals[i]) if visuals else "",
                _content_key(videos[i]) if videos else "",
                ids[i] if ids else None,
            )
            groups.setdefault(key, []).append(i)
        members = list(groups.values())
        texts = [completion_text(completion) for completion in completions]
        video_lists = {"videos": [_video_list(videos[group[0]]) for group in members]} if videos else {}
        rankings = self.ranker.rank_batch(
            [prompts[group[0]] for group in members],
            [_visual_list(visuals[group[0]]) if visuals else [] for group in members],
            [[texts[i] for i in group] for group in members],
            **video_lists,
        )
        rewards = [0.0] * len(completions)
        for group, ranking in zip(members, rankings):
            for position, value in zip(group, self._values(ranking)):
                rewards[position] = value
        return rewards

    def _values(self, ranking: Ranking) -> list[float]:
        if self.reward == "gain":
            return [dcg_gain(r) for r in ranking.ranks]
        if self.reward == "neg_rank":
            return [-float(r) for r in ranking.ranks]
        scored = [s for s in ranking.scores if s is not None]
        missing = min(scored) - 1.0 if scored else 0.0
        return [float(s) if s is not None else missing for s in ranking.scores]


def _video_list(value: Any) -> list[list[Any]]:
    """A row's videos as lists of PIL frames (stored frames are decoded; a bad one raises `BadRow` naming `videos`)."""
    return row_videos(value, "videos")


def _visual_list(value: Any) -> list[Any]:
    """A row's images (or video frames) as a list: TRL passes `images` as a list, `image` as one image."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
