from .datasets import decoded, undecoded, validate_dataset
from .images import RowValidation, decode_image, open_image, to_rgb
from .problems import CODES, BadRow, clean_message
from .report import BadRowError, ValidationReport
from .rows import (
    REF_LOG_PROB_COLUMNS,
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
    "REF_LOG_PROB_COLUMNS",
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
