"""Reading a ranking out of a model's free-text reply.

`parse_ranking(text, n)` reads the candidate labels 1..n a reply names, in order, and returns them as tie groups of
0-based candidate ids. Rules, in order:

1. Where to read: the first bracketed list holding a label (`[3, 1, 2]`); else the longest chain of labels joined by
   `>` or `=` (`3 > 1 = 2`); else the whole reply, with line numbering (`1. `, `2) ` at a line's start) left out
   when the line names a label after it.
2. What a label is: any integer in 1..n. Out-of-range integers and all other text are ignored; a label seen before
   is ignored too (its first occurrence counts).
3. Ties: labels joined by `=` share a group; every other separator (`>`, commas, words) starts a new group.
4. Labels the reply never names are appended as one last tie group: the parse is "partial".
5. A reply naming no label is "unparseable" (its groups: every candidate tied).

So "3 > 1 > 2", "[3, 1, 2]" and "Answer 3 is best, then 1, then 2" all give `[[2], [0], [1]]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_CHAIN = re.compile(r"\d+(?:\s*[>=]\s*\d+)+")
_NUMBERING = re.compile(r"^\s*\d+\s*[.):]\s+(?=\D*\d)", re.MULTILINE)
_TOKENS = re.compile(r"\d+|=")


@dataclass(frozen=True)
class ParsedRanking:
    """The ranking read from one reply.

    Attributes:
        groups: 0-based candidate ids from best to worst as tie groups (all of them, see `status`).
        status: "ok" (every label named), "partial" (missing labels appended as a last group) or "unparseable".
        num_named: How many distinct labels the reply named.
    """

    groups: list[list[int]]
    status: str
    num_named: int


def _segment(text: str, n: int) -> str:
    for match in _BRACKETS.finditer(text):
        if any(1 <= int(number) <= n for number in re.findall(r"\d+", match.group(1))):
            return match.group(1)
    chains = [match.group(0) for match in _CHAIN.finditer(text)]
    if chains:
        return max(chains, key=len)
    return _NUMBERING.sub(" ", text)


def parse_ranking(text: str | None, num_candidates: int) -> ParsedRanking:
    """The tie groups a reply ranks candidates labelled 1..`num_candidates` into (rules in the module docstring)."""
    n = num_candidates
    groups: list[list[int]] = []
    seen: set[int] = set()
    tie = False
    for token in _TOKENS.findall(_segment(text or "", n)):
        if token == "=":
            tie = True
            continue
        label = int(token)
        if 1 <= label <= n and label - 1 not in seen:
            seen.add(label - 1)
            if tie and groups:
                groups[-1].append(label - 1)
            else:
                groups.append([label - 1])
        tie = False
    if not groups:
        return ParsedRanking([list(range(n))] if n else [], "unparseable", 0)
    missing = [i for i in range(n) if i not in seen]
    status = "partial" if missing else "ok"
    return ParsedRanking(groups + ([missing] if missing else []), status, len(seen))
