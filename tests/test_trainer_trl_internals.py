"""The TRL internals RLAIFVDPOTrainer and the scorer rely on, checked one by one with an explicit message.

When one of these fails after a TRL upgrade, the message says which assumption broke; the trainer code that relies
on it is named in the message. The functional tests also cover these paths, but fail less legibly.
"""

import dataclasses
import inspect
import warnings

import pytest
import torch
import trl
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from rlaifv_testbed import oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer


pytestmark = pytest.mark.usefixtures("one_torch_thread")

UPGRADE = f"(trl {trl.__version__}; rlaifv_trl is tested with trl 1.16)"


def test_dpo_trainer_methods_that_are_overridden_or_called():
    expected = {
        "_compute_loss": ["self", "model", "inputs", "return_outputs"],
        "_precompute_ref_logps": ["self", "dataset", "name", "batch_size"],
        "_set_signature_columns_if_needed": ["self"],
        "compute_ref_log_probs": ["self", "model", "inputs"],
        "evaluate": ["self", "eval_dataset", "ignore_keys", "metric_key_prefix"],
    }
    for name, parameters in expected.items():
        method = getattr(DPOTrainer, name, None)
        assert method is not None, f"DPOTrainer.{name} is gone {UPGRADE}: RLAIFVDPOTrainer overrides or calls it"
        assert list(inspect.signature(method).parameters) == parameters, (
            f"DPOTrainer.{name} changed signature {UPGRADE}"
        )
    assert "create_accelerator_and_postprocess" in inspect.getsource(Trainer.__init__), (
        "Trainer.__init__ no longer calls create_accelerator_and_postprocess: RLAIFVDPOTrainer sets "
        "precompute_ref_log_probs back there for vision datasets"
    )


def test_dpo_trainer_init_order_the_vision_precompute_relies_on():
    source = inspect.getsource(DPOTrainer.__init__)
    refusal = source.find("is not supported for vision datasets")
    parent_init = source.find("super().__init__(")
    reference = source.find("args.precompute_ref_log_probs and not self.is_fsdp_enabled")
    precompute = source.find("self._precompute_ref_logps(")
    assert -1 not in (refusal, parent_init, reference, precompute), (
        f"DPOTrainer.__init__ changed {UPGRADE}: RLAIFVDPOTrainer hides precompute_ref_log_probs from its vision "
        "refusal and sets it again before the reference model is created and _precompute_ref_logps is called"
    )
    assert refusal < parent_init < reference < precompute, (
        f"DPOTrainer.__init__ reordered {UPGRADE}: the vision refusal must come before Trainer.__init__, the "
        "reference-model decision and the precompute call after it"
    )
    loss_source = inspect.getsource(DPOTrainer._compute_loss)
    assert 'inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]' in loss_source, (
        f"DPOTrainer._compute_loss no longer reads precomputed reference log-probs from the batch {UPGRADE}"
    )
    assert "self._metrics[mode]" in loss_source and "self._metrics[mode].clear()" in inspect.getsource(DPOTrainer.log)


def test_vision_collator_fields_and_output_keys(tiny_vlm_dirs):
    fields = set(DataCollatorForVisionPreference.__dataclass_fields__)
    assert {"processor", "max_length", "pad_to_multiple_of", "return_tensors"} <= fields, (
        f"DataCollatorForVisionPreference fields changed {UPGRADE}: RLAIFVDPOTrainer rebuilds it with the ref columns"
    )
    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["llava"])
    data = oracle_preference_dataset(2)
    batch = DataCollatorForVisionPreference(processor=processor)(list(data))
    assert {"input_ids", "attention_mask", "completion_mask", "pixel_values"} <= set(batch), (
        f"DataCollatorForVisionPreference output keys changed {UPGRADE}: {sorted(batch)}"
    )
    assert batch["input_ids"].shape[0] == 4, "the batch is no longer [chosen rows, rejected rows]"
    assert "ref_chosen_logps" not in batch  # why RLAIFVDPOTrainer needs its own collator


