"""Divide: the pluggable claim splitter and question writer, and the questions sent to the labeler.

A claim splitter turns each answer into atomic claims; a question writer turns each claim into a polar question that
is answered "yes" exactly when the claim holds. Both are plain objects with a `name` and one method, so any
implementation plugs in:

```python
class MySplitter:
    name = "my-splitter"
    def split(self, prompts: Sequence[str], answers: Sequence[str], seed: int) -> list[list[str]]: ...

class MyQuestionWriter:
    name = "my-writer"
    def write(self, claims: Sequence[str], seed: int) -> list[str]: ...
```

`seed` is the seed of the prompt the inputs belong to, for writers that sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .llm_claims import LLMClaimSplitter, LLMQuestionWriter
from .rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter


@runtime_checkable
class ClaimSplitter(Protocol):
    """Splits answers into atomic claims."""

    name: str

    def split(self, prompts: Sequence[str], answers: Sequence[str], seed: int) -> list[list[str]]:
        """The claims of each answer (`prompts[i]` is the instruction `answers[i]` replies to)."""
        ...


@runtime_checkable
class QuestionWriter(Protocol):
    """Turns claims into polar questions."""

    name: str

    def write(self, claims: Sequence[str], seed: int) -> list[str]:
        """One polar question per claim ("" when none could be written)."""
        ...


def with_instruction(question: str, instruction: str) -> str:
    """The question as sent to the labeler: the polar question followed by the yes/no instruction."""
    question, instruction = question.strip(), instruction.strip()
    if question.endswith(instruction):
        return question
    return f"{question} {instruction}"


__all__ = [
    "ClaimSplitter",
    "LLMClaimSplitter",
    "LLMQuestionWriter",
    "QuestionWriter",
    "RuleBasedClaimSplitter",
    "RuleBasedQuestionWriter",
    "with_instruction",
]
