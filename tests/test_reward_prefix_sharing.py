"""Answer log-probs on a shared prefix (padded or packed continuations) equal those of plain forwards."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import ShapesWorld
from rlaifv_trl.log_probs import token_log_probs
from rlaifv_trl.prefix_sharing import continuation_log_probs, continuation_logits, encode_prefix


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request, tiny_vlm_dirs):
    path = tiny_vlm_dirs[request.param]
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("pack", [False, True])
def test_log_probs_of_continuations_of_different_lengths_match_plain_forwards(vlm, pack):
    model, processor = vlm
    image = ShapesWorld().scene(2).render()
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt_inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    prefix = encode_prefix(model, prompt_inputs)
    answers = ["There is a red circle. There is a blue square.<|im_end|>\n", "A", "There is<|im_end|>\n", "x y z"]
    ids = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    shared = continuation_log_probs(model, prefix, ids, batch_size=3, pack=pack)  # two forward passes
    logits = continuation_logits(model, prefix, ids, batch_size=3, pack=pack)
    for answer, answer_ids, logps, answer_logits in zip(answers, ids, shared, logits):
        full = processor(text=[prompt + answer], images=[image], return_tensors="pt")
        with torch.no_grad():
            reference = model(**full).logits[0]
        expected = token_log_probs(reference[prefix.length - 1 : -1], torch.tensor(answer_ids))
        assert logps.shape == (len(answer_ids),)
        torch.testing.assert_close(logps, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(answer_logits, reference[prefix.length :], atol=1e-4, rtol=0)
