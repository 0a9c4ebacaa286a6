"""POPE-style yes/no metrics (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models", 2023):
accuracy, precision, recall and F1 of "yes" answers to object-existence questions, and the ratio of "yes" answers."""

from __future__ import annotations

import re
from collections.abc import Sequence


_YES = frozenset({"yes", "yeah", "yep", "yup", "correct", "true", "affirmative"})
_NO = frozenset({"no", "nope", "not", "false", "incorrect", "negative", "none", "nothing", "never"})
_NEGATIONS = frozenset({"no", "not", "none", "nothing", "never", "nobody", "neither", "nor", "cannot"})
_UNSURE = re.compile(
    r"\b(not sure|unsure|unclear|(don't|do not|cannot|can't|can not) (know|tell|say|determine|see whether|be sure)|"
    r"impossible to (tell|say|determine))\b"
)
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def parse_yes_no(text: str) -> bool | None:
    """`True` for a "yes" answer, `False` for a "no" answer, `None` when the answer says neither.

    The first word decides when it is a yes or no word ("Yes, there is.", "no.", "Yes it is", "Nope"); otherwise the
    first sentence is read: a "yes" without negation is yes, a negation ("There is no dog", "isn't") without "yes" is
    no. Abstentions ("I'm not sure", "I cannot tell") and answers with neither are `None`.
    """
    text = text.strip().lower().replace("\u2019", "'")
    words = _TOKEN.findall(text)
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO and not _UNSURE.search(text):
        return False
    first_sentence = re.split(r"(?<=[.!?])\s|\n", text, maxsplit=1)[0]
    if _UNSURE.search(first_sentence):
        return None
    words = _TOKEN.findall(first_sentence)
    has_yes = any(word in _YES for word in words)
    has_no = any(word in _NEGATIONS or word.endswith("n't") for word in words)
    if has_yes != has_no:
        return has_yes
    return None


def _as_label(reference: str | bool) -> bool:
    if isinstance(reference, bool):
        return reference
    label = parse_yes_no(str(reference))
    if label is None:
        raise ValueError(f"A reference must be 'yes' or 'no' (or a bool), got {reference!r}")
    return label


def pope_metrics(predictions: Sequence[str], references: Sequence[str | bool]) -> dict[str, float | int]:
    """POPE metrics of free-form answers against "yes"/"no" references (or booleans).

    "Yes" is the positive class. An answer that says neither yes nor no (`parse_yes_no` returns `None`) counts as
    wrong: it is never a true or false positive, it is a false negative when the reference is "yes", and it is not
    counted in `yes_ratio`.

    Returns:
        `accuracy` (correct answers / answers), `precision` (true yes / answered yes), `recall` (true yes /
        reference yes), `f1`, `yes_ratio` (answered yes / answers), `num_answers` and `num_unparsed`.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    true_positive = false_positive = true_negative = unparsed = positives = 0
    for prediction, reference in zip(predictions, references):
        answer, truth = parse_yes_no(prediction), _as_label(reference)
        positives += truth
        if answer is None:
            unparsed += 1
        elif answer:
            true_positive += truth
            false_positive += not truth
        else:
            true_negative += not truth
    total = len(predictions)
    answered_yes = true_positive + false_positive
    precision = true_positive / answered_yes if answered_yes else 0.0
    recall = true_positive / positives if positives else 0.0
    return {
        "accuracy": (true_positive + true_negative) / total if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": answered_yes / total if total else 0.0,
        "num_answers": total,
        "num_unparsed": unparsed,
    }
