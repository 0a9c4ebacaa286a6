"""Checks of one row: its prompt, its images, its answers. Each raises `BadRow` with a code on the first problem."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import PreTrainedTokenizerBase

from .images import RowValidation, decode_image, open_image
from .problems import BadRow


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [item.get("text") or "" for item in content if isinstance(item, dict) and item.get("type") == "text"]
        return " ".join(part for part in parts if part)
    return ""


def count_image_placeholders(prompt: list[dict[str, Any]]) -> int:
    return sum(
        isinstance(item, dict) and item.get("type") == "image"
        for message in prompt
        if isinstance(message.get("content"), list)
        for item in message["content"]
    )


def row_image_values(value: Any, column: str) -> list[Any]:
    """The image values of a row's image column (`images`: a list; `image`: one image)."""
    if column == "images" and not isinstance(value, list):
        if value is None:
            raise BadRow("image.missing", "no image", column)
        value = [value]  # one image where a list was expected
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadRow("image.missing", "no image", column)
    return values


def row_images(value: Any, column: str, validation: RowValidation | None = None) -> list[Image.Image]:
    """The decoded RGB images of a row's image column."""
    return [decode_image(item, validation, column) for item in row_image_values(value, column)]


def check_row_images(value: Any, column: str, validation: RowValidation) -> int:
    """Check that every image of the row can be read and decoded, without keeping it; returns their number."""
    values = row_image_values(value, column)
    for item in values:
        image = open_image(item, validation, column)
        try:
            image.load()
        except Exception as error:
            raise BadRow("image.unreadable", f"cannot decode the image ({type(error).__name__})", column) from None
    return len(values)


def conversational_prompt(prompt: Any, num_images: int, field: str = "prompt") -> list[dict[str, Any]]:
    """The prompt as a conversation ending with a user turn whose image placeholders match the images.

    A plain string becomes one user turn with the images first.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise BadRow("prompt.missing", "empty prompt", field)
        images = [{"type": "image", "text": None} for _ in range(num_images)]
        return [{"role": "user", "content": [*images, {"type": "text", "text": prompt}]}]
    if prompt is None or (isinstance(prompt, list) and not prompt):
        raise BadRow("prompt.missing", "empty prompt", field)
    if not isinstance(prompt, list):
        raise BadRow("prompt.malformed", f"a prompt of type {type(prompt).__name__}", field)
    if not all(isinstance(message, dict) and message.get("role") and "content" in message for message in prompt):
        raise BadRow("prompt.malformed", "every message needs a role and a content", field)
    if not all(isinstance(message["content"], (str, list)) for message in prompt):
        raise BadRow("prompt.malformed", "a message content is neither text nor a list of parts", field)
    if prompt[-1]["role"] != "user":
        raise BadRow("prompt.malformed", f"the last message is from {prompt[-1]['role']!r}, not the user", field)
    if not message_text(prompt[-1]["content"]).strip():
        raise BadRow("prompt.missing", "empty prompt", field)
    placeholders = count_image_placeholders(prompt)
    if placeholders != num_images:
        raise BadRow("image.count_mismatch", f"{placeholders} image placeholder(s) but {num_images} image(s)", field)
    return prompt


def answer_text(answer: Any, field: str) -> str:
    """The text of a chosen or rejected answer: a string, or assistant messages (TRL's conversational format)."""
    if isinstance(answer, str):
        text = answer
    elif answer is None or (isinstance(answer, list) and not answer):
        raise BadRow("answer.missing", "no answer", field)
    elif isinstance(answer, list):
        if not all(isinstance(message, dict) and "content" in message for message in answer):
            raise BadRow("answer.malformed", "every message needs a role and a content", field)
        roles = {message.get("role") for message in answer}
        if roles != {"assistant"}:
            raise BadRow("answer.wrong_role", f"messages from {sorted(map(str, roles))}, not the assistant", field)
        text = " ".join(message_text(message["content"]) for message in answer)
    else:
        raise BadRow("answer.malformed", f"an answer of type {type(answer).__name__}", field)
    if not text.strip():
        raise BadRow("answer.missing", "empty answer", field)
    return text


def special_tokens_in(text: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokenizer's special tokens (control and chat markup) that occur in `text`."""
    specials = set(tokenizer.all_special_tokens)
    specials |= {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    return sorted(token for token in specials if token and token in text)


def check_text(text: str, field: str, tokenizer: PreTrainedTokenizerBase | None) -> None:
    """Refuse text containing special tokens: tokenized as control tokens, it could open a new turn."""
    if tokenizer is not None:
        found = special_tokens_in(text, tokenizer)
        if found:
            raise BadRow("text.special_tokens", f"contains the special token(s) {found[:3]}", field)


def check_prompt_length(text: str, tokenizer: PreTrainedTokenizerBase | None, max_tokens: int | None) -> None:
    if tokenizer is None or max_tokens is None:
        return
    if len(text) > 8 * max_tokens:  # no tokenizer gives 8+ characters per token on average: skip the tokenization
        raise BadRow("prompt.too_long", f"{len(text)} characters, more than max_prompt_tokens={max_tokens}", "prompt")
    count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if count > max_tokens:
        raise BadRow("prompt.too_long", f"{count} tokens, more than max_prompt_tokens={max_tokens}", "prompt")


def check_prompt_row(
    row: dict[str, Any],
    image_column: str,
    validation: RowValidation,
    tokenizer: PreTrainedTokenizerBase | None = None,
    decode: bool = True,
) -> tuple[list[dict[str, Any]], list[Any]]:
    """A prompt row (image(s), question): its conversational prompt and its images (decoded RGB images, or with
    `decode=False` the checked raw values)."""
    values = row_image_values(row.get(image_column), image_column)
    if decode:
        images = row_images(values, image_column, validation)
    else:
        check_row_images(values, image_column, validation)
        images = values
    prompt = conversational_prompt(row.get("prompt"), len(values))
    user_text = " ".join(message_text(message["content"]) for message in prompt if message["role"] != "assistant")
    check_text(user_text, "prompt", tokenizer)
    check_prompt_length(user_text, tokenizer, validation.max_prompt_tokens)
    return prompt, images


def check_preference_row(
    row: dict[str, Any], validation: RowValidation, tokenizer: PreTrainedTokenizerBase | None = None
) -> None:
    """A preference row (`prompt`, `images` or `image`, `chosen`, `rejected`, any schema `load_preference_dataset`
    reads): every image readable, the prompt and answers well formed, the answers different."""
    column = "images" if "images" in row else "image"
    num_images = check_row_images(row.get(column), column, validation)
    prompt = conversational_prompt(row.get("prompt", row.get("question")), num_images)
    texts = {side: answer_text(row.get(side), side) for side in ("chosen", "rejected")}
    if texts["chosen"].strip() == texts["rejected"].strip():
        raise BadRow("answer.identical", "the chosen and rejected answers are the same", "rejected")
    check_text(" ".join(message_text(message["content"]) for message in prompt), "prompt", tokenizer)
    for side, text in texts.items():
        check_text(text, side, tokenizer)
