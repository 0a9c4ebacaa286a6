"""Which settings a run folder records and compares on resume: an allow-list per config class, so that a release of
transformers or TRL that adds a field does not strand a run, and a later release of rlaifv-trl may record more."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from trl import TrlParser

from rlaifv_trl import FeedbackConfig, RLAIFVDPOConfig
from rlaifv_trl.manifest import MANIFEST_FILE, Manifest, own_fields, result_fields, result_settings
from rlaifv_trl.recipe import RecipeRun, run_settings
from rlaifv_trl.upstream_fields import UPSTREAM_RESULT_FIELDS, upstream_key


ROOT = Path(__file__).parents[1]
TINY = ["--config", str(ROOT / "recipes/configs/tiny_cpu.yaml")]


def recipe_parser(name: str) -> TrlParser:
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


RECIPE_CONFIGS = [config for name in ("iterative_dpo", "grpo_rank") for config in recipe_parser(name).dataclass_types]


@pytest.mark.parametrize("config", RECIPE_CONFIGS, ids=lambda config: config.__name__)
def test_every_field_of_a_recipe_config_is_classified(config):
    """Each field the project declares is listed as deciding results or not; each public class of transformers or TRL
    a recipe parses has an allow-list, all of whose names are fields of the installed release."""
    for cls in [cls for cls in config.__mro__ if dataclasses.is_dataclass(cls)]:
        if cls.__module__.startswith("rlaifv_trl"):
            deciding, not_deciding = vars(cls)["result_fields"], vars(cls)["fields_not_affecting_results"]
            assert not deciding & not_deciding, (cls.__name__, sorted(deciding & not_deciding))
            unclassified = own_fields(cls) ^ (deciding | not_deciding)
            assert not unclassified, (cls.__name__, sorted(unclassified))
        elif not cls.__name__.startswith("_"):  # a private base only redeclares fields of the public ones
            listed = UPSTREAM_RESULT_FIELDS[upstream_key(cls)]
            missing = listed - {field.name for field in dataclasses.fields(cls)}
            assert not missing, (cls.__name__, sorted(missing))


@dataclasses.dataclass
class NewerDPOConfig(RLAIFVDPOConfig):
    """`RLAIFVDPOConfig` on a later TRL release that adds a field."""

    added_upstream: float = dataclasses.field(default=0.5, metadata={"help": "A field of a later TRL."})


@dataclasses.dataclass
class LaterFeedbackConfig(FeedbackConfig):
    """`FeedbackConfig` of a later rlaifv-trl release that adds a field deciding results."""

    result_fields = FeedbackConfig.result_fields | {"max_claims"}
    fields_not_affecting_results = FeedbackConfig.fields_not_affecting_results
    max_claims: int | None = dataclasses.field(default=None, metadata={"help": "A later release's setting."})


def settings(tmp_path: Path, *argv: str, feedback=FeedbackConfig, training=RLAIFVDPOConfig):
    """The recipe's settings from the tiny config, parsed with the given config classes."""
    parser = recipe_parser("iterative_dpo")
    parser = TrlParser(
        tuple({FeedbackConfig: feedback, RLAIFVDPOConfig: training}.get(t, t) for t in parser.dataclass_types)
    )
    return run_settings(*parser.parse_args_and_config([*TINY, "--output_dir", str(tmp_path), *argv]))


def resume(tmp_path: Path, run_settings_) -> dict:
    with RecipeRun(tmp_path, run_settings_, "builtin:shapesworld-llava") as run:
        return run.manifest.done


