"""One corpus of bad rows through every entry point that reads rows: nothing crashes, every row is accounted for with
a stable code, and `strict` raises on the first bad row, naming it.

Entry points: the feedback generator (G), the recipe's prompt loading from a local folder into the generator (R),
`load_preference_dataset` from a local folder (L) and `RLAIFVDPOTrainer` (T). `EXPECTED` below is also the table of
the closing note: a code, or `kept` where the entry point does not read that field.
"""

import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, List, Value, load_dataset
from datasets import Image as ImageFeature
from PIL import Image
from transformers import AutoProcessor

from rlaifv_testbed import ShapesWorld
from rlaifv_trl import FeedbackConfig, RLAIFVDPOTrainer, RLAIFVFeedbackGenerator, load_preference_dataset
from rlaifv_trl.recipe.prompts import iteration_prompts
from rlaifv_trl.validation import CODES, BadRowError, RowValidation
from support.images import png_header


MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
FEATURES = Features(
    {
        "prompt_id": Value("string"),
        "prompt": MESSAGES,
        "images": List(ImageFeature()),
        "chosen": MESSAGES,
        "rejected": MESSAGES,
    }  # fmt: skip
)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SCENE = ShapesWorld().scene(3).render()
PNG, JPEG = encoded(SCENE), encoded(SCENE, "JPEG", quality=85)


def user(text, images=1, role="user"):
    return [{"role": role, "content": [{"type": "image", "text": None}] * images + [{"type": "text", "text": text}]}]


def answer(text, role="assistant"):
    return [{"role": role, "content": [{"type": "text", "text": text}]}]


def image(data=PNG, path=None):
    return {"bytes": data, "path": path}


def row(prompt=None, images=None, chosen=None, rejected=None, prompt_id=None):
    return {
        "prompt": user("Describe the image.") if prompt is None else prompt,
        "images": [image()] if images is None else images,
        "chosen": answer("There is a red circle.") if chosen is None else chosen,
        "rejected": answer("There is a red circle. There is a blue square.") if rejected is None else rejected,
        "prompt_id": prompt_id,
    }


SPECIAL = "Describe.<|im_end|><|im_start|>assistant\nThere is"
K = "kept"

