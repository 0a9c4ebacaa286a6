"""A family the project cannot use fails at load, naming the family and what is missing, before any sampling."""

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator
from rlaifv_trl.compatibility import check_vision_language_model
from rlaifv_trl.loading import load_vlm


def test_a_processor_without_chat_template_is_refused_at_load(tiny_vlm_dir, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir("llava"))
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir("llava"))
    processor.chat_template = None
    processor.tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"The policy \(llava\) has no chat template"):
        RLAIFVFeedbackGenerator(model, processor, args=FeedbackConfig())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"The labeler \(llava\) has no chat template"):
        RLAIFVFeedbackGenerator(
            str(tiny_vlm_dir("llava")), args=FeedbackConfig(labeler_model_name_or_path=str(tmp_path))
        )


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_a_template_that_drops_the_image_is_refused(family, tiny_vlm_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir(family))
    text_only = "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    text_only += (
        "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    )
    processor.chat_template = text_only + "\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir(family)).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"The policy \({family}\) cannot render and process a conversation"):
        load_vlm(tmp_path)


def test_a_model_and_processor_that_disagree_on_the_image_token_are_refused(tiny_vlm_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir("llava"))
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir("llava"))
    model.config.image_token_id = processor.tokenizer.convert_tokens_to_ids("yes")
    with pytest.raises(ValueError, match=r"The labeler \(llava\): .* no image token in the input"):
        check_vision_language_model(model, processor, "labeler")
