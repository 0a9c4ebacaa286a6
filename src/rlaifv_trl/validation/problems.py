"""What can be wrong with a row: a stable code per cause, the field it is in, and a short message.

Reports group rows by code, so messages never carry object representations or memory addresses.
"""

from __future__ import annotations

import re


# Every code a row can be skipped with, and what it means. Codes are stable: scripts may match them.
CODES = {
    "id.missing": "the row has no prompt id",
    "id.duplicate": "another row has the same prompt id",
    "image.missing": "an image is None, or the row has no image",
    "image.empty": "an image has no bytes or no pixels",
    "image.unreadable": "an image's bytes are not an image PIL can decode",
    "image.too_large": "an image has more pixels than max_image_pixels (or than PIL's decompression-bomb limit)",
    "image.unsupported": "an image value is neither an image, bytes, a path nor a {bytes, path} mapping",
    "image.path_outside_root": "an image path leaves the dataset's folder or image_root (absolute, .., symlink)",
    "image.path_without_root": "an image is given by a path but there is no folder it may be read from",
    "image.path_missing": "an image path does not exist",
    "image.path_not_a_file": "an image path is a folder, a FIFO, a device or another non-regular file",
    "image.url_refused": "an image is a URL and allow_image_urls is off",
    "image.url_failed": "an image URL could not be fetched",
    "image.count_mismatch": "the prompt's image placeholders do not match the row's images",
    "video.missing": "the row has no video and no image, or a video is None",
    "video.empty": "a video has no frame",
    "video.malformed": "a video is not a list of frames",
    "video.frame_unreadable": "a video frame cannot be read or decoded (corrupt, missing, refused path or URL)",
    "video.frame_size_mismatch": "the frames of a video differ in size",
    "video.count_mismatch": "the prompt's video placeholders do not match the row's videos",
    "video.unsupported": "the model's processor takes no videos",
    "prompt.missing": "the prompt is None or empty",
    "prompt.malformed": "the prompt is not a string or a list of {role, content} messages ending with the user",
    "prompt.too_long": "the prompt's text has more tokens than max_prompt_tokens",
    "text.special_tokens": "user or answer text contains the tokenizer's special tokens (it could open a new turn)",
    "answer.missing": "the chosen or rejected answer is None or empty",
    "answer.malformed": "the chosen or rejected answer is not a string or a list of assistant messages",
    "answer.wrong_role": "an answer message is not from the assistant",
    "answer.identical": "the chosen and rejected answers are the same",
    "answer.cut_by_max_length": "max_length leaves no token of an answer",
    "ref_logps.non_finite": "a stored reference log-probability is missing, NaN or infinite",
    "ranking.malformed": "a rankings row's candidates, scores, ranking or ranks are missing or do not agree",
    "reference.malformed": "a benchmark row's reference is unusable (a POPE answer other than yes/no, CHAIR objects "
    "that are not a list of strings)",
    "row.unprocessable": "the model's processor cannot encode the row (image and text together)",
    "stage.failed": "a stage (sampling, splitting, labeling) raised on this row",
}


class BadRow(ValueError):
    """A row that cannot be used.

    Args:
        code: One of `CODES` (it groups the report).
        message: A short reason naming the problem, without object representations.
        field: The column it is in (`images`, `prompt`, `chosen`, ...), if any.
    """

    def __init__(self, code: str, message: str, field: str | None = None):
        if code not in CODES:
            raise ValueError(f"Unknown row problem code {code!r}")
        self.code, self.message, self.field = code, clean_message(message), field
        super().__init__(f"{field}: {self.message}" if field else self.message)


_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|\b0x[0-9a-fA-F]{6,}\b")


def clean_message(text: str, limit: int = 200) -> str:
    """A message fit for a report: object representations and addresses removed, at most `limit` characters."""
    text = re.sub(r"\s+", " ", _REPR.sub("<object>", str(text))).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
