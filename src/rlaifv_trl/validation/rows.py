"""Checks of one row: its prompt, its images, its answers. Each raises `BadRow` with a code on the first problem."""

from __future__ import annotations

import math
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


def count_placeholders(prompt: list[dict[str, Any]], kind: str) -> int:
    """The number of `{"type": kind}` parts ("image" or "video") in the prompt's messages."""
    return sum(
        isinstance(item, dict) and item.get("type") == kind
        for message in prompt
        if isinstance(message.get("content"), list)
        for item in message["content"]
    )


def count_image_placeholders(prompt: list[dict[str, Any]]) -> int:
    return count_placeholders(prompt, "image")


def count_video_placeholders(prompt: list[dict[str, Any]]) -> int:
    return count_placeholders(prompt, "video")


def row_video_values(value: Any, column: str = "videos") -> list[list[Any]]:
    """The videos of a row's video column (a list of videos, each a non-empty list of frame values); `[]` for none."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRow("video.malformed", f"a videos value of type {type(value).__name__}", column)
    for index, video in enumerate(value):
        if video is None:
            raise BadRow("video.missing", f"video {index} is None", column)
        if not isinstance(video, list):
            raise BadRow("video.malformed", f"video {index} is a {type(video).__name__}, not a list of frames", column)
        if not video:
            raise BadRow("video.empty", f"video {index} has no frame", column)
    return value


def _video_frames(video: list[Any], index: int, column: str, validation: RowValidation | None, keep: bool) -> list:
    frames, size = [], None
    for position, value in enumerate(video):
        try:
            frame = (
                decode_image(value, validation, column)
                if keep
                else open_image(value, validation or RowValidation(), column)
            )
            if not keep:
                frame.load()
        except BadRow as problem:
            raise BadRow(
                "video.frame_unreadable", f"frame {position} of video {index}: {problem.message}", column
            ) from None
        except Exception as error:
            message = f"frame {position} of video {index}: cannot decode it ({type(error).__name__})"
            raise BadRow("video.frame_unreadable", message, column) from None
        if size is not None and frame.size != size:
            message = f"frame {position} of video {index} is {frame.size}, frame 0 is {size}"
            raise BadRow("video.frame_size_mismatch", message, column)
        size = frame.size
        frames.append(frame if keep else value)
    return frames


def row_videos(value: Any, column: str = "videos", validation: RowValidation | None = None) -> list[list[Image.Image]]:
    """The decoded RGB frames of each video of a row's video column."""
    videos = row_video_values(value, column)
    return [_video_frames(video, index, column, validation, keep=True) for index, video in enumerate(videos)]


def check_row_videos(value: Any, column: str, validation: RowValidation) -> int:
    """Check that every frame of every video of the row can be decoded, without keeping it; returns their number."""
    videos = row_video_values(value, column)
    for index, video in enumerate(videos):
        _video_frames(video, index, column, validation, keep=False)
    return len(videos)


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


