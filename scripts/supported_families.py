"""Print the README's table of supported vision-language families, from the registry the test matrix runs on.

    python scripts/supported_families.py

`tests/test_families.py` runs every path of the project on each family's tiny stand-in; `tests/test_readme.py`
checks that the README shows this table as printed.
"""

from rlaifv_testbed.families import FAMILIES


TESTED = (
    "Each family's tiny stand-in (its own model classes, special tokens, chat template and image processor) passes, "
    "in `tests/test_families.py`: n-way sampling, reproducible and independent of batching; the labeler's "
    "prefix-shared p(yes)/p(no) equal to a plain per-question forward within 1e-4; reference log-probs equal to "
    "`trl.DPOTrainer`'s within 1e-4; a `RLAIFVDPOTrainer` step, full and with LoRA; Best-of-N equal to one-by-one "
    "scoring within 1e-4; one iteration of the recipe."
)


def table() -> str:
    lines = [TESTED, "", "| family | `model_type` | checkpoints | what it needs |", "|---|---|---|---|"]
    for name, family in FAMILIES.items():
        lines.append(f"| {family.display} | `{name}` | {family.examples} | {family.notes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