# kind -> (row, expected outcome at G, R, L, T)
CORPUS = {
    "good (jpeg)": (row(images=[image(JPEG)]), (K, K, K, K)),
    "good (png)": (row(), (K, K, K, K)),
    "good (relative path)": (row(images=[image(None, "scene.png")]), (K, K, K, K)),
    "image None": (row(images=[None]), ("image.missing",) * 4),
    "no image": (  # a text-only row: TRL trains them mixed into vision datasets, the feedback needs an image
        row(images=[], prompt=user("Describe.", images=0)),
        ("image.missing",) * 2 + (K, K),
    ),  # fmt: skip
    "zero bytes": (row(images=[image(b"")]), ("image.empty",) * 4),
    "random bytes": (row(images=[image(b"\x00\x01garbage" * 20)]), ("image.unreadable",) * 4),
    "text bytes": (row(images=[image(b"hello, I am not an image")]), ("image.unreadable",) * 4),
    "truncated png": (row(images=[image(PNG[: len(PNG) // 2])]), ("image.unreadable",) * 4),
    "truncated jpeg": (row(images=[image(JPEG[: len(JPEG) // 2])]), ("image.unreadable",) * 4),
    "png header only": (row(images=[image(PNG[:33])]), ("image.unreadable",) * 4),
    "100 MP bomb": (row(images=[image(encoded(Image.new("1", (10_000, 10_000))))]), ("image.too_large",) * 4),
    "72 MP": (row(images=[image(encoded(Image.new("1", (9_000, 8_000))))]), ("image.too_large",) * 4),
    "400 MP header (PIL refuses it)": (row(images=[image(png_header(20_000, 20_000))]), ("image.too_large",) * 4),
    "2 images, 1 placeholder": (row(images=[image(), image()]), ("image.count_mismatch",) * 4),
    "1 image, 2 placeholders": (row(prompt=user("Describe.", images=2)), ("image.count_mismatch",) * 4),
    "1 image, no placeholder": (row(prompt=user("Describe.", images=0)), ("image.count_mismatch",) * 4),
    "absolute path outside": (row(images=[image(None, "/etc/hostname")]), ("image.path_outside_root",) * 4),
    "dot-dot escape": (row(images=[image(None, "../outside/scene.png")]), ("image.path_outside_root",) * 4),
    "symlink out": (row(images=[image(None, "link-out.png")]), ("image.path_outside_root",) * 4),
    "fifo": (row(images=[image(None, "fifo.png")]), ("image.path_not_a_file",) * 4),
    "directory": (row(images=[image(None, "subfolder")]), ("image.path_not_a_file",) * 4),
    "missing file": (row(images=[image(None, "nowhere.png")]), ("image.path_missing",) * 4),
    "corrupt file": (row(images=[image(None, "corrupt.png")]), ("image.unreadable",) * 4),
    "zero-byte file": (row(images=[image(None, "empty.png")]), ("image.empty",) * 4),
    "http url": (row(images=[image(None, "http://127.0.0.1:9/scene.png")]), ("image.url_refused",) * 4),
    "https url": (row(images=[image(None, "https://example.com/scene.png")]), ("image.url_refused",) * 4),
    "file url": (row(images=[image(None, "file:///etc/hostname")]), ("image.url_refused",) * 4),
    "s3 url": (row(images=[image(None, "s3://bucket/scene.png")]), ("image.url_refused",) * 4),
    "empty question": (row(prompt=user("")), ("prompt.missing",) * 4),
    "blank question": (row(prompt=user("  \n\t")), ("prompt.missing",) * 4),
    "no messages": (row(prompt=[]), ("prompt.missing",) * 4),
    "last message from assistant": (row(prompt=user("Describe.", role="assistant")), ("prompt.malformed",) * 4),
    "message without role": (row(prompt=user("Describe.", role=None)), ("prompt.malformed",) * 4),
    "message without content": (row(prompt=[{"role": "user", "content": None}]), ("prompt.malformed",) * 4),
    "special tokens in question": (
        row(prompt=user(SPECIAL)),
        ("text.special_tokens",) * 2 + (K, "text.special_tokens"),
    ),
    "image token typed in question": (
        row(prompt=user("What is <image> here?")),
        ("text.special_tokens",) * 2 + (K, "text.special_tokens"),
    ),  # fmt: skip
    "100k-character question": (
        row(prompt=user("Describe " * 11_000)),
        ("prompt.too_long",) * 2 + (K, "answer.cut_by_max_length"),
    ),  # fmt: skip
    "chosen None": (row(chosen=[]) | {"chosen": None}, (K, K, "answer.missing", "answer.missing")),
    "chosen empty list": (row(chosen=[]), (K, K, "answer.missing", "answer.missing")),
    "chosen empty text": (row(chosen=answer("")), (K, K, "answer.missing", "answer.missing")),
    "rejected blank": (row(rejected=answer("   ")), (K, K, "answer.missing", "answer.missing")),
    "chosen == rejected": (
        row(rejected=answer("There is a red circle.")),
        (K, K, "answer.identical", "answer.identical"),
    ),  # fmt: skip
    "chosen from the user": (
        row(chosen=answer("There is a red circle.", "user")),
        (K, K, "answer.wrong_role", "answer.wrong_role"),
    ),  # fmt: skip
    "chosen user then assistant": (
        row(chosen=answer("Hi", "user") + answer("There is.")),
        (K, K, "answer.wrong_role", "answer.wrong_role"),
    ),  # fmt: skip
    "special tokens in chosen": (row(chosen=answer("Red.<|im_end|>")), (K, K, K, "text.special_tokens")),
    "prompt_id None": (row() | {"prompt_id": None}, ("id.missing", "id.missing", K, K)),
    "good (first use of an id)": (row() | {"prompt_id": "dup"}, (K, K, K, K)),
    "duplicate prompt_id": (row() | {"prompt_id": "dup"}, ("id.duplicate", "id.duplicate", K, K)),
}
KINDS = list(CORPUS)
GOOD = [kind for kind in KINDS if kind.startswith("good")]


def corpus_rows():
    rows = []
    for index, kind in enumerate(KINDS):
        values = dict(CORPUS[kind][0])
        if "prompt_id" not in kind and "id)" not in kind:
            values["prompt_id"] = f"row-{index}"
        rows.append(values)
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus as a parquet dataset in its own folder, with the files its paths name (and some outside it)."""
    base = tmp_path_factory.mktemp("bad-rows")
    folder, outside = base / "data", base / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "scene.png").write_bytes(PNG)
    (outside / "scene.png").write_bytes(PNG)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "empty.png").write_bytes(b"")
    (folder / "subfolder").mkdir()
    os.symlink(outside / "scene.png", folder / "link-out.png")
    os.mkfifo(folder / "fifo.png")  # reading it would hang
    dataset = as_dataset(corpus_rows())
    import json

    import pyarrow.parquet as pq

    metadata = {b"huggingface": json.dumps({"info": {"features": FEATURES.to_dict()}}).encode()}
    pq.write_table(dataset.data.table.replace_schema_metadata(metadata), folder / "train.parquet")  # paths kept
    return folder, dataset


def as_dataset(rows) -> Dataset:
    """The rows with the corpus features, stored as given (`Dataset.from_list` would read image paths now)."""
    import pyarrow as pa

    return Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)).cast(FEATURES)


def outcomes(skipped, num_rows):
    """The code of every corpus row (by its position), `kept` for the others."""
    result = ["kept"] * num_rows
    for entry in skipped:
        result[entry["row"]] = entry["code"]
    return result


def expected_at(entry_point: int) -> list[str]:
    return [CORPUS[kind][1][entry_point] for kind in KINDS]


def test_the_corpus_covers_at_least_40_kinds_and_every_code_it_claims():
    bad = [kind for kind in KINDS if kind not in GOOD]
    assert len(bad) >= 40
    assert {code for _, expected in CORPUS.values() for code in expected} - {K} <= set(CODES)


@pytest.fixture(scope="module")
def generator(tiny_vlm_dir):
    args = FeedbackConfig(num_candidates=2, max_new_tokens=4, length_balancing=False, sampling_batch_size=4)
    return lambda validation: RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args, validation=validation)


def test_the_feedback_generator(corpus, generator, one_thread):
    folder, dataset = corpus
    output = generator(RowValidation(image_root=str(folder))).generate(dataset, disable_tqdm=True)
    report = output.report
    assert outcomes(report.skipped, len(dataset)) == expected_at(0)
    assert report.num_prompts + len(report.skipped) == len(dataset)
    assert all(" at 0x" not in entry["reason"] for entry in report.skipped)
    first_bad = rf"row {KINDS.index('image None')} \(id 'row-3'\) is unusable \[image.missing\]"
    with pytest.raises(BadRowError, match=first_bad):
        generator(RowValidation(image_root=str(folder))).generate(dataset, disable_tqdm=True, strict=True)
    with pytest.raises(BadRowError, match=first_bad):  # strict rows: the validation's setting
        generator(RowValidation(image_root=str(folder), strict=True)).generate(dataset, disable_tqdm=True)


def test_the_recipes_prompts_from_a_local_folder(corpus, generator, one_thread):
    folder, dataset = corpus
    prompts = iteration_prompts(str(folder), iteration=1, count=len(dataset), seed=0)  # shuffled once
    output = generator(RowValidation().rooted_at(folder)).generate(prompts, disable_tqdm=True)
    assert output.report.num_prompts + len(output.report.skipped) == len(dataset)
    codes = {entry["prompt_id"]: entry["code"] for entry in output.report.skipped}
    duplicates = [entry for entry in output.report.skipped if entry["code"] == "id.duplicate"]
    assert len(duplicates) == 1 and duplicates[0]["prompt_id"] == "dup"  # whichever "dup" row came second
    expected = expected_at(1)
    for identifier in prompts["prompt_id"]:
        if identifier and identifier.startswith("row-"):
            index = int(identifier.split("-")[1])
            assert codes.get(identifier, K) == expected[index], KINDS[index]
    assert sum(entry["code"] == "id.missing" for entry in output.report.skipped) == 1
    strict = RowValidation(strict=True).rooted_at(folder)  # the recipe's prompts, with strict_rows
    assert strict.strict and strict.image_root == str(folder)
    with pytest.raises(BadRowError, match="is unusable"):
        generator(strict).generate(prompts, disable_tqdm=True)


def test_load_preference_dataset_from_a_local_folder(corpus):
    folder, dataset = corpus
    loaded, report = load_preference_dataset(str(folder), return_report=True)
    assert outcomes(report.skipped, len(dataset)) == expected_at(2)
    assert report.num_kept + report.num_skipped == report.num_rows == len(dataset) == len(loaded) + report.num_skipped
    assert {info["count"] for info in report.by_code().values()} and all(
        len(info["rows"]) <= 5 for info in report.by_code().values()
    )
    streamed, stream_report = load_preference_dataset(str(folder), streaming=True, return_report=True)
    assert len(list(streamed)) == len(loaded) and stream_report.skipped == report.skipped
    with pytest.raises(BadRowError, match=r"\(id 'row-3'\) is unusable \[image.missing\]"):
        load_preference_dataset(str(folder), strict=True)


def test_the_trainer(corpus, tiny_vlm_dirs, dpo_args):
    folder, dataset = corpus
    path = tiny_vlm_dirs["llava"]
    trainer = RLAIFVDPOTrainer(
        model=str(path), args=dpo_args(max_length=512, max_steps=1), train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(path), row_validation=RowValidation(image_root=str(folder)),
    )  # fmt: skip
    report = trainer.row_validation_reports["train"]
    assert outcomes(report.skipped, len(dataset)) == expected_at(3)
    assert len(trainer.train_dataset) == report.num_kept and report.num_kept + report.num_skipped == len(dataset)
    saved = Path(trainer.args.output_dir) / "row_validation" / "train.json"
    assert saved.is_file() and "answer.identical" in saved.read_text()
    trainer.train()
    with pytest.raises(BadRowError, match=r"\(id 'row-3'\) is unusable \[image.missing\]"):
        RLAIFVDPOTrainer(
            model=str(path), args=dpo_args(max_length=512), train_dataset=dataset,
            processing_class=AutoProcessor.from_pretrained(path),
            row_validation=RowValidation(image_root=str(folder), strict=True),
        )  # fmt: skip


def test_size_and_emptiness_have_their_codes_however_the_image_is_given(tmp_path):
    """An image PIL refuses to open for its size (an error, or its warning raised as one) is `image.too_large`, like
    one above `max_image_pixels`; a zero-byte file is `image.empty`: bytes, a path, a `{bytes, path}` mapping."""
    from rlaifv_trl.validation import BadRow, decode_image, row_videos

    bomb = png_header(20_000, 20_000)  # 400 MP: more than twice PIL.Image.MAX_IMAGE_PIXELS, so PIL raises
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "empty.png").write_bytes(b"")
    validation = RowValidation(image_root=str(tmp_path))

    def problem(value, settings=validation):
        with pytest.raises(BadRow) as raised:
            decode_image(value, settings)
        return raised.value

    for value in (bomb, image(bomb), "bomb.png", image(None, "bomb.png"), tmp_path / "bomb.png"):
        assert problem(value).code == "image.too_large"
        assert "more than max_image_pixels=64000000" in problem(value).message
    beyond_pil = problem(bomb, RowValidation(max_image_pixels=10**9))
    assert beyond_pil.code == "image.too_large" and "PIL.Image.MAX_IMAGE_PIXELS" in beyond_pil.message
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # 100 MP: PIL warns
        assert problem(png_header(10_000, 10_000)).code == "image.too_large"
    for value in ("empty.png", image(None, "empty.png"), image(b"", "empty.png"), tmp_path / "empty.png"):
        assert problem(value).code == "image.empty"
    with pytest.raises(BadRow, match="frame 1 of video 0: .* more than max_image_pixels") as frame:
        row_videos([[image(), image(bomb)]], "videos", validation)
    assert frame.value.code == "video.frame_unreadable"


def test_urls_are_fetched_only_when_allowed(hub, hub_repo_id):
    from huggingface_hub import HfApi

    from rlaifv_trl.validation import BadRow, check_preference_row

    HfApi().create_repo(hub_repo_id, repo_type="dataset")
    HfApi().upload_file(path_or_fileobj=PNG, path_in_repo="scene.png", repo_id=hub_repo_id, repo_type="dataset")
    url_row = row(images=[image(None, f"{hub.url}/datasets/{hub_repo_id}/resolve/main/scene.png")])
    with pytest.raises(BadRow, match="allow_image_urls") as refused:
        check_preference_row(url_row, RowValidation())
    assert refused.value.code == "image.url_refused"
    check_preference_row(url_row, RowValidation(allow_image_urls=True))  # fetched from the loopback Hub
    missing = row(images=[image(None, f"{hub.url}/datasets/{hub_repo_id}/resolve/main/nothing.png")])
    with pytest.raises(BadRow) as failed:
        check_preference_row(missing, RowValidation(allow_image_urls=True))
    assert failed.value.code == "image.url_failed"


# ---------------------------------------------------------------------------------------------------------------------
# Pixel-exact loading: images keep their original bytes through every loader path


def sources():
    scene = ShapesWorld().scene(5).render()
    return {
        "jpeg": encoded(scene, "JPEG", quality=75),
        "png": encoded(scene),
        "palette png": encoded(scene.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
        "cmyk jpeg": encoded(scene.convert("CMYK"), "JPEG", quality=90),
    }


@pytest.mark.parametrize("schema", ["openbmb", "trl image", "trl images"])
@pytest.mark.parametrize("where", ["local", "hub"])
@pytest.mark.parametrize("streaming", [False, True])
def test_loaded_images_are_the_source_bytes_and_pixels(schema, where, streaming, hub, hub_repo_id, tmp_path):
    data = list(sources().values())
    if schema == "openbmb":
        columns = {"ds_name": ["x"] * 4, "image": [image(d) for d in data], "question": ["Describe."] * 4,
                   "chosen": ["A."] * 4, "rejected": ["B."] * 4, "origin_dataset": ["o"] * 4, "origin_split": ["s"] * 4,
                   "idx": [str(i) for i in range(4)], "image_path": ["p"] * 4}  # fmt: skip
        features = {k: ImageFeature() if k == "image" else Value("string") for k in columns}
    else:
        key = "image" if schema == "trl image" else "images"
        columns = {"prompt": ["Describe."] * 4, "chosen": ["A."] * 4, "rejected": ["B."] * 4,
                   key: [image(d) if key == "image" else [image(d)] for d in data]}  # fmt: skip
        features = {k: Value("string") for k in columns} | {
            key: ImageFeature() if key == "image" else List(ImageFeature())
        }
    source = Dataset.from_dict(columns, features=Features(features))
    if where == "hub":
        source.push_to_hub(hub_repo_id)
        name = hub_repo_id
    else:
        source.to_parquet(tmp_path / "train.parquet")
        name = str(tmp_path)
    loaded = load_preference_dataset(name, streaming=streaming)
    rows = list(loaded)
    assert len(rows) == 4
    for row_, original in zip(rows, data):
        expected = Image.open(io.BytesIO(original))
        assert row_["images"][0].mode == expected.mode
        assert np.array_equal(np.asarray(row_["images"][0]), np.asarray(expected))  # decoded pixels: the source's
    if not streaming:
        stored = loaded.cast_column("images", List(ImageFeature(decode=False)))
        assert [item["images"][0]["bytes"] for item in stored] == data  # the very bytes


def test_published_preference_data_carries_no_file_names(tmp_path):
    from rlaifv_trl.artifacts import write_iteration_dataset

    (tmp_path / "secret-folder").mkdir()
    (tmp_path / "secret-folder" / "private-name.png").write_bytes(PNG)
    dataset = Dataset.from_list(
        [row(images=[image(None, str(tmp_path / "secret-folder" / "private-name.png"))])], features=FEATURES
    )
    files = write_iteration_dataset(dataset, tmp_path / "run", 1)
    assert b"private-name" not in files[0].read_bytes() and b"secret-folder" not in files[0].read_bytes()
    loaded = load_dataset("parquet", data_files=str(files[0]), split="train")
    assert np.array_equal(np.asarray(loaded[0]["images"][0]), np.asarray(Image.open(io.BytesIO(PNG))))
    shutil.rmtree(tmp_path / "secret-folder")


@pytest.mark.parametrize("streaming", [False, True])
def test_openbmb_rows_without_or_with_a_broken_image_are_skipped(hub_repo_id, streaming):
    columns = {"ds_name": ["x"] * 4, "image": [image(), None, image(b"broken"), image(JPEG)],
               "question": ["Describe."] * 4, "chosen": ["A.", "A.", "A.", "A."], "rejected": ["B.", "B.", "B.", "A."],
               "origin_dataset": ["o"] * 4, "origin_split": ["s"] * 4, "idx": ["0", "1", "2", "3"],
               "image_path": ["p"] * 4}  # fmt: skip
    features = Features({k: ImageFeature() if k == "image" else Value("string") for k in columns})
    Dataset.from_dict(columns, features=features).push_to_hub(hub_repo_id)
    loaded, report = load_preference_dataset(hub_repo_id, streaming=streaming, return_report=True)
    assert [row_["prompt_id"] for row_ in loaded] == ["x-0"]
    assert [(entry["id"], entry["code"]) for entry in report.skipped] == [
        ("x-1", "image.missing"), ("x-2", "image.unreadable"), ("x-3", "answer.identical"),
    ]  # fmt: skip
