"""RLAIFVDPOTrainer in two processes on CPU (`torchrun --nproc_per_node 2`, gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import oracle_preference_dataset
from rlaifv_trl import precompute_ref_log_probs


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out


SCRIPT = Path(__file__).parent / "scripts" / "rlaifv_dpo_two_processes.py"


@pytest.mark.usefixtures("one_torch_thread")
def test_two_processes_share_the_reference_pass_and_train_in_step(tiny_vlm_dirs, tmp_path):
    model_dir, report_path = tiny_vlm_dirs["llava_policy"], tmp_path / "report.json"
    src = str(Path(__file__).parents[1] / "src")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*command, str(SCRIPT), str(model_dir), str(report_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["world_size"] == 2
    # 5 rows: 3 for the first process, 2 + 1 padding row for the second, so both run the same number of batches
    assert sorted(p["rows_seen"] for p in report["processes"]) == [3, 3]
    checksums = [p["checksum"] for p in report["processes"]]
    assert checksums[0] == checksums[1]  # DDP kept the two copies of the model identical

    expected = precompute_ref_log_probs(
        AutoModelForImageTextToText.from_pretrained(model_dir),
        AutoProcessor.from_pretrained(model_dir),
        oracle_preference_dataset(5),
    )
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(torch.tensor(report[column]), torch.tensor(expected[column]), atol=1e-4, rtol=0)
    steps = [log for log in report["log_history"] if "loss" in log]
    assert len(steps) == 2 and all("length_normalized_rewards/accuracies" in log for log in steps)
