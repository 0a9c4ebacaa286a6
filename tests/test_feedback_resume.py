"""Nothing lost, scale out: a run killed with SIGKILL while labeling resumes to the same dataset, and two processes
under torchrun give the same dataset as one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_from_disk

from rlaifv_trl.atomic_io import temporary_sibling
from rlaifv_trl.feedback import RunReport


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out


SCRIPT = Path(__file__).parent / "scripts" / "feedback_run.py"
SRC = Path(__file__).resolve().parents[1] / "src"
RUN = ["--num-prompts", "8", "--num-candidates", "4", "--max-new-tokens", "24", "--shard-size", "2"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _command(policy: Path, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--policy", str(policy), "--output-dir", str(output_dir), *RUN, *extra]


def _results(output_dir: Path) -> tuple[list, list]:
    return load_from_disk(str(output_dir / "preference")).to_list(), load_from_disk(
        str(output_dir / "audit")
    ).to_list()


@pytest.fixture(scope="module")
def uninterrupted(tiny_vlm_dir, tmp_path_factory):
    policy = tiny_vlm_dir("llava")
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(policy, output_dir), env=_env(), check=True, timeout=300)
    preference, audit = _results(output_dir)
    assert preference and audit
    return policy, preference, audit


def test_killed_while_labeling_then_rerun_gives_the_same_dataset(uninterrupted, tmp_path):
    policy, preference, audit = uninterrupted
    output_dir, marker = tmp_path / "run", tmp_path / "marker"
    process = subprocess.Popen(
        _command(policy, output_dir, "--hang-at-label-shard", "2", "--marker", str(marker)), env=_env()
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, "the run ended before reaching the labeling stage"
            assert time.monotonic() < deadline, "the run did not reach the labeling stage in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # Killed in the middle of labeling: sampling and splitting are complete, labeling is half done, nothing merged.
    assert len(list((output_dir / "candidates").glob("shard-*.json"))) == 4
    assert len(list((output_dir / "claims").glob("shard-*.json"))) == 4
    assert sorted(p.name for p in (output_dir / "labels").glob("shard-*.json")) == [
        "shard-00000.json",
        "shard-00001.json",
    ]
    assert not (output_dir / "preference").exists()
    # What a writer killed in the middle of a write leaves behind: a hidden temporary file, never a shard.
    torn = temporary_sibling(output_dir / "labels" / "shard-00002.json")
    torn.write_text('{"records": [')
    stamps = {p: p.stat().st_mtime_ns for p in output_dir.glob("*/shard-*.json")}

    subprocess.run(_command(policy, output_dir), env=_env(), check=True, timeout=300)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # finished shards were not redone
    assert not torn.exists()
    assert _results(output_dir) == (preference, audit)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_same_dataset_as_one(uninterrupted, tmp_path):
    policy, preference, audit = uninterrupted
    output_dir = tmp_path / "two"
    command = _command(policy, output_dir)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(_free_port())]
    subprocess.run([*launcher, *command[1:]], env=_env(), check=True, timeout=300)
    assert RunReport.load(output_dir / "report.json").num_processes == 2
    for stage in ("candidates", "claims", "labels"):  # shard i ran on process i mod 2
        for path in sorted((output_dir / stage).glob("shard-*.json")):
            assert json.loads(path.read_text())["process_index"] == int(path.stem.split("-")[1]) % 2
    assert _results(output_dir) == (preference, audit)
