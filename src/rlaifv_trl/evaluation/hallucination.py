"""Hallucination benchmarks: generate a model's answers on a benchmark, score them, and write a report.

Benchmarks (`rlaifv-trl evaluate MODEL --benchmark ...`):
- `pope`: yes/no object-existence questions in POPE's published schema (`lmms-lab/POPE` on the Hub: `question_id`,
  `question`, `answer` "yes"/"no", `image_source`, `image`, `category`), scored with `pope_metrics`, overall and per
  `category`;
- `chair`: descriptions of images with ground-truth objects (`image` or `images`, `question` or `prompt` (optional),
  `objects`: list of strings), scored with `chair_metrics` and a vocabulary ("coco" by default);
- any benchmark an installed package registers (entry-point group `rlaifv_trl.benchmarks`, see `rlaifv_trl.plugins`),
  which generates its own rows: the test bed's `shapesworld` (held-out scenes, both descriptions and existence
  questions).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from PIL import Image
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..data import user_turn
from ..generation import generate_batch, prompts_progress
from ..metrics import chair_metrics, pope_metrics, vocabulary_extractor
from ..plugins import BENCHMARKS as REGISTERED_BENCHMARKS
from ..plugins import registered_function, registered_names
from ..validation import (
    BadRow,
    RowValidation,
    ValidationReport,
    check_text,
    conversational_prompt,
    message_text,
    row_images,
    undecoded,
)


DATASET_BENCHMARKS = ("pope", "chair")
DEFAULT_POPE_DATASET = "lmms-lab/POPE"
# Appended to POPE questions that do not already ask for a yes/no answer.
YES_NO_INSTRUCTION = "Please answer yes or no."
DEFAULT_DESCRIPTION_PROMPT = "Describe the image in detail."
_SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
_COLUMNS = {"pope": ("question", "answer"), "chair": ("objects",)}


@dataclass
class BenchmarkRows:
    """What a model is asked, and what its answers are scored against.

    Attributes:
        kind: "pope" (yes/no answers) or "chair" (descriptions).
        prompts: Conversational prompts (one user turn with image placeholders).
        images: The images of each prompt.
        references: "yes"/"no" for POPE, the list of present objects for CHAIR.
        categories: POPE's `category` of each row, when the dataset has one.
        ids: The id of each row (`question_id`, else its index).
        vocabulary: The CHAIR vocabulary its descriptions are scored with (see `rlaifv_trl.metrics.vocabularies`).
        report: The rows read and skipped, each skipped one with its index, id, code, field and message.
    """

    kind: str
    prompts: list[list[dict[str, Any]]]
    images: list[list[Image.Image]]
    references: list[Any]
    categories: list[str] | None = None
    ids: list[Any] = field(default_factory=list)
    vocabulary: str = "coco"
    report: ValidationReport = field(default_factory=lambda: ValidationReport("benchmark"))

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return self.report.skipped


def dataset_folder(path_or_id: str | None) -> Path | None:
    """The folder of a local dataset (a folder, or a data file's folder), where its images given by path may be read
    from; `None` for a Hub id."""
    path = Path(path_or_id) if path_or_id else None
    if path is None or not path.exists():
        return None
    return path if path.is_dir() else path.parent


def load_table(path_or_id: str, split: str | None = None) -> Dataset:
    """A dataset from a `save_to_disk` folder, a data file (parquet, json, jsonl, csv, arrow), a folder of data files or
    a Hub repository. With several splits, `split` picks one (default: the only split, else "test")."""
    path = Path(path_or_id)
    if path.is_dir() and any((path / name).is_file() for name in _SAVED_DATASET_FILES):
        loaded = load_from_disk(str(path))
    elif path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Cannot read {path}: use one of {sorted(_FILE_BUILDERS)} or a save_to_disk folder")
        loaded = load_dataset(builder, data_files=str(path), split="train")
    else:
        if not path.is_dir() and (path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1):
            raise FileNotFoundError(f"No dataset at {path_or_id}")
        loaded = load_dataset(path_or_id, split=split) if split else load_dataset(path_or_id)
    if isinstance(loaded, DatasetDict):
        if split is None:
            if len(loaded) == 1:
                split = next(iter(loaded))
            elif "test" in loaded:
                split = "test"
            else:
                raise ValueError(f"{path_or_id} has splits {sorted(loaded)}: choose one with --split")
        if split not in loaded:
            raise ValueError(f"{path_or_id} has no split {split!r}; it has {sorted(loaded)}")
        loaded = loaded[split]
    return loaded


def seeded_subset(dataset: Dataset, num_rows: int | None, seed: int) -> Dataset:
    """A seeded random subset of `num_rows` rows (all rows, in order, when `num_rows` is `None` or large enough)."""
    if num_rows is None or num_rows >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(num_rows))


def check_columns(dataset: Dataset, benchmark: str) -> None:
    """Raise `ValueError`, naming them, when the dataset lacks columns the benchmark ("pope", "chair") reads."""
    missing = [column for column in _COLUMNS[benchmark] if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The {benchmark} dataset lacks the columns {missing} (it has {dataset.column_names}); see docs/evaluation.md"
        )
    if not {"image", "images"} & set(dataset.column_names):
        raise ValueError(f"The {benchmark} dataset has no `image` column (it has {dataset.column_names})")


def _rows(dataset: Dataset, rows: BenchmarkRows, read: Callable[[dict[str, Any]], None]) -> BenchmarkRows:
    """Add every row `read(row)` accepts to `rows`; a row it refuses (`BadRow`) is skipped and recorded in
    `rows.report` with its code, so that one bad row never stops an evaluation. Rows are read as stored (images
    undecoded): `read` reads their images through the validation layer, and nothing else opens a file."""
    rows.report = ValidationReport(f"{rows.kind} benchmark")
    for index, row in enumerate(undecoded(dataset)):
        try:
            read(row)
        except BadRow as problem:
            rows.report.skip(index, _row_id(row, index), problem)
        else:
            rows.ids.append(_row_id(row, index))
            rows.report.keep()
    if rows.skipped:
        rows.report.log()
    return rows


def _row_id(row: dict[str, Any], index: int) -> Any:
    return row.get("question_id", row.get("prompt_id", index))


def _row_images(row: dict[str, Any], validation: RowValidation) -> list[Image.Image]:
    """The row's RGB images (`image`, else `images`)."""
    column = "image" if row.get("image") is not None or "images" not in row else "images"
    return row_images(row.get(column), column, validation)


def _question(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> str:
    question = row.get("question")
    if question is not None and not isinstance(question, str):
        raise BadRow("prompt.malformed", f"a question of type {type(question).__name__}", "question")
    if not question or not question.strip():
        raise BadRow("prompt.missing", "empty question", "question")
    check_text(question, "question", tokenizer)
    return question.strip()


def pope_rows(
    dataset: Dataset, validation: RowValidation | None = None, tokenizer: PreTrainedTokenizerBase | None = None
) -> BenchmarkRows:
    """POPE rows (`question`, `answer`, `image`, optional `category` and `question_id`) as prompts and references.

    Rows whose image cannot or may not be read (`validation`: where image paths may be read from, URLs, size), whose
    question is empty or holds special tokens of `tokenizer`, or whose answer is not yes/no are skipped and recorded.
    """
    check_columns(dataset, "pope")
    validation = validation or RowValidation()
    rows = BenchmarkRows("pope", [], [], [], [] if "category" in dataset.column_names else None)

    def read(row: dict[str, Any]) -> None:
        question = _question(row, tokenizer)
        answer = row.get("answer")
        answer = answer.strip().lower() if isinstance(answer, str) else answer
        if answer not in ("yes", "no"):
            raise BadRow("reference.malformed", f"{answer!r} is neither yes nor no", "answer")
        images = _row_images(row, validation)
        if "yes or no" not in question.lower():
            question = f"{question} {YES_NO_INSTRUCTION}"
        rows.prompts.append(user_turn(question, num_images=len(images)))
        rows.images.append(images)
        rows.references.append(answer)
        if rows.categories is not None:
            rows.categories.append(str(row["category"]))

    return _rows(dataset, rows, read)


def chair_rows(
    dataset: Dataset, validation: RowValidation | None = None, tokenizer: PreTrainedTokenizerBase | None = None
) -> BenchmarkRows:
    """Description rows (`image`/`images`, optional `question`/`prompt`, `objects`) as prompts and references.

    Rows whose image cannot or may not be read, whose prompt is malformed (its image placeholders do not match the
    images) or holds special tokens of `tokenizer`, or whose `objects` is not a list of strings are skipped and
    recorded.
    """
    check_columns(dataset, "chair")
    validation = validation or RowValidation()
    rows = BenchmarkRows("chair", [], [], [])

    def read(row: dict[str, Any]) -> None:
        objects = row.get("objects")
        if not isinstance(objects, list) or not all(isinstance(name, str) for name in objects):
            raise BadRow("reference.malformed", "objects is not a list of strings", "objects")
        images = _row_images(row, validation)
        name = "question" if row.get("question") else "prompt"
        prompt = conversational_prompt(row.get(name) or DEFAULT_DESCRIPTION_PROMPT, len(images), name)
        check_text(" ".join(message_text(message["content"]) for message in prompt), name, tokenizer)
        rows.prompts.append(prompt)
        rows.images.append(images)
        rows.references.append(list(objects))

    return _rows(dataset, rows, read)


def benchmarks() -> list[str]:
    """The benchmarks of `rlaifv-trl evaluate`: POPE and CHAIR on a dataset, and those installed packages register."""
    return [
        *DATASET_BENCHMARKS,
        *(name for name in registered_names(REGISTERED_BENCHMARKS) if name not in DATASET_BENCHMARKS),
    ]


def generate_answers(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    rows: BenchmarkRows,
    *,
    batch_size: int = 8,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    progress: bool = False,
    description: str = "Generating",
) -> list[str]:
    """One answer per row, in batches; a temperature of 0 decodes greedily."""
    generation: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    generation.update({"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False})
    torch.manual_seed(seed)
    answers: list[str] = []
    with prompts_progress(description, len(rows), disable=not progress):
        for start in range(0, len(rows), batch_size):
            stop = start + batch_size
            answers += generate_batch(
                model, processor, rows.prompts[start:stop], rows.images[start:stop], **generation
            )
    return answers


def score(rows: BenchmarkRows, answers: Sequence[str]) -> dict[str, Any]:
    """The metrics of `answers` (and for POPE with categories, the metrics of each category)."""
    if rows.kind == "chair":
        return {"metrics": chair_metrics(answers, rows.references, vocabulary=rows.vocabulary)}
    scored: dict[str, Any] = {"metrics": pope_metrics(answers, rows.references)}
    if rows.categories:
        scored["per_category"] = {
            category: pope_metrics(
                [a for a, c in zip(answers, rows.categories) if c == category],
                [r for r, c in zip(rows.references, rows.categories) if c == category],
            )
            for category in sorted(set(rows.categories))
        }
    return scored


@dataclass(frozen=True)
class EvaluationRequest:
    """The options of `rlaifv-trl evaluate`."""

    model: str
    benchmark: str
    dataset: str | None = None
    split: str | None = None
    num_prompts: int | None = None
    temperature: float = 0.0
    max_new_tokens: int = 64
    batch_size: int = 8
    seed: int = 0
    vocabulary: str = "coco"
    output_dir: str = "evaluation"
    revision: str | None = "main"
    dtype: str | None = "float32"
    trust_remote_code: bool = False
    image_root: str | None = None
    allow_image_urls: bool = False
    max_image_pixels: int | None = None

    def row_validation(self) -> RowValidation:
        """What the dataset's rows may contain (`RowValidation`); images given by path are read from `image_root`, by
        default from the dataset's own folder when it is local."""
        settings = {"image_root": self.image_root, "allow_image_urls": self.allow_image_urls}
        if self.max_image_pixels is not None:
            settings["max_image_pixels"] = self.max_image_pixels
        return RowValidation(**settings).rooted_at(dataset_folder(self.dataset))


def benchmark_dataset(request: EvaluationRequest) -> Dataset | None:
    """The dataset a request's benchmark reads (a seeded subset of `num_prompts` rows), its columns checked; `None`
    for a registered benchmark, which generates its rows."""
    if request.benchmark not in benchmarks():
        raise ValueError(f"Unknown benchmark {request.benchmark!r}: use one of {benchmarks()}")
    if request.benchmark not in DATASET_BENCHMARKS:
        if request.dataset is not None:
            raise ValueError(
                f"The {request.benchmark} benchmark generates its rows; --dataset is for {' and '.join(DATASET_BENCHMARKS)}"
            )
        return None
    if request.benchmark == "chair":
        if request.dataset is None:
            raise ValueError("The chair benchmark needs --dataset (columns image, objects and optionally question)")
        vocabulary_extractor(request.vocabulary)  # an unknown vocabulary fails before anything loads
    dataset = load_table(request.dataset or DEFAULT_POPE_DATASET, request.split)
    check_columns(dataset, request.benchmark)
    return seeded_subset(dataset, request.num_prompts, request.seed)


def benchmark_rows(
    request: EvaluationRequest, dataset: Dataset | None, tokenizer: PreTrainedTokenizerBase | None = None
) -> dict[str, BenchmarkRows]:
    """The rows of a request's benchmark by part name ("pope", "chair"), from its `benchmark_dataset`; rows whose
    images fail the request's `row_validation` or whose questions hold special tokens of `tokenizer` are skipped.
    A registered benchmark generates its parts itself (`function(num_prompts, seed)`, 200 prompts by default)."""
    if dataset is None:
        generate = registered_function(REGISTERED_BENCHMARKS, request.benchmark)
        return generate(request.num_prompts or 200, seed=request.seed)
    if request.benchmark == "pope":
        return {"pope": pope_rows(dataset, request.row_validation(), tokenizer)}
    rows = chair_rows(dataset, request.row_validation(), tokenizer)
    rows.vocabulary = request.vocabulary
    return {"chair": rows}


def run_evaluation(request: EvaluationRequest) -> dict[str, Any]:
    """Load the model, answer the benchmark, score, and write `report.json`, `report.md` and `answers.jsonl` into
    `request.output_dir`. Returns the report."""
    from ..loading import ModelLoading, load_vlm

    dataset = benchmark_dataset(request)  # a wrong dataset fails before the model loads
    loading = ModelLoading(revision=request.revision, dtype=request.dtype, trust_remote_code=request.trust_remote_code)
    model, processor = load_vlm(request.model, loading)
    parts = benchmark_rows(request, dataset, getattr(processor, "tokenizer", processor))
    report: dict[str, Any] = {
        "model": request.model,
        "benchmark": request.benchmark,
        "dataset": request.dataset or (DEFAULT_POPE_DATASET if request.benchmark == "pope" else None),
        "split": request.split,
        "settings": {
            "num_prompts": request.num_prompts,
            "temperature": request.temperature,
            "max_new_tokens": request.max_new_tokens,
            "batch_size": request.batch_size,
            "seed": request.seed,
            **({"vocabulary": parts["chair"].vocabulary} if "chair" in parts else {}),
            **(_validation_settings(request) if dataset is not None else {}),
        },
        "results": {},
    }
    output_dir = Path(request.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "answers.jsonl", "w", encoding="utf-8") as answers_file:
        for name, rows in parts.items():
            answers = generate_answers(
                model, processor, rows, batch_size=request.batch_size, temperature=request.temperature,
                max_new_tokens=request.max_new_tokens, seed=request.seed, progress=True,
                description=f"{request.benchmark} ({name})" if len(parts) > 1 else request.benchmark,
            )  # fmt: skip
            report["results"][name] = {
                "num_rows": len(rows), **score(rows, answers), "num_skipped": len(rows.skipped),
                "skipped": rows.skipped, "skipped_by_code": rows.report.by_code(),
            }  # fmt: skip
            for row_id, prompt, reference, answer in zip(rows.ids, rows.prompts, rows.references, answers):
                text = message_text(prompt[-1]["content"])
                record = {"part": name, "id": row_id, "prompt": text, "reference": reference, "answer": answer}
                answers_file.write(json.dumps(record, default=str) + "\n")
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (output_dir / "report.md").write_text(markdown_report(report), encoding="utf-8")
    return report


def _validation_settings(request: EvaluationRequest) -> dict[str, Any]:
    validation = request.row_validation()
    return {
        "image_root": validation.image_root, "allow_image_urls": validation.allow_image_urls,
        "max_image_pixels": validation.max_image_pixels,
    }  # fmt: skip


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def markdown_report(report: dict[str, Any]) -> str:
    """A report as Markdown: the settings, then one table of metrics per part (and one row per POPE category)."""
    lines = [f"# {report['benchmark']} evaluation of `{report['model']}`", ""]
    if report.get("dataset"):
        split = f" (split `{report['split']}`)" if report.get("split") else ""
        lines += [f"Dataset: `{report['dataset']}`{split}", ""]
    settings = ", ".join(f"{key} = {value}" for key, value in report["settings"].items() if value is not None)
    lines += [f"Settings: {settings}", ""]
    for name, result in report["results"].items():
        lines += [
            f"## {name.upper()} ({result['num_rows']} rows, {result.get('num_skipped', 0)} skipped)",
            "",
            "| Metric | Value |",
            "| --- | --- |",
        ]
        lines += [f"| {key} | {_number(value)} |" for key, value in result["metrics"].items()]
        lines.append("")
        if result.get("per_category"):
            keys = list(next(iter(result["per_category"].values())))
            lines += ["| Category | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
            for category, metrics in result["per_category"].items():
                lines.append(f"| {category} | " + " | ".join(_number(metrics[key]) for key in keys) + " |")
            lines.append("")
        if result.get("skipped_by_code"):
            lines += ["Skipped rows:", "", "| Code | Rows | Example | First rows |", "| --- | --- | --- | --- |"]
            for code, info in result["skipped_by_code"].items():
                example = info["example"].replace("|", "\\|")  # special tokens such as <|im_end|>
                lines.append(f"| `{code}` | {info['count']} | {example} | {info['rows']} |")
            lines.append("")
    return "\n".join(lines)
