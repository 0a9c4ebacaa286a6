"""Mistral 3 (Mistral-Small-3.1 / 3.2): a Pixtral vision tower (native resolution, 2-D rotary positions), an RMS
norm, a learned 2x2 patch merger and an MLP projector, and a Mistral language model. An image of h x w merged patches
becomes h rows of w `[IMG]` tokens separated by `[IMG_BREAK]` and closed by `[IMG_END]`; the conversation uses the
Mistral `[SYSTEM_PROMPT]` / `[INST] ... [/INST]` format with a BOS token and `</s>` at the end of each answer."""

from __future__ import annotations

import torch
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MistralConfig,
    PixtralImageProcessor,
    PixtralProcessor,
    PixtralVisionConfig,
)

from ..models import TinyVLMPreset, _llama_text_config
from ..tokenizer import family_tokenizer
from . import Family


# The chat template of mistralai/Mistral-Small-3.1-24B-Instruct-2503 (as copied into transformers'
# `tests/models/pixtral/test_processing_pixtral.py` from hf-internal-testing/Mistral-Small-3.1-24B-Instruct-2503-only-
# processor), verbatim except for the default system message: the real one is ~700 characters and ends with "The
# current date is " + strftime_now("%Y-%m-%d"), which this stand-in's small BPE turns into ~400 tokens (more than
# tiny_cpu.yaml's max_length of 256, so no answer token would be left to train on) and which would make every rendered
# prompt depend on the day it is rendered. Its first sentence is kept; the structure (BOS, a system prompt block even
# without a system message, `[INST]...[/INST]` user turns with `[IMG]` per image, answers closed by `</s>`, no
# generation prompt) is the real one.
DEFAULT_SYSTEM_MESSAGE = (
    "You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in "
    "Paris."
)
CHAT_TEMPLATE = (
    '{%- set default_system_message = "' + DEFAULT_SYSTEM_MESSAGE + '" %}\n'
    "\n"
    "{{- bos_token }}\n"
    "\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- if messages[0] is string %}\n"
    "        {%- set system_message = messages[0]['content'] %}\n"
    "        {%- set loop_messages = messages[1:] %}\n"
    "    {%- else %} \n"
    "        {%- set system_message = messages[0]['content'][0]['text'] %}\n"
    "        {%- set loop_messages = messages[1:] %}\n"
    "    {%- endif %}\n"
    "{%- else %}\n"
    "    {%- set system_message = default_system_message %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}\n"
    "\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "            {%- if message['content'] is string %}\n"
    "            {{- '[INST]' + message['content'] + '[/INST]' }}\n"
    "            {%- else %}\n"
    "                    {{- '[INST]' }}\n"
    "                    {%- for block in message['content'] %}\n"
    "                            {%- if block['type'] == 'text' %}\n"
    "                                    {{- block['text'] }}\n"
    "                            {%- elif block['type'] == 'image' or block['type'] == 'image_url' %}\n"
    "                                    {{- '[IMG]' }}\n"
    "                                {%- else %}\n"
    "                                    {{- raise_exception('Only text and image blocks are supported in message "
    "content!') }}\n"
    "                                {%- endif %}\n"
    "                        {%- endfor %}\n"
    "                    {{- '[/INST]' }}\n"
    "                {%- endif %}\n"
    "    {%- elif message['role'] == 'system' %}\n"
    "        {{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {%- if message['content'] is string %}\n"
    "            {{- message['content'] + eos_token }}\n"
    "        {%- else %}\n"
    "            {{- message['content'][0]['text'] + eos_token }}\n"
    "        {%- endif %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user, system and assistant roles are supported!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}"
)
# Control tokens of the Mistral (tekken) tokenizer that the template and the processor use.
SPECIAL_TOKENS = ["<unk>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]"]
SPECIAL_TOKENS += ["[IMG_END]"]
SPATIAL_MERGE_SIZE = 2  # the patch merger turns 2x2 patches into one token


def build(spec: TinyVLMPreset, seed: int):
    """Native resolution up to twice the preset's side (ShapesWorld's 48x48 scenes keep their size): 6x6 patches of
    8 pixels, merged 2x2 into 3 rows of 3 `[IMG]` tokens with `[IMG_BREAK]` between rows and `[IMG_END]` last."""
    tokenizer = family_tokenizer(CHAT_TEMPLATE, SPECIAL_TOKENS, eos_token="</s>", bos_token="<s>")
    max_side = 2 * spec.image_size
    text_config = _llama_text_config(spec, tokenizer, config_class=MistralConfig, sliding_window=None)
    text_config.bos_token_id = tokenizer.bos_token_id
    config = Mistral3Config(
        vision_config=PixtralVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=max_side,
            patch_size=spec.patch_size,
        ),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=SPATIAL_MERGE_SIZE,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    # The patch merger is one more 0.02-std layer than LLaVA's projector has: its default init shrinks the image
    # features to ~1/8 of the text embeddings' scale, so the image barely moves the logits. A fan-in init (each merged
    # token about the scale of the patches it merges) gives them LLaVA's scale.
    merging_layer = model.model.multi_modal_projector.patch_merger.merging_layer
    torch.nn.init.normal_(merging_layer.weight, std=merging_layer.in_features**-0.5)
    image_processor = PixtralImageProcessor(
        size={"longest_edge": max_side}, patch_size={"height": spec.patch_size, "width": spec.patch_size}
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        spatial_merge_size=SPATIAL_MERGE_SIZE,
        chat_template=CHAT_TEMPLATE,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )
    return model, processor


FAMILY = Family(
    name="mistral3",
    display="Mistral 3 (Mistral Small 3.1)",
    examples="mistralai/Mistral-Small-3.1-24B-Instruct-2503, mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    build=build,
    needs_torchvision=True,
    notes=(
        "native resolution with `[IMG_BREAK]` rows and a 2x2 patch merger; BOS and a default system prompt in every "
        "prompt, no generation prompt"
    ),
)
