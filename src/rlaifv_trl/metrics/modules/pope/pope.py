"""POPE yes/no metrics as an `evaluate` metric (`evaluate.load(rlaifv_trl.metrics.module_path("pope"))`)."""

import datasets
import evaluate

from rlaifv_trl.metrics import pope_metrics


_DESCRIPTION = """POPE (Polling-based Object Probing Evaluation) asks yes/no questions about whether an object is in
the image. Free-form answers are read as yes or no ("Yes, there is.", "no.", "There is no dog."); answers that say
neither count as wrong and are reported in `num_unparsed`. "Yes" is the positive class: `accuracy`, `precision`,
`recall`, `f1`, and `yes_ratio` (the fraction of answers that say yes)."""

_CITATION = """@inproceedings{li2023evaluating,
  title = {Evaluating Object Hallucination in Large Vision-Language Models},
  author = {Li, Yifan and Du, Yifan and Zhou, Kun and Wang, Jinpeng and Zhao, Wayne Xin and Wen, Ji-Rong},
  booktitle = {Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2023}
}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): The generated answers.
    references (list of str): "yes" or "no" for each answer.
Returns:
    accuracy, precision, recall, f1, yes_ratio (floats), num_answers, num_unparsed (ints).
Examples:
    >>> pope = evaluate.load(rlaifv_trl.metrics.module_path("pope"))
    >>> pope.compute(predictions=["Yes, there is.", "No."], references=["yes", "yes"])["accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pope(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2305.10355", "https://github.com/RUCAIBox/POPE"],
        )

    def _compute(self, predictions, references) -> dict:
        return pope_metrics(predictions, references)
