"""One validation layer for every entry point that reads rows: the recipe's prompts, `RLAIFVFeedbackGenerator`,
`load_preference_dataset`, `RLAIFVDPOTrainer` and `rlaifv-trl evaluate`.

Each row is checked once (lazily for a stream). A bad row is skipped with a stable code (`CODES`), the field and a
short message, and counted in a report where `kept + skipped == rows`; `strict=True` raises on the first bad row,
naming it, instead.
"""

from .datasets import decoded, undecoded, validate_dataset
from .images import RowValidation, decode_image, open_image, to_rgb
from .problems import CODES, BadRow, clean_message
from .report import BadRowError, ValidationReport
from .rows import (
    answer_text,
    check_preference_row,
    check_prompt_row,
    check_ranking_row,
    check_text,
    check_visual_prompt_row,
    conversational_prompt,
    count_video_placeholders,
    message_text,
    row_images,
    row_videos,
)


__all__ = [
    "CODES",
    "BadRow",
    "BadRowError",
    "RowValidation",
    "ValidationReport",
    "answer_text",
    "check_preference_row",
    "check_prompt_row",
    "check_ranking_row",
    "check_text",
    "check_visual_prompt_row",
    "clean_message",
    "conversational_prompt",
    "count_video_placeholders",
    "decode_image",
    "decoded",
    "message_text",
    "open_image",
    "row_images",
    "row_videos",
    "to_rgb",
    "undecoded",
    "validate_dataset",
]
