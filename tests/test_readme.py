"""The README's table of supported families is the one the registry (and so the family matrix) produces."""

import re
import subprocess
import sys
from pathlib import Path

from rlaifv_testbed.families import FAMILIES


ROOT = Path(__file__).resolve().parents[1]


def test_readme_shows_the_generated_family_table():
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "supported_families.py")], capture_output=True, text=True, check=True
    ).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- families:start -->\n(.*?)\n<!-- families:end -->", readme, re.S)
    assert shown is not None, "the README lacks the families markers"
    assert shown.group(1).strip() == printed, "regenerate the table: python scripts/supported_families.py"
    rows = [line for line in printed.splitlines() if line.startswith("| ")][1:]  # after the header
    assert [re.search(r"`(\w+)`", row.split("|")[2]).group(1) for row in rows] == list(FAMILIES)
