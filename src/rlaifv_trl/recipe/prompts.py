"""Where each iteration's prompts come from: a dataset of (image, question) rows on the Hub or on disk, or a function
named by import path. Every iteration gets its own, disjoint prompts."""

from __future__ import annotations

from datasets import Dataset, load_dataset

from ..data import user_turn
from ..plugins import import_function, is_import_path
from ..validation import undecoded


IMAGE_COLUMNS = ("images", "image")
TEXT_COLUMNS = ("prompt", "question", "instruction", "query")


def iteration_prompts(
    source: str,
    iteration: int,
    count: int,
    split: str = "train",
    config_name: str | None = None,
    seed: int = 0,
) -> Dataset:
    """The `count` prompts of `iteration` (from 1), whatever the number of iterations.

    A function source (`"package.module:function"`) is called as `function(iteration=, count=, seed=)`. A dataset
    is shuffled once with `seed`, and iteration k takes rows `[(k - 1) * count, k * count)` of it, so iterations
    draw disjoint slices; a dataset with fewer rows wraps around.
    """
    if iteration < 1:
        raise ValueError(f"Iterations are numbered from 1, got {iteration}")
    if is_import_path(source):
        return import_function(source)(iteration=iteration, count=count, seed=seed)
    dataset = load_dataset(source, config_name, split=split)
    if "prompt_id" not in dataset.column_names:
        dataset = dataset.add_column("prompt_id", [f"row-{i}" for i in range(len(dataset))])
    dataset = dataset.shuffle(seed=seed)
    indices = [((iteration - 1) * count + i) % len(dataset) for i in range(count)]
    return to_prompt_rows(dataset.select(indices))


def to_prompt_rows(dataset: Dataset) -> Dataset:
    """(image, question) rows with any of the usual column names as `prompt_id`, `images`, `prompt` (messages).

    Images stay undecoded, as stored: a corrupt, missing or refused image is found and skipped row by row by the
    feedback generator, instead of failing the whole conversion here.
    """
    dataset = undecoded(dataset)
    columns = dataset.column_names
    image = next((c for c in IMAGE_COLUMNS if c in columns), None)
    text = next((c for c in TEXT_COLUMNS if c in columns), None)
    if image is None or text is None:
        raise ValueError(
            f"The prompt dataset needs an image column (one of {IMAGE_COLUMNS}) and a text column (one of "
            f"{TEXT_COLUMNS}); it has {columns}"
        )
    if "prompt_id" not in columns:
        dataset = dataset.add_column("prompt_id", [f"row-{i}" for i in range(len(dataset))])

    def convert(row):
        images = row[image] if image == "images" else [row[image]]
        prompt = row[text]
        return {"images": images, "prompt": user_turn(prompt, len(images)) if isinstance(prompt, str) else prompt}

    keep = {"prompt_id", "images", "prompt"}
    return dataset.map(convert, remove_columns=[c for c in columns if c not in keep])
