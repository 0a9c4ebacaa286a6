"""Which fields of transformers' and TRL's config classes decide a run's results (see `rlaifv_trl.manifest`).

An allow-list per upstream class, keyed by package and class name: a field a later release adds is not in it, so it
is not recorded and an upgrade never refuses to resume a run. Fields left out only change where and how a run logs,
saves, pushes or loads data, its speed or memory (compilation, activation checkpointing, kernels of the same math,
worker processes), or evaluation that decides nothing. A name that the installed release lacks is skipped.
"""

from __future__ import annotations


TRAINING_ARGUMENTS = frozenset(
    {
        # the optimisation
        "per_device_train_batch_size", "gradient_accumulation_steps", "auto_find_batch_size", "num_train_epochs",
        "max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim",
        "optim_args", "optim_target_modules", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
        "max_grad_norm", "label_smoothing_factor", "average_tokens_across_devices", "neftune_noise_alpha",
        # numerics and the devices the model is sharded over
        "bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "tf32", "use_cpu", "use_liger_kernel",
        "liger_kernel_config", "accelerator_config", "parallelism_config", "fsdp", "fsdp_config", "deepspeed",
        "ddp_broadcast_buffers",
        # the data order
        "seed", "data_seed", "full_determinism", "train_sampling_strategy", "length_column_name",
        "dataloader_drop_last", "dataloader_in_order", "remove_unused_columns", "ignore_data_skip",
        "restore_callback_states_from_checkpoint",
        # which checkpoint is kept
        "eval_strategy", "eval_steps", "eval_delay", "per_device_eval_batch_size", "load_best_model_at_end",
        "metric_for_best_model", "greater_is_better",
    }
)  # fmt: skip

# Fields TRL's trainer configs share
_TRL_TRAINER = frozenset(
    {
        "model_init_kwargs", "trust_remote_code", "router_aux_loss_coef", "disable_dropout", "pad_to_multiple_of",
        "beta", "loss_type", "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps",
    }
)  # fmt: skip

DPO_CONFIG = _TRL_TRAINER | frozenset(
    {
        "max_length", "truncation_mode", "padding_free", "precompute_ref_log_probs", "loss_weights", "ld_alpha",
        "f_divergence_type", "f_alpha_divergence_coef", "label_smoothing", "use_weighting", "discopop_tau",
        "pad_token",
    }
)  # fmt: skip

GRPO_CONFIG = _TRL_TRAINER | frozenset(
    {
        # sampling
        "num_generations", "max_completion_length", "shuffle_dataset", "generation_batch_size",
        "steps_per_generation", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs",
        "chat_template_kwargs", "cast_lm_head_to_fp32", "use_vllm", "vllm_mode", "vllm_model_impl",
        "vllm_structured_outputs_regex", "use_transformers_paged", "use_transformers_continuous_batching",
        "max_tool_calling_iterations",
        # the loss
        "num_iterations", "epsilon", "delta", "epsilon_high", "sapo_temperature_neg", "sapo_temperature_pos",
        "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg", "importance_sampling_level",
        "reward_weights", "multi_objective_aggregation", "scale_rewards", "mask_truncated_completions",
        "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy", "entropy_coef_min", "entropy_coef_max",
        "entropy_coef_delta", "entropy_target", "vllm_importance_sampling_correction",
        "vllm_importance_sampling_mode", "vllm_importance_sampling_cap", "vllm_importance_sampling_clip_max",
        "vllm_importance_sampling_clip_min", "off_policy_mask_threshold", "use_bias_correction_kl",
    }
)  # fmt: skip

MODEL_CONFIG = frozenset(
    {
        "model_name_or_path", "model_revision", "dtype", "attn_implementation", "use_peft", "lora_r", "lora_alpha",
        "lora_dropout", "lora_target_modules", "lora_target_parameters", "lora_modules_to_save", "lora_task_type",
        "use_rslora", "use_dora", "load_in_8bit", "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant",
        "bnb_4bit_quant_storage",
    }
)  # fmt: skip

UPSTREAM_RESULT_FIELDS: dict[str, frozenset[str]] = {
    "transformers.TrainingArguments": TRAINING_ARGUMENTS,
    "trl.DPOConfig": DPO_CONFIG,
    "trl.GRPOConfig": GRPO_CONFIG,
    "trl.ModelConfig": MODEL_CONFIG,
}


def upstream_key(config_class: type) -> str:
    """How `UPSTREAM_RESULT_FIELDS` names a class: its top-level package and its name (`"trl.DPOConfig"`)."""
    return f"{config_class.__module__.split('.')[0]}.{config_class.__qualname__}"
