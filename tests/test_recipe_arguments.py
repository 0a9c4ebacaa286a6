"""The recipe's settings as users give them: flat YAML keys and flags, each one honoured or refused."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from transformers import TrainingArguments

from rlaifv_trl.feedback import FeedbackConfig
from rlaifv_trl.manifest import own_fields, result_fields, result_settings
from rlaifv_trl.recipe import (
    EvaluationArguments,
    HubArguments,
    IterativeDPOArguments,
    PromptArguments,
    check_recipe_arguments,
    run_settings,
)
from rlaifv_trl.recipe.grpo_rank import GRPORankArguments
from rlaifv_trl.scripts import grpo_rank


ROOT = Path(__file__).parents[1]
TINY = ROOT / "recipes" / "configs" / "tiny_cpu.yaml"
GRPO_TINY = ROOT / "recipes" / "configs" / "grpo_rank_tiny_cpu.yaml"
SHARED = (PromptArguments, EvaluationArguments, HubArguments)


def recipe_parser():
    from test_recipe import recipe_module

    return recipe_module().make_parser()


def parse(*argv: str):
    return recipe_parser().parse_args_and_config(list(argv))


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


def documented_classes(parser) -> list[type]:
    """The project's dataclasses a parser reads, with their bases, less the training configs (those redeclare
    upstream fields only to change their defaults, which their docstrings list as such)."""
    classes = dict.fromkeys(cls for config in parser.dataclass_types for cls in config.__mro__)
    return [
        cls
        for cls in classes
        if cls.__module__.startswith("rlaifv_trl")
        and dataclasses.is_dataclass(cls)
        and not issubclass(cls, TrainingArguments)
    ]


@pytest.mark.parametrize("make_parser", [recipe_parser, grpo_rank.make_parser], ids=["dpo", "grpo_rank"])
def test_every_setting_is_declared_once_and_documented(make_parser):
    parser = make_parser()
    names = [field.name for config in parser.dataclass_types for field in dataclasses.fields(config)]
    assert len(names) == len(set(names)), sorted({name for name in names if names.count(name) > 1})
    for cls in documented_classes(parser):
        for name in own_fields(cls):  # each class documents the fields it declares, the shared ones included
            help_text = cls.__dataclass_fields__[name].metadata.get("help")
            assert help_text and f"{name} (`" in cls.__doc__, (cls.__name__, name)
    assert set(SHARED) & set(documented_classes(parser))


def test_both_recipes_share_the_prompt_and_evaluation_settings():
    shared = ["--prompts_per_iteration", "12", "--evaluation", "shapesworld", "none", "--evaluation_temperature", "0"]
    dpo = parse("--config", str(TINY), *shared)[0]
    grpo = grpo_rank.make_parser().parse_args_and_config(["--config", str(GRPO_TINY), *shared])[0]
    for script_args in (dpo, grpo):
        assert isinstance(script_args, PromptArguments) and isinstance(script_args, EvaluationArguments)
        assert (script_args.prompts_per_iteration, script_args.evaluation) == (12, ["shapesworld"])
        assert script_args.evaluation_temperature == 0.0
    assert isinstance(dpo, HubArguments) and not isinstance(grpo, HubArguments)
    assert grpo.num_rounds == 1  # the method's iterations; TRL's num_iterations is GRPO's mu
    with pytest.raises(ValueError, match="prompts_per_round"):  # the old name is refused
        grpo_rank.make_parser().parse_args_and_config(["--config", str(GRPO_TINY), "--prompts_per_round", "8"])


@pytest.mark.parametrize("recipe_arguments", [IterativeDPOArguments, GRPORankArguments])
@pytest.mark.parametrize(
    "values, message",
    [
        ({"prompt_dataset": None}, "Set prompt_dataset"),
        ({"prompts_per_iteration": 0}, "prompts_per_iteration must be at least 1"),
        ({"evaluation_prompts": 0}, "evaluation_prompts must be at least 1"),
        ({"evaluation_max_new_tokens": 0}, "evaluation_max_new_tokens must be at least 1"),
        ({"evaluation_temperature": -1.0}, "evaluation_temperature must be at least 0"),
    ],
)
def test_the_shared_checks_hold_in_both_recipes(recipe_arguments, values, message):
    shared = next(cls for cls in SHARED if set(values) <= set(cls.__dataclass_fields__))
    arguments = {"prompt_dataset": "me/prompts", **values}
    for config in (shared, recipe_arguments):
        with pytest.raises(ValueError, match=message):
            config(**{name: value for name, value in arguments.items() if name in config.__dataclass_fields__})


def test_evaluation_names_are_normalised_by_the_shared_class():
    assert EvaluationArguments(evaluation=["none", "", "shapesworld"]).evaluation == ["shapesworld"]
    assert GRPORankArguments(prompt_dataset="me/prompts", evaluation=["None"]).evaluation == []
    assert IterativeDPOArguments(prompt_dataset="me/prompts", evaluation=None).evaluation == []


@pytest.mark.parametrize(
    "values, message",
    [
        ({"hub_failure": "retry"}, "hub_failure must be one of"),
        ({"hub_retry_attempts": 0}, "hub_retry_attempts must be at least 1"),
        ({"hub_retry_initial_delay": -1.0}, "hub_retry_initial_delay must be at least 0"),
    ],
)
def test_the_hub_checks_hold_in_the_dpo_recipe(values, message):
    for config, prompts in ((HubArguments, {}), (IterativeDPOArguments, {"prompt_dataset": "me/prompts"})):
        with pytest.raises(ValueError, match=message):
            config(**prompts, **values)


@pytest.mark.parametrize("recipe_arguments", [IterativeDPOArguments, GRPORankArguments])
def test_which_fields_decide_results_joins_the_shared_classes(recipe_arguments):
    bases = [cls for cls in SHARED if issubclass(recipe_arguments, cls)]
    deciding = result_fields(recipe_arguments)
    not_deciding = frozenset().union(*(vars(cls)["fields_not_affecting_results"] for cls in recipe_arguments.__mro__
                                       if "fields_not_affecting_results" in vars(cls)))  # fmt: skip
    assert deciding == recipe_arguments.result_fields.union(*(cls.result_fields for cls in bases))
    assert not deciding & not_deciding
    assert deciding | not_deciding == {field.name for field in dataclasses.fields(recipe_arguments)}
    assert {"prompts_per_iteration", "evaluation_prompts"} <= deciding
    assert not {"model_repo", "hub_failure", "num_iterations", "num_rounds"} & deciding


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


def test_the_oracle_credits_confirmed_claims_when_asked():
    from rlaifv_testbed.builtin import BUILTIN_LABELER
    from rlaifv_trl.loading import ModelLoading
    from rlaifv_trl.recipe.grpo_rank import oracle_reward

    arguments = GRPORankArguments(
        prompt_dataset="me/prompts", oracle_model_name_or_path=BUILTIN_LABELER, oracle_confirmed_claim_weight=0.5
    )
    assert "oracle_confirmed_claim_weight" in result_fields(GRPORankArguments)
    reward = oracle_reward(arguments, BUILTIN_LABELER, ModelLoading())
    assert reward.ranker.confirmed_claim_weight == 0.5
    assert (
        oracle_reward(
            GRPORankArguments(prompt_dataset="me/prompts"), BUILTIN_LABELER, ModelLoading()
        ).ranker.confirmed_claim_weight
        == 0.0
    )
