"""CHAIR object hallucination rates as an `evaluate` metric (`evaluate.load(rlaifv_trl.metrics.module_path("chair"))`)."""

import datasets
import evaluate

from rlaifv_trl.metrics import chair_metrics


_DESCRIPTION = """CHAIR (Caption Hallucination Assessment with Image Relevance) measures object hallucination: the
objects an answer mentions are read with a vocabulary and compared with the objects truly in the image.
`response_rate` is the fraction of answers mentioning at least one object that mention an absent one (CHAIR_s,
Object HalBench's response level), `mention_rate` the fraction of object mentions that are absent (CHAIR_i, the
mention level; each object counted once per answer), `recall` the fraction of present objects mentioned, and
`mean_length` the mean answer length in words. Vocabularies: "coco" (the 80 COCO categories with CHAIR's synonyms,
plurals and multi-word phrases) and those installed packages register (entry-point group
`rlaifv_trl.chair_vocabularies`)."""

_CITATION = """@inproceedings{rohrbach2018object,
  title = {Object Hallucination in Image Captioning},
  author = {Rohrbach, Anna and Hendricks, Lisa Anne and Burns, Kaylee and Darrell, Trevor and Saenko, Kate},
  booktitle = {Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2018}
}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): The generated answers.
    references (list of list of str): For each answer, the objects present in its image (names or synonyms).
    vocabulary (str): "coco" (default) or a registered vocabulary.
Returns:
    response_rate, mention_rate, recall, mean_length (floats), num_answers, num_answers_with_objects, num_mentions,
    num_hallucinated_mentions (ints).
Examples:
    >>> chair = evaluate.load(rlaifv_trl.metrics.module_path("chair"))
    >>> chair.compute(predictions=["A man and a dog."], references=[["person"]])["mention_rate"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chair(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1809.02156", "https://github.com/LisaAnne/Hallucination"],
        )

    def _compute(self, predictions, references, vocabulary: str = "coco") -> dict:
        return chair_metrics(predictions, references, vocabulary=vocabulary)
