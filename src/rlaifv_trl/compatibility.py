"""A model family that cannot work fails when it is loaded, naming the family and what is missing, before any long
work starts (sampling, labeling, training)."""

from __future__ import annotations

from PIL import Image
from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin


def family_name(model: PreTrainedModel | PretrainedConfig) -> str:
    config = getattr(model, "config", model)
    return getattr(config, "model_type", type(model).__name__)


def check_vision_language_model(
    model: PreTrainedModel | PretrainedConfig, processor: ProcessorMixin, role: str = "policy"
) -> None:
    """Raise `ValueError` when `model` (or its config: a model served by vLLM) and `processor` cannot serve as the
    RLAIF-V `role` (policy or labeler):

    - the processor must be a multimodal processor with a tokenizer and an image processor;
    - it must have a chat template that renders TRL's conversational messages with an image part;
    - rendering and processing one image must put the model's image tokens in the input.
    """
    family = family_name(model)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ValueError(
            f"The {role} ({family}) comes with a {type(processor).__name__}, not a processor with a tokenizer and "
            "an image processor: it is not a vision-language model the project can use."
        )
    if not (getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)):
        raise ValueError(
            f"The {role} ({family}) has no chat template: set `processor.chat_template` (a Jinja template that "
            "renders TRL's messages, with {'type': 'image'} parts) and save the processor again."
        )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    try:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(
            text=[text], images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt", add_special_tokens=False
        )
    except Exception as error:  # the template or the processor refuses TRL's format
        raise ValueError(
            f"The {role} ({family}) cannot render and process a conversation with one image "
            f"({type(error).__name__}: {error})."
        ) from None
    config = getattr(model, "config", model)
    image_token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    if image_token_id is None:
        token = getattr(processor, "image_token", None) or getattr(tokenizer, "image_token", None)
        image_token_id = tokenizer.convert_tokens_to_ids(token) if token else None
    if image_token_id is None or not bool((inputs["input_ids"] == image_token_id).any()):
        raise ValueError(
            f"The {role} ({family}): its chat template and processor put no image token in the input for a message "
            "with an image, so the model would never see the image. The template must render {'type': 'image'} "
            "parts as the family's image placeholder."
        )
