"""CHAIR-style object hallucination rates (Object HalBench's response and mention levels, and recall)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass
class ChairResult:
    """Hallucination rates over a set of answers.

    Attributes:
        response_rate: Answers with at least one hallucinated object / answers that mention at least one object
            (CHAIR_s, Object HalBench "response").
        mention_rate: Hallucinated object mentions / all object mentions (CHAIR_i, Object HalBench "mention").
        recall: True objects mentioned / true objects present.
        num_answers: Answers scored.
        num_answers_with_objects: Answers that mention at least one object.
        num_mentions: Object mentions (each object counted once per answer).
        num_hallucinated_mentions: Mentions of objects absent from the ground truth.
    """

    response_rate: float
    mention_rate: float
    recall: float
    num_answers: int
    num_answers_with_objects: int
    num_mentions: int
    num_hallucinated_mentions: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def chair(
    answers: Sequence[str],
    ground_truth: Sequence[Iterable[str]],
    extract_objects: Callable[[str], list[str]],
) -> ChairResult:
    """CHAIR rates of `answers` against the objects truly present in each answer's image.

    Args:
        answers: The generated answers.
        ground_truth: For each answer, the objects present in its image.
        extract_objects: Maps an answer to the objects it mentions (for COCO: `rlaifv_trl.metrics.coco_objects`).
    """
    if len(answers) != len(ground_truth):
        raise ValueError(f"{len(answers)} answers but {len(ground_truth)} ground-truth sets")
    with_objects = hallucinated_answers = mentions = hallucinated = found = present = 0
    for answer, truth in zip(answers, ground_truth):
        truth = set(truth)
        mentioned = set(extract_objects(answer))
        wrong = mentioned - truth
        mentions += len(mentioned)
        hallucinated += len(wrong)
        with_objects += bool(mentioned)
        hallucinated_answers += bool(wrong)
        found += len(mentioned & truth)
        present += len(truth)
    return ChairResult(
        response_rate=hallucinated_answers / with_objects if with_objects else 0.0,
        mention_rate=hallucinated / mentions if mentions else 0.0,
        recall=found / present if present else 0.0,
        num_answers=len(answers),
        num_answers_with_objects=with_objects,
        num_mentions=mentions,
        num_hallucinated_mentions=hallucinated,
    )


def vocabularies() -> list[str]:
    """The CHAIR vocabularies: "coco" and those installed packages register (entry-point group
    `rlaifv_trl.chair_vocabularies`; the test bed registers "shapesworld")."""
    from ..plugins import CHAIR_VOCABULARIES, registered_names

    return ["coco", *(name for name in registered_names(CHAIR_VOCABULARIES) if name != "coco")]


def vocabulary_extractor(vocabulary: str) -> tuple[Callable[[str], list[str]], Callable[[str], str]]:
    """The object extractor of a vocabulary and the normalization of its ground-truth names.

    "coco": the 80 COCO categories with CHAIR's synonyms (`coco_objects`; ground truth may name a category or a
    synonym, "man" -> "person"); other names: the vocabulary an installed package registers, e.g. the test bed's
    "shapesworld" ("<colour> <shape>" objects).
    """
    if vocabulary == "coco":
        from .coco import coco_category, coco_objects

        return coco_objects, coco_category
    from ..plugins import CHAIR_VOCABULARIES, registered_function

    registered = registered_function(CHAIR_VOCABULARIES, vocabulary)
    if registered is None:
        raise ValueError(f"Unknown vocabulary {vocabulary!r}: use one of {vocabularies()}")
    return registered()


def chair_metrics(
    predictions: Sequence[str], references: Sequence[Iterable[str]], vocabulary: str = "coco"
) -> dict[str, float | int]:
    """CHAIR rates of answers against the objects of their images, with the objects read from a vocabulary.

    Args:
        predictions: The generated answers.
        references: For each answer, the objects present in its image (category names or synonyms).
        vocabulary: "coco" or a registered vocabulary (see `vocabulary_extractor`).

    Returns:
        `ChairResult`'s fields (`response_rate`, `mention_rate`, `recall` and counts) and `mean_length`, the mean
        number of whitespace-separated words of an answer.
    """
    extract, normalize = vocabulary_extractor(vocabulary)
    truth = [{normalize(name) for name in objects} for objects in references]
    result = chair(predictions, truth, extract).to_dict()
    result["mean_length"] = sum(len(text.split()) for text in predictions) / len(predictions) if predictions else 0.0
    return result
