"""Bad input: unusable rows are skipped with a reason, odd image modes are converted, a run never stops for a row."""

import io

import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from rlaifv_testbed import ShapesWorld
from rlaifv_testbed.data import user_turn
from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator
from rlaifv_trl.feedback.inputs import MESSAGE_FEATURE
from rlaifv_trl.validation import BadRow, decode_image


FEATURES = Features({"prompt_id": Value("string"), "images": List(Image()), "prompt": List(MESSAGE_FEATURE)})
FAST = {"num_candidates": 2, "max_new_tokens": 4, "shard_size": 8, "length_balancing": False, "sampling_batch_size": 4}


def _encoded(mode: str, fmt: str = "PNG") -> bytes:
    image = ShapesWorld().scene(1).render().convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GOOD = _encoded("RGB")
CONVERTIBLE = {
    "grayscale": _encoded("L"),
    "rgba": _encoded("RGBA"),
    "cmyk": _encoded("CMYK", "JPEG"),
    "palette": _encoded("P"),
    "gray-alpha": _encoded("LA"),
    "16-bit": _encoded("I;16"),
}
BROKEN = {
    "zero bytes": b"",
    "corrupt": b"\x89PNG\r\n\x1a\n not really a png",
    "truncated": GOOD[: len(GOOD) // 2],
    "random": bytes(range(256)) * 3,
}


def _image(data: bytes | None) -> dict | None:
    return None if data is None else {"bytes": data, "path": None}


@pytest.fixture(scope="module")
def policy(tiny_vlm_dir):
    return str(tiny_vlm_dir("llava"))


def test_image_modes_are_converted_to_rgb_and_broken_images_are_reasons():
    for name, data in CONVERTIBLE.items():
        image = decode_image({"bytes": data, "path": None})
        assert image.mode == "RGB" and image.size == (48, 48), name
    transparent = PILImage.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(decode_image(transparent)).min() == 255  # transparent pixels become white
    for name, data in BROKEN.items():
        with pytest.raises(BadRow) as caught:
            decode_image({"bytes": data, "path": None})
        assert caught.value.code == ("image.empty" if name == "zero bytes" else "image.unreadable")
        assert " at 0x" not in str(caught.value)  # no object representation in the reason
    with pytest.raises(BadRow, match="missing image"):
        decode_image(None)
    with pytest.raises(BadRow, match="of type float") as caught:
        decode_image(3.5)
    assert caught.value.code == "image.unsupported"


def test_bad_rows_are_skipped_with_reasons_and_good_rows_go_through(policy, one_thread):
    rows = [("ok", [_image(GOOD)], user_turn("Describe the image."))]
    rows += [(f"mode-{name}", [_image(data)], user_turn("Describe the image.")) for name, data in CONVERTIBLE.items()]
    rows += [(f"broken-{name}", [_image(data)], user_turn("Describe the image.")) for name, data in BROKEN.items()]
    rows += [
        ("no-image", [], user_turn("Describe the image.")),
        ("none-image", [None], user_turn("Describe the image.")),
        ("empty-prompt", [_image(GOOD)], user_turn("")),
        ("blank-prompt", [_image(GOOD)], user_turn("   \n")),
        ("no-messages", [_image(GOOD)], []),
        ("assistant-last", [_image(GOOD)], [{"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}]),
        ("two-images-one-placeholder", [_image(GOOD), _image(GOOD)], user_turn("Describe the image.")),
        ("ok", [_image(GOOD)], user_turn("Describe the image.")),  # duplicate id
        (None, [_image(GOOD)], user_turn("Describe the image.")),
    ]
    dataset = Dataset.from_dict(
        {"prompt_id": [r[0] for r in rows], "images": [r[1] for r in rows], "prompt": [r[2] for r in rows]},
        features=FEATURES,
    )
    output = RLAIFVFeedbackGenerator(policy, args=FeedbackConfig(**FAST)).generate(dataset, disable_tqdm=True)
    codes = {entry["row"]: entry["code"] for entry in output.report.skipped}
    assert set(output.audit["prompt_id"]) == {"ok"} | {f"mode-{name}" for name in CONVERTIBLE}
    first_bad = 1 + len(CONVERTIBLE)
    for offset, name in enumerate(BROKEN):
        assert codes[first_bad + offset] == ("image.empty" if name == "zero bytes" else "image.unreadable")
    expected = {
        "no-image": "image.missing",
        "none-image": "image.missing",
        "empty-prompt": "prompt.missing",
        "blank-prompt": "prompt.missing",
        "no-messages": "prompt.missing",
        "assistant-last": "prompt.malformed",
        "two-images-one-placeholder": "image.count_mismatch",
    }
    checked = [row for row in codes if rows[row][0] in expected]
    assert len(checked) == len(expected)
    for row in checked:
        assert codes[row] == expected[rows[row][0]]
    reasons = {entry["row"]: entry["reason"] for entry in output.report.skipped}
    assert codes[len(rows) - 2] == "id.duplicate" and "row 0" in reasons[len(rows) - 2]
    assert codes[len(rows) - 1] == "id.missing"
    assert "'assistant'" in reasons[checked[[rows[r][0] for r in checked].index("assistant-last")]]
    assert all(entry["stage"] == "input" for entry in output.report.skipped)
    accounted = (
        set(reasons) | {e["row"] for e in output.report.rows_without_pairs} | set(output.preference["row_index"])
    )
    assert accounted == set(range(len(rows)))


def test_a_row_that_fails_in_a_batched_generate_call_is_the_only_one_skipped(tiny_vlm_dir, one_thread):
    from PIL import Image as PILImage

    sliver = PILImage.new("RGB", (2, 600), "red")  # a valid image the Qwen2-VL processor refuses (aspect ratio > 200)
    images = [[ShapesWorld().scene(s).render()] for s in range(3)] + [[sliver]] + [[ShapesWorld().scene(9).render()]]
    dataset = Dataset.from_dict({"images": images, "prompt": [user_turn("Describe the image.")] * 5})
    generator = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("qwen2_vl")), args=FeedbackConfig(**FAST))
    output = generator.generate(dataset, disable_tqdm=True)
    assert [(entry["row"], entry["stage"]) for entry in output.report.skipped] == [(3, "candidates")]
    assert "aspect ratio" in output.report.skipped[0]["reason"]
    assert sorted(set(output.audit["row_index"])) == [0, 1, 2, 4]


def test_a_dataset_without_a_needed_column_is_a_clear_error(policy):
    generator = RLAIFVFeedbackGenerator(policy, args=FeedbackConfig(**FAST))
    with pytest.raises(ValueError, match="'images' \\(or 'image'\\) column"):
        generator.generate(Dataset.from_dict({"prompt": [user_turn("Describe.")]}))
    with pytest.raises(ValueError, match="no 'prompt' column"):
        generator.generate(Dataset.from_dict({"question": ["Describe."], "images": [[GOOD]]}))


def test_a_single_image_column_and_plain_string_prompts_are_accepted(policy, one_thread):
    dataset = Dataset.from_dict(
        {
            "image": [ShapesWorld().scene(s).render() for s in range(2)],
            "prompt": ["Describe the image.", "What is it?"],
        }
    )
    output = RLAIFVFeedbackGenerator(policy, args=FeedbackConfig(**FAST)).generate(dataset, disable_tqdm=True)
    assert not output.report.skipped and set(output.audit["prompt_id"]) == {"row-0", "row-1"}
    for row in output.preference:
        assert row["prompt"][0]["content"][0]["type"] == "image" and len(row["images"]) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Property: a few hundred randomly malformed rows, no crash, every row accounted for

_IMAGES = st.one_of(
    st.just([_image(GOOD)]),
    st.sampled_from(sorted(CONVERTIBLE)).map(lambda name: [_image(CONVERTIBLE[name])]),
    st.sampled_from(sorted(BROKEN)).map(lambda name: [_image(BROKEN[name])]),
    st.binary(max_size=64).map(lambda data: [_image(data)]),
    st.just([]),
    st.just([None]),
    st.just([_image(GOOD), _image(GOOD)]),
)
_PROMPTS = st.one_of(
    st.just(user_turn("Describe the image.")),
    st.text(max_size=20).map(user_turn),
    st.just([]),
    st.just([{"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]),
    st.just([{"role": "user", "content": [{"type": "text", "text": "No image placeholder."}]}]),
    st.just([{"role": "user", "content": []}]),
)
_IDS = st.one_of(st.uuids().map(str), st.just("duplicate"), st.just(None), st.just(""))


@settings(max_examples=4, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(_IDS, _IMAGES, _PROMPTS), min_size=60, max_size=90))
def test_randomly_malformed_rows_never_stop_a_run(policy, rows):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = Dataset.from_dict(
            {"prompt_id": [r[0] for r in rows], "images": [r[1] for r in rows], "prompt": [r[2] for r in rows]},
            features=FEATURES,
        )
        output = RLAIFVFeedbackGenerator(policy, args=FeedbackConfig(**FAST)).generate(dataset, disable_tqdm=True)
    finally:
        torch.set_num_threads(threads)
    report = output.report
    skipped = {entry["row"] for entry in report.skipped}
    without = {entry["row"] for entry in report.rows_without_pairs}
    with_pairs = set(output.preference["row_index"])
    assert skipped | without | with_pairs == set(range(len(rows)))
    assert not skipped & (without | with_pairs)
    assert all(entry["reason"] for entry in report.skipped + report.rows_without_pairs)
    assert len(output.audit) == (len(rows) - len(skipped)) * FAST["num_candidates"]
    for row in skipped:  # only malformed rows are skipped
        prompt_id, images, prompt = rows[row]
        usable_images = (
            len(images) == 1 and images[0] is not None and images[0]["bytes"] in [GOOD, *CONVERTIBLE.values()]
        )
        usable_prompt = prompt == user_turn("Describe the image.") or (
            len(prompt) == 1
            and prompt[0]["content"][-1:]
            and (prompt[0]["content"][-1].get("text") or "").strip()
            and any(item["type"] == "image" for item in prompt[0]["content"])
        )
        first_use = prompt_id and [r[0] for r in rows].index(prompt_id) == row
        assert not (usable_images and usable_prompt and first_use), (row, rows[row])
