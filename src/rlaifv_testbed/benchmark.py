"""ShapesWorld as a benchmark of `rlaifv-trl evaluate --benchmark shapesworld` (registered in the entry-point group
`rlaifv_trl.benchmarks`): held-out scenes generated on the fly, described (CHAIR) and asked about (POPE)."""

from __future__ import annotations

import math

from rlaifv_trl.evaluation.hallucination import BenchmarkRows

from .data import evaluation_prompts, yes_no_dataset
from .shapes import EVAL_SEED_OFFSET


def shapesworld_question_rows(num_prompts: int, seed: int = 0) -> BenchmarkRows:
    """`num_prompts` existence questions (half "yes", half "no") about held-out ShapesWorld scenes."""
    questions = yes_no_dataset(math.ceil(num_prompts / 2), start_seed=EVAL_SEED_OFFSET, seed=seed)
    questions = questions.select(range(num_prompts))
    return BenchmarkRows(
        "pope", list(questions["prompt"]), list(questions["images"]),
        ["yes" if present else "no" for present in questions["present"]], ids=list(questions["scene_seed"]),
    )  # fmt: skip


def shapesworld_benchmark(num_prompts: int, seed: int = 0) -> dict[str, BenchmarkRows]:
    """`num_prompts` descriptions ("chair", scored with the "shapesworld" vocabulary) and `num_prompts` existence
    questions ("pope") about held-out ShapesWorld scenes."""
    descriptions = evaluation_prompts(num_prompts, seed=seed)
    chair = BenchmarkRows(
        "chair", list(descriptions["prompt"]), list(descriptions["images"]), list(descriptions["objects"]),
        ids=list(descriptions["scene_seed"]), vocabulary="shapesworld",
    )  # fmt: skip
    return {"chair": chair, "pope": shapesworld_question_rows(num_prompts, seed=seed)}