def conversational_prompt(
    prompt: Any, num_images: int, field: str = "prompt", num_videos: int = 0, allow_prefill: bool = False
) -> list[dict[str, Any]]:
    """The prompt as a conversation whose image (and video) placeholders match the row's, normalised as TRL does.

    A plain string becomes one user turn with the videos, then the images, first. In a conversation, messages whose
    content is a string get the images' placeholders the way TRL's `prepare_multimodal_messages` inserts them (before
    the text of the first such user message), so the rows TRL trains on are accepted as TRL reads them. The last
    message must be the user's, or with `allow_prefill` the start of the assistant's answer (TRL continues it).
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise BadRow("prompt.missing", "empty prompt", field)
        videos = [{"type": "video", "text": None} for _ in range(num_videos)]
        images = [{"type": "image", "text": None} for _ in range(num_images)]
        return [{"role": "user", "content": [*videos, *images, {"type": "text", "text": prompt}]}]
    if prompt is None or (isinstance(prompt, list) and not prompt):
        raise BadRow("prompt.missing", "empty prompt", field)
    if not isinstance(prompt, list):
        raise BadRow("prompt.malformed", f"a prompt of type {type(prompt).__name__}", field)
    if not all(isinstance(message, dict) and message.get("role") and "content" in message for message in prompt):
        raise BadRow("prompt.malformed", "every message needs a role and a content", field)
    if not all(isinstance(message["content"], (str, list)) for message in prompt):
        raise BadRow("prompt.malformed", "a message content is neither text nor a list of parts", field)
    last = ("user", "assistant") if allow_prefill else ("user",)
    if prompt[-1]["role"] not in last:
        raise BadRow("prompt.malformed", f"the last message is from {prompt[-1]['role']!r}, not the user", field)
    if not any(message["role"] == "user" for message in prompt):
        raise BadRow("prompt.malformed", "no message from the user", field)
    if not any(message_text(m["content"]).strip() for m in prompt if m["role"] == "user"):
        raise BadRow("prompt.missing", "empty prompt", field)
    prompt = with_image_placeholders(prompt, num_images, field)
    placeholders = count_image_placeholders(prompt)
    if placeholders != num_images:
        raise BadRow("image.count_mismatch", f"{placeholders} image placeholder(s) but {num_images} image(s)", field)
    placeholders = count_video_placeholders(prompt)
    if placeholders != num_videos:
        raise BadRow("video.count_mismatch", f"{placeholders} video placeholder(s) but {num_videos} video(s)", field)
    return prompt


def with_image_placeholders(prompt: list[dict[str, Any]], num_images: int, field: str) -> list[dict[str, Any]]:
    """The messages with string contents turned into parts and the images' placeholders inserted, by TRL's own
    `prepare_multimodal_messages` (the collators of its trainers call it); unchanged when every content is a list."""
    if all(isinstance(message["content"], list) for message in prompt):
        return prompt
    from trl.data_utils import prepare_multimodal_messages

    try:
        messages = prepare_multimodal_messages(prompt, images=[_PLACEHOLDER] * num_images)
    except (ValueError, KeyError, TypeError) as error:
        code = "image.count_mismatch" if "placeholders" in str(error) else "prompt.malformed"
        raise BadRow(code, str(error).split("\n")[0], field) from None
    return [
        {**message, "content": [_unfilled(part) for part in message["content"]]}
        if isinstance(message.get("content"), list)
        else message
        for message in messages
    ]


_PLACEHOLDER = object()  # what `with_image_placeholders` fills image parts with, then removes


def _unfilled(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image" and part.get("image") is _PLACEHOLDER:
        return {key: value for key, value in part.items() if key != "image"}
    return part


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
    prompt, images, _ = check_visual_prompt_row(row, image_column, None, validation, tokenizer, decode)
    return prompt, images


def check_visual_prompt_row(
    row: dict[str, Any],
    image_column: str | None,
    video_column: str | None,
    validation: RowValidation,
    tokenizer: PreTrainedTokenizerBase | None = None,
    decode: bool = True,
) -> tuple[list[dict[str, Any]], list[Any], list[list[Any]]]:
    """A prompt row with images and/or videos: its conversational prompt, its images and its videos (lists of
    frames), decoded to RGB or, with `decode=False`, the checked raw values.

    Without a video column the row needs an image. With one, the images are optional, but the row needs at least one
    image or video.
    """
    if video_column is None:
        values = row_image_values(row.get(image_column), image_column)
    else:
        value = row.get(image_column) if image_column else None
        values = row_image_values(value, image_column) if value else []
    if decode:
        images = row_images(values, image_column, validation) if values else []
    else:
        if values:
            check_row_images(values, image_column, validation)
        images = values
    videos: list[list[Any]] = []
    if video_column is not None:
        videos = row_video_values(row.get(video_column), video_column)
        if not videos and not images:
            raise BadRow("video.missing", "no video and no image", video_column)
        if decode:
            videos = row_videos(videos, video_column, validation)
        else:
            check_row_videos(videos, video_column, validation)
    prompt = conversational_prompt(row.get("prompt"), len(values), num_videos=len(videos))
    user_text = " ".join(message_text(message["content"]) for message in prompt if message["role"] != "assistant")
    check_text(user_text, "prompt", tokenizer)
    check_prompt_length(user_text, tokenizer, validation.max_prompt_tokens)
    return prompt, images, videos


def check_row_visuals(
    row: dict[str, Any], validation: RowValidation, allow_text_only: bool = False
) -> tuple[int, int]:
    """The numbers of images (`images` or `image`) and videos (`videos`) of a stored row, each readable. A row with a
    `videos` column may leave its images empty, but needs at least one image or video; with `allow_text_only`, an
    empty `images` list is a text-only row (TRL trains vision datasets that mix them in)."""
    column = "images" if "images" in row else "image"
    if allow_text_only and column == "images" and row.get("images") == [] and not row.get("videos"):
        return 0, 0
    if "videos" not in row:
        return check_row_images(row.get(column), column, validation), 0
    num_images = check_row_images(row[column], column, validation) if row.get(column) else 0
    num_videos = check_row_videos(row.get("videos"), "videos", validation)
    if not num_images and not num_videos:
        raise BadRow("video.missing", "no video and no image", "videos")
    return num_images, num_videos


def check_preference_row(
    row: dict[str, Any],
    validation: RowValidation,
    tokenizer: PreTrainedTokenizerBase | None = None,
    raw_string_prompts: bool = False,
) -> None:
    """A preference row (`prompt`, `images` or `image`, `chosen`, `rejected`, any schema `load_preference_dataset`
    reads, or any vision row `trl.DPOTrainer` trains on): every image readable, the prompt and answers well formed,
    the answers different, their stored reference log-probs (if any) finite numbers.

    A prompt given as a plain string is a question, turned into a user turn with the row's images, unless
    `raw_string_prompts`: then it is TRL's standard format, the model's raw input with the image tokens written in
    it, whose text (image and special tokens included) goes to the processor as it is and is not searched for special
    tokens; the processor checks it when the row is encoded. An empty `images` list is a text-only row.
    """
    num_images, num_videos = check_row_visuals(row, validation, allow_text_only=True)
    value = row.get("prompt", row.get("question"))
    texts = {side: answer_text(row.get(side), side) for side in ("chosen", "rejected")}
    if texts["chosen"].strip() == texts["rejected"].strip():
        raise BadRow("answer.identical", "the chosen and rejected answers are the same", "rejected")
    check_ref_log_probs(row)
    if raw_string_prompts and isinstance(value, str):
        if not value.strip():
            raise BadRow("prompt.missing", "empty prompt", "prompt")
        return
    prompt = conversational_prompt(value, num_images, num_videos=num_videos, allow_prefill=True)
    check_text(" ".join(message_text(m["content"]) for m in prompt if m["role"] != "assistant"), "prompt", tokenizer)
    for side, text in texts.items():
        check_text(text, side, tokenizer)


REF_LOG_PROB_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def check_ref_log_probs(row: dict[str, Any]) -> None:
    """Stored reference log-probabilities, where the row has them, must be finite numbers (a NaN or an infinity
    would turn the DPO loss and every weight it updates into NaN)."""
    for column in REF_LOG_PROB_COLUMNS:
        if column not in row:
            continue
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRow("ref_logps.non_finite", f"{type(value).__name__} instead of a number", column)
        if not math.isfinite(value):
            raise BadRow("ref_logps.non_finite", f"{value} is not a finite log-probability", column)


def check_ranking_row(
    row: dict[str, Any], validation: RowValidation, tokenizer: PreTrainedTokenizerBase | None = None
) -> None:
    """A rankings row (`prompt`, `images`, `candidates`, `ranking`, `ranks`, optional `scores` and `num_candidates`):
    every image readable, the prompt well formed, the candidates strings, `ranking` tie groups that cover every
    candidate id once, and `ranks` the position of each candidate's group."""
    num_images, num_videos = check_row_visuals(row, validation)
    prompt = conversational_prompt(row.get("prompt"), num_images, num_videos=num_videos)
    check_text(" ".join(message_text(message["content"]) for message in prompt), "prompt", tokenizer)
    candidates = row.get("candidates")
    if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
        raise BadRow("ranking.malformed", "no candidates, or a candidate that is not text", "candidates")
    for text in candidates:
        check_text(text, "candidates", tokenizer)
    n = len(candidates)
    if row.get("num_candidates") is not None and row["num_candidates"] != n:
        raise BadRow(
            "ranking.malformed", f"num_candidates is {row['num_candidates']} for {n} candidates", "num_candidates"
        )
    scores = row.get("scores")
    if scores is not None and len(scores) != n:
        raise BadRow("ranking.malformed", f"{len(scores)} scores for {n} candidates", "scores")
    groups = row.get("ranking")
    ids = [i for group in groups or [] for i in (group or [])]
    if not groups or any(not group for group in groups) or sorted(ids) != list(range(n)):
        raise BadRow("ranking.malformed", f"the tie groups do not hold each of the {n} candidate ids once", "ranking")
    expected = [0] * n
    for position, group in enumerate(groups):
        for i in group:
            expected[i] = position
    if row.get("ranks") != expected:
        raise BadRow("ranking.malformed", "the ranks are not the positions of the candidates' groups", "ranks")
