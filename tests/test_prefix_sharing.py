"""A shared prefix encoded once gives the same logits as plain forwards over prefix + continuation."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import ShapesWorld, build_tiny_vlm
from rlaifv_trl.prefix_sharing import continuation_logits, encode_prefix, next_token_logits


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request, tmp_path_factory):
    path = build_tiny_vlm(tmp_path_factory.mktemp(request.param), request.param, "tiny", seed=1)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def _image_prefix(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "@@"}]}]
    return processor.apply_chat_template(messages, tokenize=False).split("@@")[0]


def test_continuations_match_plain_forwards(vlm):
    model, processor = vlm
    tokenizer = processor.tokenizer
    image = ShapesWorld().scene(4).render()
    prefix_text = _image_prefix(processor)
    prefix_inputs = processor(text=[prefix_text], images=[image], return_tensors="pt")
    prefix = encode_prefix(model, prefix_inputs)
    assert not prefix.recurrent
    suffixes = [
        "Is there a red circle in the image? Please answer yes or no.<|im_end|>\n<|im_start|>assistant\n",
        "Describe the image.<|im_end|>\n<|im_start|>assistant\nThere is a blue square.",
        "x",
    ]
    ids = [tokenizer.encode(s, add_special_tokens=False) for s in suffixes]
    shared = continuation_logits(model, prefix, ids, batch_size=2)  # two chunks: the cache copy is reused correctly
    last = continuation_logits(model, prefix, ids, last_only=True)
    for suffix, suffix_ids, logits, last_logits in zip(suffixes, ids, shared, last):
        full = processor(text=[prefix_text + suffix], images=[image], return_tensors="pt")
        assert full["input_ids"][0].tolist() == prefix_inputs["input_ids"][0].tolist() + suffix_ids
        with torch.no_grad():
            reference = model(**full).logits[0]
        assert logits.shape == (len(suffix_ids), reference.shape[-1])
        torch.testing.assert_close(logits, reference[prefix.length :], atol=1e-4, rtol=0)
        torch.testing.assert_close(last_logits, reference[-1], atol=1e-4, rtol=0)
        torch.testing.assert_close(prefix.last_logits, reference[prefix.length - 1], atol=1e-4, rtol=0)


def test_continuations_of_a_model_with_a_recurrent_state_run_one_at_a_time(tmp_path):
    """Qwen3.5's linear-attention layers update a recurrent state token by token: padding between the prefix and a
    continuation, or continuations packed into one row, would run through it."""
    path = build_tiny_vlm(tmp_path / "qwen3_5", "qwen3_5", "tiny", seed=1)
    model, processor = AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)
    image = ShapesWorld().scene(4).render()
    prefix_text = _image_prefix(processor)
    prefix = encode_prefix(model, processor(text=[prefix_text], images=[image], return_tensors="pt"))
    assert prefix.recurrent
    suffixes = ["Is there a red circle in the image? Please answer yes or no.", "x", "There is a blue square."]
    ids = [processor.tokenizer.encode(suffix, add_special_tokens=False) for suffix in suffixes]
    references = []
    for suffix in suffixes:
        with torch.no_grad():
            inputs = processor(text=[prefix_text + suffix], images=[image], return_tensors="pt")
            references.append(model(**inputs).logits[0])
    for pack in (False, True):
        for logits, reference in zip(continuation_logits(model, prefix, ids, pack=pack), references):
            torch.testing.assert_close(logits, reference[prefix.length :], atol=1e-4, rtol=0)
    for logits, reference in zip(next_token_logits(model, prefix, ids), references):
        torch.testing.assert_close(logits, reference[-1], atol=1e-4, rtol=0)


def test_the_image_in_the_prefix_matters(vlm):
    model, processor = vlm
    prefix_text = _image_prefix(processor)
    ids = [processor.tokenizer.encode("Is there a red circle?", add_special_tokens=False)]
    outputs = []
    for seed in (1, 2):
        inputs = processor(text=[prefix_text], images=[ShapesWorld().scene(seed).render()], return_tensors="pt")
        outputs.append(continuation_logits(model, encode_prefix(model, inputs), ids, last_only=True)[0])
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_rejects_batched_or_padded_prefixes_and_empty_continuations(vlm):
    model, processor = vlm
    image = ShapesWorld().scene(1).render()
    two = processor(text=[_image_prefix(processor)] * 2, images=[image, image], return_tensors="pt")
    with pytest.raises(ValueError, match="one prefix at a time"):
        encode_prefix(model, two)
    one = processor(text=[_image_prefix(processor)], images=[image], return_tensors="pt")
    with pytest.raises(ValueError, match="at least one token"):
        continuation_logits(model, encode_prefix(model, one), [[]])
