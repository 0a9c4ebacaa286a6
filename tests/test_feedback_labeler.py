"""Conquer: YesNoLabeler reuses the image prefix per group and equals a plain per-question forward within 1e-4."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, DynamicCache

from rlaifv_testbed import ShapesWorld
from rlaifv_trl import prefix_sharing
from rlaifv_trl.feedback import LabelGroup, YesNoLabel, YesNoLabeler
from rlaifv_trl.feedback.labeler import labeler_messages, single_token_ids
from rlaifv_trl.prefix_sharing import EncodedPrefix, continuation_logits, encode_prefix, next_token_logits


QUESTIONS = [
    "Is there a red circle in the image? Please answer yes or no.",
    "Is there no blue square in the image? Please answer yes or no.",
    "Does the green triangle sit on the left? Please answer yes or no.",
    "Is it true that the sky is blue? Please answer yes or no.",
    "x",
    "Are there two yellow squares next to each other, one above the other? Please answer yes or no.",
    "Is there a red circle in the image? Please answer yes or no.",
]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request, tiny_vlm_dir):
    path = tiny_vlm_dir(request.param, seed=1)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def _plain(model, processor, images, question) -> YesNoLabel:
    """One plain forward over the whole labeler input, the way a user would write it."""
    text = processor.apply_chat_template(
        labeler_messages(len(images), question), add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        probs = model(**inputs).logits[0, -1].float().softmax(-1)
    ids = {w: processor.tokenizer.convert_tokens_to_ids(w) for w in ("yes", "Yes", "no", "No")}
    return YesNoLabel(float(probs[ids["yes"]] + probs[ids["Yes"]]), float(probs[ids["no"]] + probs[ids["No"]]))


def _assert_plain(model, processor, images, questions, labels) -> None:
    """Each label equals the plain forward's within 1e-4."""
    assert len(labels) == len(questions)
    for question, label in zip(questions, labels):
        plain = _plain(model, processor, images, question)
        assert abs(label.p_yes - plain.p_yes) < 1e-4 and abs(label.p_no - plain.p_no) < 1e-4


def _vision_module(model):
    inner = model.model
    return getattr(inner, "vision_tower", None) or inner.visual


@pytest.mark.parametrize("num_images", [1, 2])
def test_equal_to_plain_forwards_and_image_encoded_once_per_group(vlm, num_images, one_thread):
    model, processor = vlm
    world = ShapesWorld()
    groups = [
        LabelGroup([world.scene(seed + k).render() for k in range(num_images)], QUESTIONS[: 10 - seed])
        for seed in (3, 5)
    ]
    labeler = YesNoLabeler(model, processor, batch_size=3)  # several continuation batches per group
    calls = []
    hook = _vision_module(model).register_forward_hook(lambda *args: calls.append(1))
    try:
        labels = labeler.label(groups)
    finally:
        hook.remove()
    assert len(calls) == len(groups)  # one vision pass per group, whatever its number of questions
    assert labeler.num_full_forwards == 0
    for group, group_labels in zip(groups, labels):
        _assert_plain(model, processor, group.images, group.questions, group_labels)
        assert all(label.accepted == (label.p_yes > label.p_no) for label in group_labels)
    assert labels[0][0] == labels[0][6]  # a repeated question is run once: the very same label


