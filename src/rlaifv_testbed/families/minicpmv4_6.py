"""MiniCPM-V 4.6: a SigLIP-2 NaViT vision tower (learned 2-D position table looked up by nearest bucket, any aspect
ratio) that merges 2x2 windows of patches after an early layer, an MLP merger that merges 2x2 again (16x fewer tokens
than patches), high-resolution images cut into slices next to a downscaled overview, and the hybrid Qwen3.5 language
model (Gated DeltaNet linear-attention layers with a recurrent state, and gated full attention; 1-D positions)."""

from __future__ import annotations

import torch

from ..tokenizer import family_tokenizer
from . import Family
from .qwen3_5 import hybrid_text_config
from .qwen3_vl import SPECIAL_TOKENS as QWEN_SPECIAL_TOKENS


# The chat template of `openbmb/MiniCPM-V-4.6` (Instruct). Its `chat_template.jinja` (145 lines, 7.3 kB) is not
# reachable offline; this is Qwen3.5's non-thinking template, the one its language model (Qwen3.5-0.8B) ships (TRL's
# `chat_templates/qwen3_5_nothink.jinja`), with MiniCPM-V 4.6's image markup: an image renders as `<|image_pad|>` and a
# newline (a video as `<|video_pad|>` and a newline), which the processor expands into
# `<image_id>N</image_id><image>...</image>` plus the slices. The rendering matches the checkpoint's own, as mirrored
# from its chat_template.jinja by moderately-ai/lmbrrr (src/prompt.rs `chat_prompt`: "<|im_start|>user\n" + one
# "<|image_pad|>\n" per image + the text + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"), by
# AXERA-TECH/MiniCPM-V-4.6.axera (python/minicpmv46_helper.py) and by ms-swift's MiniCPMV4_6Template (placeholder +
# "\n"). The Instruct checkpoint answers without thinking by default (`enable_thinking=True` opens a thinking block).
CHAT_TEMPLATE = r"""{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- macro render_content(content, do_vision_count, is_system_content=false) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is iterable and content is not mapping %}
        {%- for item in content %}
            {%- if 'image' in item or 'image_url' in item or item.type == 'image' %}
                {%- if is_system_content %}
                    {{- raise_exception('System message cannot contain images.') }}
                {%- endif %}
                {%- if do_vision_count %}
                    {%- set image_count.value = image_count.value + 1 %}
                {%- endif %}
                {%- if add_vision_id %}
                    {{- 'Picture ' ~ image_count.value ~ ': ' }}
                {%- endif %}
                {{- '<|image_pad|>\n' }}
            {%- elif 'video' in item or item.type == 'video' %}
                {%- if is_system_content %}
                    {{- raise_exception('System message cannot contain videos.') }}
                {%- endif %}
                {%- if do_vision_count %}
                    {%- set video_count.value = video_count.value + 1 %}
                {%- endif %}
                {%- if add_vision_id %}
                    {{- 'Video ' ~ video_count.value ~ ': ' }}
                {%- endif %}
                {{- '<|video_pad|>\n' }}
            {%- elif 'text' in item %}
                {{- item.text }}
            {%- else %}
                {{- raise_exception('Unexpected item type in content.') }}
            {%- endif %}
        {%- endfor %}
    {%- elif content is none or content is undefined %}
        {{- '' }}
    {%- else %}
        {{- raise_exception('Unexpected content type.') }}
    {%- endif %}
{%- endmacro %}
{%- if not messages %}
    {{- raise_exception('No messages provided.') }}
{%- endif %}
{%- if tools and tools is iterable and tools is not mapping %}
    {{- '<|im_start|>system\n' }}
    {{- "# Tools\n\nYou have access to the following functions:\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>" }}
    {{- '\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after\n- If there is no function call available, answer the question like normal with your current knowledge and do not tell the user about function calls\n</IMPORTANT>' }}
    {%- if messages[0].role == 'system' %}
        {%- set content = render_content(messages[0].content, false, true)|trim %}
        {%- if content %}
            {{- '\n\n' + content }}
        {%- endif %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {%- set content = render_content(messages[0].content, false, true)|trim %}
        {{- '<|im_start|>system\n' + content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set content = render_content(message.content, false)|trim %}
        {%- if not(content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}
            {%- set ns.multi_step_tool = false %}
            {%- set ns.last_query_index = index %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if ns.multi_step_tool %}
    {{- raise_exception('No user query found in messages.') }}
{%- endif %}
{%- for message in messages %}
    {%- set content = render_content(message.content, true)|trim %}
    {%- if message.role == "system" %}
        {%- if not loop.first %}
            {{- raise_exception('System message must be at the beginning.') }}
        {%- endif %}
    {%- elif message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- set reasoning_content = reasoning_content|trim %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content + '\n</think>\n\n' + content }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls and message.tool_calls is iterable and message.tool_calls is not mapping %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function is defined %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {%- if loop.first %}
                    {%- if content|trim %}
                        {{- '\n\n<tool_call>\n<function=' + tool_call.name + '>\n' }}
                    {%- else %}
                        {{- '<tool_call>\n<function=' + tool_call.name + '>\n' }}
                    {%- endif %}
                {%- else %}
                    {{- '\n<tool_call>\n<function=' + tool_call.name + '>\n' }}
                {%- endif %}
                {%- if tool_call.arguments is defined %}
                    {%- for args_name, args_value in tool_call.arguments|items %}
                        {{- '<parameter=' + args_name + '>\n' }}
                        {%- set args_value = args_value | tojson | safe if args_value is mapping or (args_value is sequence and args_value is not string) else args_value | string %}
                        {{- args_value }}
                        {{- '\n</parameter>\n' }}
                    {%- endfor %}
                {%- endif %}
                {{- '</function>\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.previtem and loop.previtem.role != "tool" %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if not loop.last and loop.nextitem.role != "tool" %}
            {{- '<|im_end|>\n' }}
        {%- elif loop.last %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('Unexpected message role.') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is true %}
        {{- '<think>\n' }}
    {%- else %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# MiniCPM-V 4.6's tokenizer: Qwen3.5's markup, and MiniCPM-V's image / slice / image-id tags.
SPECIAL_TOKENS = (*QWEN_SPECIAL_TOKENS, "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>")
# Tokenizer attributes `MiniCPMV4_6Processor` reads (its tokenizer_config.json's `extra_special_tokens`).
NAMED_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}


def build(spec, seed: int):
    from transformers import (
        MiniCPMV4_6Config,
        MiniCPMV4_6ForConditionalGeneration,
        MiniCPMV4_6ImageProcessor,
        MiniCPMV4_6Processor,
        MiniCPMV4_6VideoProcessor,
    )

    tokenizer = family_tokenizer(CHAT_TEMPLATE, SPECIAL_TOKENS, NAMED_TOKENS, eos_token="<|im_end|>")
    text_config = hybrid_text_config(spec, tokenizer)
    # 1-D rotary positions (MiniCPM-V 4.6 has no M-RoPE), a quarter of each head rotary. The checkpoint ties its
    # output layer to the embeddings; like the project's other stand-ins this one does not, so that editing the
    # output rows of yes / no (tests/support/stand_ins.py `undecided_labeler`) leaves the input embeddings alone.
    text_config.update(
        model_type="qwen3_5_text",
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25},
    )
    ids = tokenizer.convert_tokens_to_ids
    config = MiniCPMV4_6Config(
        text_config=text_config,
        vision_config={
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "patch_size": spec.patch_size,
            # The learned position table is a (image_size / patch_size)^2 grid: 4x4 here (70x70 in the checkpoint).
            "image_size": spec.image_size,
        },
        # The 2x2 window-attention merger runs after the first vision layer (after layer 6 of 27 in the checkpoint).
        insert_layer_id=0,
        image_size=spec.image_size,
        downsample_mode="16x",
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = MiniCPMV4_6ForConditionalGeneration(config)
    # Slices of the preset's side: a 48x48 ShapesWorld scene becomes a 32x32 overview and a 2x2 grid of 32x32 slices,
    # one token each after the two 2x2 merges.
    sizes = {"scale_resolution": spec.image_size, "patch_size": spec.patch_size, "max_slice_nums": 9}
    sizes.update(slice_mode=True, downsample_mode="16x", use_image_id=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = MiniCPMV4_6Processor(
        image_processor=MiniCPMV4_6ImageProcessor(**sizes),
        video_processor=MiniCPMV4_6VideoProcessor(**sizes),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    name="minicpmv4_6",
    display="MiniCPM-V 4.6",
    examples="openbmb/MiniCPM-V-4.6",
    build=build,
    needs_torchvision=True,
    notes=(
        "hybrid Qwen3.5 language model (no padding or packing after a shared prefix); images sliced into an overview "
        "and a grid of slices; its forward ignores `logits_to_keep`"
    ),
)
