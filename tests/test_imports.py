"""Imports are lazy: `import rlaifv_trl`, its subpackages and `rlaifv-trl --help` load no torch, TRL, transformers or
datasets; every public name still resolves, to the object its module defines."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest


HEAVY = ("torch", "trl", "transformers", "datasets")
LAZY_PACKAGES = [
    "rlaifv_trl",
    "rlaifv_trl.evaluation",
    "rlaifv_trl.feedback",
    "rlaifv_trl.ranking",
    "rlaifv_trl.recipe",
    "rlaifv_trl.scoring",
    "rlaifv_testbed",
    "rlaifv_trl.trainer",
    "rlaifv_trl.validation",
]


def heavy_modules_after(code: str) -> list[str]:
    """The heavy libraries in `sys.modules` after running `code` in a fresh interpreter."""
    report = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_package_and_its_subpackages_loads_no_heavy_library():
    assert heavy_modules_after("import rlaifv_trl") == []
    assert heavy_modules_after("\n".join(f"import {name}" for name in LAZY_PACKAGES)) == []
    # The checks the command line and the recipes' settings read stay light too.
    assert heavy_modules_after("from rlaifv_trl.validation import CODES, BadRow, ValidationReport") == []
    assert heavy_modules_after("import rlaifv_trl.scripts\nfrom rlaifv_trl.recipe import PromptArguments") == []


def test_command_line_help_loads_no_heavy_library():
    code = "from rlaifv_trl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert heavy_modules_after(code) == []
    done = subprocess.run(
        [sys.executable, "-m", "rlaifv_trl.cli", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    assert all(command in done.stdout for command in ("dpo", "grpo-rank", "evaluate", "push"))


def stub_names(package) -> list[str]:
    """`__all__` of the package's `__init__.pyi`, the names type checkers see."""
    stub = ast.parse(Path(package.__file__).with_suffix(".pyi").read_text())
    return next(ast.literal_eval(node.value) for node in stub.body if isinstance(node, ast.Assign))


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(name)
    assert sorted(package.__all__) == sorted(stub_names(package))
    assert set(package.__all__) <= set(dir(package))
    for attribute in package.__all__:
        value = getattr(package, attribute)
        defined_in = getattr(value, "__module__", None)
        if defined_in and defined_in.startswith("rlaifv_trl."):  # not re-exported constants
            assert getattr(importlib.import_module(defined_in), attribute) is value
    with pytest.raises(AttributeError):
        package.NoSuchName  # noqa: B018


def test_from_imports_work_as_before():
    from rlaifv_trl import RLAIFVDPOTrainer, YesNoLabeler, load_preference_dataset
    from rlaifv_trl.trainer.rlaifv_dpo_trainer import RLAIFVDPOTrainer as defined

    assert RLAIFVDPOTrainer is defined
    assert YesNoLabeler.__module__ == "rlaifv_trl.feedback.labeler"
    assert callable(load_preference_dataset)