def test_equal_to_the_reference_generate_with_scores(vlm, one_thread):
    model, processor = vlm
    image = ShapesWorld().scene(7).render()
    labels = YesNoLabeler(model, processor).label_group(LabelGroup([image], QUESTIONS[:3]))
    yes_no = single_token_ids(processor.tokenizer, ["yes", "Yes", "no", "No"])
    for question, label in zip(QUESTIONS[:3], labels):
        text = processor.apply_chat_template(labeler_messages(1, question), add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=False)
        out = model.generate(
            **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
        probs = out.scores[0][0].float().softmax(-1)
        assert abs(float(probs[yes_no[0]] + probs[yes_no[1]]) - label.p_yes) < 1e-4
        assert abs(float(probs[yes_no[2]] + probs[yes_no[3]]) - label.p_no) < 1e-4


def test_falls_back_to_a_full_forward_when_tokens_merge_across_the_split(vlm, one_thread):
    model, processor = vlm
    original = processor.chat_template
    image_markup = "<|vision_start|><|image_pad|><|vision_end|>" if "image_pad" in original else "<image>"
    # A template whose text before the question ends with a space: " is" and " there" are single tokens, so the
    # prefix's trailing space token is not a prefix of the full text's tokens.
    processor.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}" + image_markup + "{% else %}Question: {{ item['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        image = ShapesWorld().scene(2).render()
        labeler = YesNoLabeler(model, processor)
        rendered = labeler.render(1, "Is it?")
        assert image_markup in rendered and "Question: Is it?" in rendered
        questions = ["is there a red circle in the image?", "there is a dog, right?", "is it raining?"]
        assert all(processor.tokenizer.tokenize(" " + q)[0] != "Ġ" for q in questions)
        labels = labeler.label_group(LabelGroup([image], questions))
        assert labeler.num_full_forwards == 3
        _assert_plain(model, processor, [image], questions, labels)
    finally:
        processor.chat_template = original


def test_a_template_that_rewrites_the_question_gets_plain_forwards(vlm, one_thread):
    model, processor = vlm
    original = processor.chat_template
    processor.chat_template = original.replace("{{ item['text'] }}", "{{ item['text'] | upper }}")
    try:
        image = ShapesWorld().scene(4).render()
        labeler = YesNoLabeler(model, processor)
        labels = labeler.label_group(LabelGroup([image], QUESTIONS[:2]))
        assert labeler.num_full_forwards == 2
        _assert_plain(model, processor, [image], QUESTIONS[:2], labels)
    finally:
        processor.chat_template = original


def test_next_token_logits_equal_the_last_continuation_logits(vlm, one_thread):
    model, processor = vlm
    labeler = YesNoLabeler(model, processor)
    prefix_text, continuations = labeler._continuations(1, QUESTIONS)
    prefix = encode_prefix(model, labeler._inputs(prefix_text, [ShapesWorld().scene(9).render()]))
    ids = [continuations[i] for i in sorted(continuations)]
    left = next_token_logits(model, prefix, ids, batch_size=4)
    right = torch.stack(continuation_logits(model, prefix, ids, batch_size=4, last_only=True))
    torch.testing.assert_close(left, right, atol=1e-4, rtol=0)


def test_a_tie_is_a_rejection_and_empty_groups_cost_nothing(vlm):
    assert not YesNoLabel(0.25, 0.25).accepted
    assert YesNoLabel(0.2500001, 0.25).accepted
    model, processor = vlm
    assert YesNoLabeler(model, processor).label_group(LabelGroup([ShapesWorld().scene(1).render()], [])) == []


def test_answer_words_must_be_single_tokens(vlm):
    model, processor = vlm
    with pytest.raises(ValueError, match="not a single token"):
        YesNoLabeler(model, processor, yes_words=("yes", "Yes", "absolutely-yes"))


@pytest.mark.parametrize("batch_size", [3, 64])
def test_packed_padded_and_plain_forwards_give_the_same_labels(vlm, batch_size, one_thread):
    model, processor = vlm
    images = [ShapesWorld().scene(6).render()]
    packed = YesNoLabeler(model, processor, batch_size=batch_size).label_group(LabelGroup(images, QUESTIONS))
    padded = YesNoLabeler(model, processor, batch_size=batch_size, pack=False).label_group(
        LabelGroup(images, QUESTIONS)
    )
    for a, b in zip(packed, padded):
        assert abs(a.p_yes - b.p_yes) < 1e-5 and abs(a.p_no - b.p_no) < 1e-5 and a.accepted == b.accepted
    _assert_plain(model, processor, images, QUESTIONS, packed)


def _forward_caches(model, run) -> list:
    """The cache argument of every forward pass `run()` makes."""
    caches = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: caches.append(kwargs.get("cache", kwargs.get("past_key_values"))),
        with_kwargs=True,
    )
    try:
        run()
    finally:
        hook.remove()
    return caches


def test_every_forward_reads_the_prefix_cache_in_place(vlm, one_thread):
    """Packed in one row or several, or padded, a batch's forward reads the prefix cache's own tensors (batch of one,
    nothing copied up front) and leaves them as they are."""
    model, processor = vlm
    labeler = YesNoLabeler(model, processor)
    prefix_text, continuations = labeler._continuations(1, QUESTIONS)
    prefix = encode_prefix(model, labeler._inputs(prefix_text, [ShapesWorld().scene(9).render()]))
    ids = [continuations[i] for i in sorted(continuations)]
    before = [(layer.keys, layer.values) for layer in prefix.cache.layers]
    before_values = [(keys.clone(), values.clone()) for keys, values in before]
    for options in ({"rows": 1}, {"rows": 3}, {}, {"pack": False}):
        caches = _forward_caches(model, lambda o=options: next_token_logits(model, prefix, ids, batch_size=4, **o))
        assert len(ids) == 7 and len(caches) == 2  # two batches of at most 4 questions
        for cache in caches:
            for layer, (keys, values) in zip(cache.layers, before):
                assert layer.keys is keys and layer.values is values  # the prefix's tensors, not copies
                assert keys.shape[0] == 1 and keys.shape[-2] == prefix.length
    for layer, (keys, values), (keys_copy, values_copy) in zip(prefix.cache.layers, before, before_values):
        assert layer.keys is keys and torch.equal(keys, keys_copy) and torch.equal(values, values_copy)


@pytest.mark.parametrize("rows", [2, 3, 6])
def test_questions_packed_in_several_rows_give_the_same_logits(vlm, rows, one_thread):
    """However many rows the questions of a batch are packed into (slots padded to their longest question), each
    question's next-token logits are those of one row per question, and of one packed row."""
    model, processor = vlm
    labeler = YesNoLabeler(model, processor)
    prefix_text, continuations = labeler._continuations(1, QUESTIONS)
    prefix = encode_prefix(model, labeler._inputs(prefix_text, [ShapesWorld().scene(7).render()]))
    ids = [continuations[i] for i in sorted(continuations)]
    assert len({len(question) for question in ids}) >= 4  # lengths differ: slots hold padding
    several = next_token_logits(model, prefix, ids, rows=rows)
    torch.testing.assert_close(several, next_token_logits(model, prefix, ids, pack=False), atol=1e-5, rtol=0)
    torch.testing.assert_close(several, next_token_logits(model, prefix, ids, rows=1), atol=1e-5, rtol=0)


def _prefix_of(length: int, key_value_heads: int, head_dim: int) -> EncodedPrefix:
    """An encoded prefix of `length` tokens whose (real, zero-filled) cache has the given key/value width."""
    cache = DynamicCache()
    for layer in range(2):
        states = torch.zeros(1, key_value_heads, length, head_dim)
        cache.update(states, states.clone(), layer)
    return EncodedPrefix(cache, length, length, False, torch.zeros(8))


def test_packed_rows_hold_the_least_memory():
    """A short prefix over few key/value channels packs 40 questions into several rows (one row's attention would
    span all of them); a long prefix over many channels into one or two (each row reads its own copy)."""
    lengths = [20] * 20 + [23] * 10 + [31] * 10
    assert 5 <= prefix_sharing._pack_rows(_prefix_of(39, 2, 24), lengths) < 40
    assert prefix_sharing._pack_rows(_prefix_of(580, 8, 64), [23] * 64) == 2
    assert prefix_sharing._pack_rows(_prefix_of(2900, 8, 128), [25] * 64) == 1
    assert prefix_sharing._pack_rows(_prefix_of(39, 2, 24), [20]) == 1


def test_packed_next_token_logits_when_the_model_keeps_every_position(vlm, monkeypatch, one_thread):
    """Models whose forward takes no `logits_to_keep` return every position's logits: the last token of each packed
    question is picked from them. The one installed family without it (MiniCPM-V 4.6) keeps a recurrent state and so
    never packs; its absence is simulated on a real LLaVA by patching the project's own signature check (the only
    stand-in in the tests: no model, trainer, dataset or Hub call is faked)."""
    model, processor = vlm
    labeler = YesNoLabeler(model, processor)
    prefix_text, continuations = labeler._continuations(1, QUESTIONS)
    prefix = encode_prefix(model, labeler._inputs(prefix_text, [ShapesWorld().scene(2).render()]))
    ids = [continuations[i] for i in sorted(continuations)]
    kept = next_token_logits(model, prefix, ids, batch_size=4)
    monkeypatch.setattr(prefix_sharing, "_takes_logits_to_keep", lambda model: False)
    every = next_token_logits(model, prefix, ids, batch_size=4)
    padded = next_token_logits(model, prefix, ids, batch_size=4, pack=False)
    torch.testing.assert_close(every, kept, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded, kept, atol=1e-4, rtol=0)


def test_attention_without_4d_masks_gets_padded_batches(caplog):
    config = SimpleNamespace(model_type="stub-flash", _attn_implementation="flash_attention_2")
    assert "does not take a 4-D attention mask" in prefix_sharing.packing_refusal(SimpleNamespace(config=config))
    assert "Packed continuations are off for stub-flash" in caplog.text
    config = SimpleNamespace(model_type="stub-sdpa", _attn_implementation="sdpa")
    assert prefix_sharing.packing_refusal(SimpleNamespace(config=config)) is None
