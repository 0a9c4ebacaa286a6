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
# The labels scikit-learn compares: a parsed answer or a reference (True, False), and an unparsed answer (None).
_LABELS = {True: "yes", False: "no", None: "neither"}


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
    """POPE metrics of free-form answers against "yes"/"no" references (or booleans), by scikit-learn.

    "Yes" is the positive class. An answer that says neither yes nor no (`parse_yes_no` returns `None`) counts as
    wrong: it is never a true or false positive, it is a false negative when the reference is "yes", and it is not
    counted in `yes_ratio`. A ratio whose denominator is 0 (no answer said yes, no reference is yes, no answers) is 0.

    Returns:
        `accuracy` (correct answers / answers), `precision` (true yes / answered yes), `recall` (true yes /
        reference yes), `f1`, `yes_ratio` (answered yes / answers), `num_answers` and `num_unparsed`.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    answers = [_LABELS[parse_yes_no(prediction)] for prediction in predictions]
    truths = [_LABELS[_as_label(reference)] for reference in references]
    total = len(answers)
    counts = {"num_answers": total, "num_unparsed": answers.count(_LABELS[None])}
    if not total:  # scikit-learn refuses empty input
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, **counts}
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support  # on first use: 1 s to import

    # The scores of the label "yes" alone: an unparsed answer is a third label, so it is neither a yes nor right.
    (precision,), (recall,), (f1,), _ = precision_recall_fscore_support(
        truths, answers, labels=[_LABELS[True]], average=None, zero_division=0.0
    )
    return {
        "accuracy": float(accuracy_score(truths, answers)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "yes_ratio": answers.count(_LABELS[True]) / total,
        **counts,
    }
