"""A byte-level BPE tokenizer trained locally, with a ChatML chat template, for the tiny offline VLMs."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from importlib import resources

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .shapes import COLORS, DESCRIPTION_PROMPTS, SHAPES, ShapesWorld, existence_question


PAD_TOKEN = "<|endoftext|>"
BOS_CHAT = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
LLAVA_IMAGE_TOKEN = "<image>"
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
SPECIAL_TOKENS = [PAD_TOKEN, BOS_CHAT, EOS_TOKEN, LLAVA_IMAGE_TOKEN, *QWEN_VISION_TOKENS]
# Answers the labeler reads at the first answer position: each must be exactly one token.
YES_NO_WORDS = ("yes", "no", "Yes", "No")

_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
_IMAGE_MARKUP = {
    "llava": LLAVA_IMAGE_TOKEN,
    "llava_next": LLAVA_IMAGE_TOKEN,
    "qwen2_vl": _QWEN_IMAGE,
    "qwen2_5_vl": _QWEN_IMAGE,
}
# Video markup of the architectures whose processor takes videos (the others render no video placeholder).
_VIDEO_MARKUP = {"qwen2_vl": _QWEN_VIDEO, "qwen2_5_vl": _QWEN_VIDEO}
# Architectures whose tokenizer gets its family's real chat template (from TRL's `chat_templates`); the others use
# this module's ChatML, which the shipped built-in models were trained with.
_FAMILY_TEMPLATES = {"qwen2_5_vl": "qwen2_5_vl"}

# ChatML that accepts string content and TRL's list content ({"type": "image"} / {"type": "video"} / {"type": "text"}
# items).
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '__IMAGE__' }}"
    "{% elif item['type'] == 'video' %}{{ '__VIDEO__' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A little general English so that text outside ShapesWorld does not fall apart into single bytes.
_ENGLISH = """\
The cat is sitting on the red sofa next to a window.
A man is riding a bicycle down a busy street in the city.
There are two dogs playing in the park under a large tree.
The clock on the wall shows ten past eleven.
A woman holds an umbrella while waiting for the bus.
The kitchen has a white refrigerator, a stove and a wooden table.
Three people are standing near the car and talking.
The sky is blue and there are no clouds.
There is no dog in the picture.
The photo shows a plate of food with rice, chicken and vegetables.
A small boat floats on the calm lake at sunset.
I think this is a beautiful scene.
The sign says stop and it is mounted on a metal pole.
Is the train yellow? What color is the bus? How many birds are there?
The building in the background is tall and made of glass.
A child is eating an apple at the table.
Split the answer into atomic facts. Each fact is one short sentence.
Rewrite the fact as a yes or no question.
- There is a red circle.
- The circle is on the left.
1. The cat is black.
2. The dog is sleeping.
"""


def training_corpus(num_scenes: int = 400) -> list[str]:
    """Sentences the tokenizer is trained on: ShapesWorld text, chat markup, answers and some general English."""
    world = ShapesWorld()
    lines = list(DESCRIPTION_PROMPTS) + _ENGLISH.splitlines()
    for seed in range(num_scenes):
        lines.append(world.scene(seed).description())
    for color, shape in itertools.product(COLORS, SHAPES):
        lines.append(existence_question(f"{color} {shape}"))
        lines.append(f"Is the {shape} {color}? The {shape} is {color}. There is no {color} {shape}.")
    # Answers start a line (right after the assistant header), so they are learned without a leading space.
    lines += [word for word in YES_NO_WORDS for _ in range(50)]
    lines += ["user", "assistant", "system"] * 20
    return lines


def train_tokenizer(vocab_size: int = 1024, corpus: list[str] | None = None) -> Tokenizer:
    """Train a byte-level BPE on `corpus` (default: `training_corpus()`); deterministic for a given corpus."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or training_corpus(), trainer=trainer)
    return tokenizer


def chat_template(arch: str) -> str:
    """The chat template of `arch`: its family's real one where `_FAMILY_TEMPLATES` names it, else ChatML with the
    architecture's image (and video) placeholder."""
    if arch in _FAMILY_TEMPLATES:
        return family_chat_template(_FAMILY_TEMPLATES[arch])
    return _CHAT_TEMPLATE.replace("__IMAGE__", _IMAGE_MARKUP[arch]).replace("__VIDEO__", _VIDEO_MARKUP.get(arch, ""))


def family_chat_template(name: str) -> str:
    """A real model family's chat template, as shipped in TRL's `chat_templates` folder (e.g. "llama3")."""
    return (resources.files("trl") / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def build_tokenizer(arch: str = "llava", vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A fast tokenizer for the tiny VLM of `arch`: ChatML template, eos `<|im_end|>`, pad `<|endoftext|>`, left
    padding, no BOS, and the architecture's image token. Raises if "yes"/"no"/"Yes"/"No" are not single tokens."""
    if arch not in _IMAGE_MARKUP:
        raise ValueError(f"Unknown architecture {arch!r}; expected one of {sorted(_IMAGE_MARKUP)}")
    extra = {"image_token": LLAVA_IMAGE_TOKEN}
    if arch.startswith("qwen"):
        extra = {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        }
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(vocab_size),
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=chat_template(arch),
        extra_special_tokens=extra,
    )
    for word in YES_NO_WORDS:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"{word!r} is not a single token of the trained tokenizer ({ids}); enlarge the corpus")
    return tokenizer


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    return train_tokenizer(vocab_size).to_str()


def family_tokenizer(
    chat_template: str,
    special_tokens: Sequence[str] = (),
    named_tokens: dict[str, str] | None = None,
    eos_token: str = EOS_TOKEN,
    bos_token: str | None = None,
    vocab_size: int = 1024,
) -> PreTrainedTokenizerFast:
    """A tokenizer for the stand-in of another model family: the project's trained BPE (ShapesWorld text, single-token
    yes/no) with the family's special tokens added and its chat template.

    Args:
        chat_template: The family's chat template (`family_chat_template(name)` for those TRL ships).
        special_tokens: The family's markup and image tokens, added as special tokens.
        named_tokens: Tokens the family's processor reads as tokenizer attributes (e.g. `{"image_token": "<image>",
            "boi_token": "<start_of_image>"}`); added too.
        eos_token: End of a turn (and of generation).
        bos_token: Beginning of a sequence, if the family has one.
        vocab_size: Size of the trained BPE vocabulary (the added tokens come on top).
    """
    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    named = dict(named_tokens or {})
    wanted = [eos_token, *([bos_token] if bos_token else []), *special_tokens, *named.values()]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in dict.fromkeys(wanted)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=eos_token,
        bos_token=bos_token,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=chat_template,
        extra_special_tokens=named,
    )
    for word in YES_NO_WORDS:
        if len(tokenizer.encode(word, add_special_tokens=False)) != 1:
            raise RuntimeError(f"{word!r} is not a single token of the family tokenizer")
    return tokenizer