def test_a_field_that_a_library_release_adds_is_not_recorded_and_the_run_resumes(tmp_path):
    with RecipeRun(tmp_path, settings(tmp_path), "builtin:shapesworld-llava") as run:
        run.stage(0, "evaluate", lambda: {"chair_response": 0.5})
    newer = settings(tmp_path, "--added_upstream", "0.9", training=NewerDPOConfig)
    assert "added_upstream" not in newer["training"] and newer == settings(tmp_path)
    assert resume(tmp_path, newer) == {"iteration-0/evaluate": {"chair_response": 0.5}}
    with pytest.raises(ValueError, match=r"other settings \(changed: training\.beta\)"):
        resume(tmp_path, settings(tmp_path, "--added_upstream", "0.9", "--beta", "0.2", training=NewerDPOConfig))


def test_a_setting_that_a_later_release_records_is_accepted_at_its_default(tmp_path):
    with RecipeRun(tmp_path, settings(tmp_path), "builtin:shapesworld-llava") as run:
        run.stage(0, "evaluate", lambda: None)
    with pytest.raises(ValueError, match=r"changed: feedback\.max_claims\)"):
        resume(tmp_path, settings(tmp_path, "--max_claims", "3", feedback=LaterFeedbackConfig))
    assert "iteration-0/evaluate" in resume(tmp_path, settings(tmp_path, feedback=LaterFeedbackConfig))
    recorded = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert recorded["settings"]["feedback"]["max_claims"] is None  # recorded from now on
    # and back: a release that no longer records it accepts the run while it holds its default
    assert "iteration-0/evaluate" in resume(tmp_path, settings(tmp_path))


def test_a_setting_recorded_away_from_its_default_is_not_dropped_silently(tmp_path):
    later = result_settings(LaterFeedbackConfig(max_claims=3))
    Manifest.open(tmp_path, later)
    with pytest.raises(ValueError, match=r"changed: max_claims\)"):
        Manifest.open(tmp_path, result_settings(FeedbackConfig()))
    assert result_fields(LaterFeedbackConfig) == FeedbackConfig.result_fields | {"max_claims"}


def test_a_run_folder_numbered_from_0_by_an_earlier_release_is_not_resumed(tmp_path):
    current = settings(tmp_path)
    with RecipeRun(tmp_path, current, "builtin:shapesworld-llava"):
        pass
    recorded = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert recorded["layout"] == 2
    earlier = {"settings": recorded["settings"], "done": {"iteration-0/feedback": {}, "iteration-1/train": {}}}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(earlier))  # no layout: iterations numbered from 0
    refusal = "written by an earlier release of rlaifv-trl, with another folder layout. Use another output folder"
    with pytest.raises(ValueError, match=refusal):
        resume(tmp_path, current)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == earlier  # left as it was


def test_a_section_records_the_settings_of_a_step_that_resumes_on_its_own(tmp_path):
    feedback = {"seed": 1, "dataset": {"fingerprint": "a"}}
    with RecipeRun(tmp_path, settings(tmp_path), "builtin:shapesworld-llava") as run:

        def collect():
            assert run.section(1, "feedback").open(feedback) is False  # recorded the first time
            return {"num_pairs": 3}

        run.stage(1, "feedback", collect)
        assert run.iterations() == [1]
    recorded = Manifest.read(tmp_path)
    assert recorded.done == {"iteration-1/feedback": {"num_pairs": 3}}  # a section is no finished stage
    section = recorded.section("iteration-1/feedback")
    assert section.open(feedback) is False
    with pytest.raises(ValueError, match=r"iteration-1/feedback started with other settings \(changed: dataset\)"):
        section.open({**feedback, "dataset": {"fingerprint": "b"}})
    assert section.open({**feedback, "dataset": {"fingerprint": "b"}}, overwrite=True) is True  # results to remove
    assert Manifest.read(tmp_path).sections["iteration-1/feedback"]["settings"]["dataset"] == {"fingerprint": "b"}
    assert resume(tmp_path, settings(tmp_path)) == recorded.done  # kept when the run resumes
    changed = {"settings": {**feedback, "dataset": {"fingerprint": "b"}}, "defaults": {}}
    assert Manifest.read(tmp_path).sections == {"iteration-1/feedback": changed}
