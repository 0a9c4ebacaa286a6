"""RLAIFVDPOTrainer under `torchrun --nproc_per_node 2` on CPU: sharded reference log-probs, then DDP training.

    torchrun --standalone --nproc_per_node 2 tests/scripts/rlaifv_dpo_two_processes.py MODEL_DIR OUTPUT_JSON

Rank 0 writes OUTPUT_JSON: the reference columns, the rows each process ran, each process's final weights checksum
and the training logs.
"""

import json
import sys

import torch
import torch.distributed as dist
from accelerate.utils import gather
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer


def main(model_dir: str, output_json: str) -> None:
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    rows_seen = []  # rows this process runs through the model while computing the reference log-probs
    handle = model.register_forward_hook(lambda module, args, output: rows_seen.append(output.logits.shape[0] // 2))
    args = RLAIFVDPOConfig(
        output_dir=f"{output_json}.out",
        use_cpu=True,
        bf16=False,
        ddp_backend="gloo",
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,
        per_device_train_batch_size=1,
        precompute_ref_batch_size=2,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        disable_tqdm=True,
        precompute_ref_log_probs=True,
    )
    trainer = RLAIFVDPOTrainer(
        model=model,
        args=args,
        train_dataset=oracle_preference_dataset(5),
        processing_class=AutoProcessor.from_pretrained(model_dir),
    )
    handle.remove()
    trainer.train()
    checksum = sum(p.detach().double().sum().item() for p in trainer.model.parameters())
    mine = torch.tensor([[dist.get_rank(), sum(rows_seen), checksum]], dtype=torch.float64)
    results = [
        {"rank": int(rank), "rows_seen": int(rows), "checksum": value} for rank, rows, value in gather(mine).tolist()
    ]
    if trainer.accelerator.is_main_process:
        report = {
            "world_size": dist.get_world_size(),
            "processes": results,
            "ref_chosen_logps": list(trainer.train_dataset["ref_chosen_logps"]),
            "ref_rejected_logps": list(trainer.train_dataset["ref_rejected_logps"]),
            "log_history": trainer.state.log_history,
        }
        with open(output_json, "w") as f:
            json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
