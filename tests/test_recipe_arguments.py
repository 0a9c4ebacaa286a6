"""The recipe's settings as users give them: flat YAML keys and flags, each one honoured or refused."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from rlaifv_trl import FeedbackConfig, RLAIFVDPOConfig
from rlaifv_trl.manifest import result_settings
from rlaifv_trl.recipe import IterativeDPOArguments, check_recipe_arguments, run_settings
from rlaifv_trl.validation import RowValidation


ROOT = Path(__file__).parents[1]
TINY = ROOT / "recipes" / "configs" / "tiny_cpu.yaml"


def parse(*argv: str):
    from test_recipe import recipe_module

    return recipe_module().make_parser().parse_args_and_config(list(argv))


def as_parsed(value):
    return getattr(value, "value", value)


def test_a_flag_overrides_one_setting_and_keeps_every_other_yaml_value():
    parsed = parse("--config", str(TINY), "--num_candidates", "4")
    fields = {field.name: config for config in parsed for field in dataclasses.fields(config)}
    assert parsed[1].num_candidates == 4
    for key, value in yaml.safe_load(TINY.read_text()).items():
        if key != "num_candidates":
            expected = [] if (key, value) == ("report_to", "none") else value  # TrainingArguments' own reading
            assert as_parsed(getattr(fields[key], key)) == expected, key
    assert (parsed[1].max_new_tokens, parsed[1].length_balancing, parsed[1].shard_size) == (48, False, 64)


def test_every_setting_is_declared_once_and_documented():
    names = [
        field.name
        for config in (IterativeDPOArguments, FeedbackConfig, RLAIFVDPOConfig, ModelConfig, RowValidation)
        for field in dataclasses.fields(config)
    ]
    assert len(names) == len(set(names)), sorted({name for name in names if names.count(name) > 1})
    for config in (IterativeDPOArguments, FeedbackConfig, RowValidation):
        for field in dataclasses.fields(config):
            assert field.metadata.get("help") and f"{field.name} (`" in config.__doc__, field.name


def test_unknown_yaml_keys_and_missing_prompts_are_refused(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("prompt_dataset: me/prompts\nfeedback:\n  num_candidates: 4\n")  # the old nested form
    with pytest.raises(ValueError, match="feedback"):
        parse("--config", str(config))
    with pytest.raises(ValueError, match="Set prompt_dataset"):
        parse("--output_dir", str(tmp_path))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--push_to_hub", "true"], "set model_repo"),
        (["--resume_from_checkpoint", "some/checkpoint"], "resumes itself"),
        (["--eval_strategy", "steps"], "checkpoint_selection: best"),
        (["--checkpoint_selection", "best"], "metric_for_best_model"),
        (["--load_in_4bit", "true"], "LoRA"),
        (["--model_name_or_path", ""], "model_name_or_path"),
        (["--strict", "true"], "set strict_rows"),
    ],
)
def test_settings_the_recipe_cannot_honour_are_refused_before_any_work(flags, message, tmp_path):
    script_args, _, training_args, model_args, rows = parse(
        "--config", str(TINY), "--output_dir", str(tmp_path), *flags
    )
    model_args.model_name_or_path = model_args.model_name_or_path or None
    with pytest.raises(ValueError, match=message):
        check_recipe_arguments(script_args, training_args, model_args, rows)


def test_unknown_evaluators_fail_before_any_work(tmp_path):
    from test_recipe import run_recipe

    for name, message in [("nope", "Unknown evaluator 'nope'"), ("os.path:nothing_here", "has no function")]:
        with pytest.raises(ValueError, match=message):
            run_recipe(["--config", str(TINY), "--output_dir", str(tmp_path / "run"), "--evaluation", name])
    assert not (tmp_path / "run").exists()


def test_which_settings_decide_results_is_declared_per_field():
    script_args, feedback_args, training_args, model_args, rows = parse("--config", str(TINY), "--hub_token", "hf_x")
    settings = run_settings(script_args, feedback_args, training_args, model_args, rows)
    assert "labeler_batch_size" not in settings["feedback"] and "num_candidates" in settings["feedback"]
    assert "model_repo" not in settings["recipe"] and "prompt_dataset" in settings["recipe"]
    assert "logging_steps" not in settings["training"] and "learning_rate" in settings["training"]
    assert "hf_x" not in str(settings)  # tokens are never written into the manifest
    assert settings["rows"]["max_image_pixels"] == 64_000_000
    assert "strict" not in settings["rows"] and "strict_rows" not in settings["feedback"]  # raising changes no result
    assert result_settings(model_args) == settings["model"]


def test_strict_rows_is_one_flag_for_every_dataset_the_recipe_reads():
    _, feedback_args, training_args, _, rows = parse("--config", str(TINY), "--strict_rows", "true")
    assert feedback_args.strict_rows and not rows.strict and not hasattr(training_args, "strict_rows")
    assert "strict_rows" in FeedbackConfig.__doc__ and "seeds the feedback" in FeedbackConfig.__doc__