def test_signature_columns_and_fused_forwards_in_a_training_step(tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["llava_policy"]
    model = AutoModelForImageTextToText.from_pretrained(path)
    trainer = RLAIFVDPOTrainer(
        model=model,
        ref_model=AutoModelForImageTextToText.from_pretrained(tiny_vlm_dirs["llava"]),
        args=dpo_args(),
        train_dataset=oracle_preference_dataset(2),
        processing_class=AutoProcessor.from_pretrained(path),
    )
    assert trainer._is_vision_dataset is True, f"DPOTrainer._is_vision_dataset is gone {UPGRADE}"
    trainer._set_signature_columns_if_needed()
    assert {"prompt", "chosen", "rejected", "images", "ref_chosen_logps", "ref_rejected_logps"} <= set(
        trainer._signature_columns
    ), f"Trainer._signature_columns changed {UPGRADE}"

    outputs = []
    for module in (trainer.model, trainer.ref_model):
        module.register_forward_hook(lambda module, args, output: outputs.append((module, output)))
    trainer.model.train()
    batch = trainer._prepare_inputs(trainer.data_collator(list(trainer.train_dataset)))
    trainer.compute_loss(trainer.model, batch)
    assert [module for module, _ in outputs] == [trainer.model, trainer.ref_model], (
        f"DPOTrainer._compute_loss no longer runs the policy then the reference {UPGRADE}"
    )
    for _, output in outputs:
        assert isinstance(output.log_probs, torch.Tensor), f"fused_lm_head outputs have no log_probs {UPGRADE}"
        assert output.log_probs.shape == (4, batch["input_ids"].shape[1] - 1), f"log_probs layout changed {UPGRADE}"
    assert len(trainer._metrics["train"]["length_normalized_rewards/chosen"]) == 1


def test_config_defaults_are_the_papers_without_warnings(tmp_path):
    def warnings_of(config_class):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = config_class(str(tmp_path), use_cpu=True)  # bf16, the default, needs use_cpu on CPU
        return config, {str(w.message) for w in caught}

    args, ours = warnings_of(RLAIFVDPOConfig)
    assert ours <= warnings_of(DPOConfig)[1]  # the paper's settings add no deprecation warning to TRL's own
    assert (args.beta, args.learning_rate, args.weight_decay, args.num_train_epochs) == (0.1, 5e-7, 0.01, 4)
    assert args.lr_scheduler_type == "cosine" and args.max_length == 2048 and args.loss_type == ["sigmoid"]
    assert args.get_warmup_steps(1000) == 50  # warmup_steps below 1 is a ratio
    assert args.precompute_ref_log_probs is False and args.log_length_normalized_rewards is True
    new_fields = {f.name for f in dataclasses.fields(RLAIFVDPOConfig)} - {
        f.name for f in dataclasses.fields(DPOConfig)
    }
    assert new_fields == {"log_length_normalized_rewards", "encode_images_once"}  # strict rows: RowValidation's
    assert args.encode_images_once is False  # new behaviour is opt-in
    for name in new_fields:
        assert RLAIFVDPOConfig.__dataclass_fields__[name].metadata["help"] and name in RLAIFVDPOConfig.__doc__
    assert "1e-5" in RLAIFVDPOConfig.__doc__  # the LoRA learning rate


def test_bf16_follows_the_cpu_unless_set(tmp_path):
    from rlaifv_trl.trainer.rlaifv_dpo_config import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    flags = open("/proc/cpuinfo").read().split()
    assert native == any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))
    assert RLAIFVDPOConfig(str(tmp_path), use_cpu=True).bf16 is native
    assert DPOConfig(str(tmp_path), use_cpu=True).bf16 is True  # TRL's default, 5-6x slower on CPUs without bf16
    assert RLAIFVDPOConfig(str(tmp_path), use_cpu=True, bf16=True).bf16 is True  # an explicit choice is kept
    assert RLAIFVDPOConfig(str(tmp_path), use_cpu=True, fp16=False, bf16=False).bf16 is False


def test_the_default_config_builds_on_a_machine_without_an_accelerator(tmp_path):
    """`TrainingArguments` refuses bf16 without an accelerator unless `use_cpu` is set: the defaults must build."""
    from rlaifv_trl import GRPORankConfig
    from rlaifv_trl.trainer.rlaifv_dpo_config import cpu_has_native_bf16

    on_cpu = not (torch.cuda.is_available() or torch.accelerator.is_available())
    native = cpu_has_native_bf16()
    expected = (native, native) if on_cpu else (True, False)  # with an accelerator: TRL's defaults
    for config_class in (RLAIFVDPOConfig, GRPORankConfig):
        config = config_class(str(tmp_path))
        assert (config.bf16, config.use_cpu) == expected, config_class.__name__


def test_config_parses_from_the_command_line(tmp_path):
    (args,) = trl.TrlParser((RLAIFVDPOConfig,)).parse_args_and_config(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "true",
            "--log_length_normalized_rewards",
            "false",
            "--precompute_ref_log_probs",
            "true",
        ]
    )
    assert args.log_length_normalized_rewards is False and args.precompute_ref_log_probs is True
