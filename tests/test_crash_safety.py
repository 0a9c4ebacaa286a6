"""Nothing half written survives: atomic writes that follow the umask, leftovers swept, checkpoints validated before
a resume picks one, and one run per output folder."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset

from rlaifv_trl.atomic_io import (
    TEMPORARY_SUFFIX,
    atomic_directory,
    atomic_write_text,
    remove_temporary_files,
    temporary_sibling,
)
from rlaifv_trl.run_lock import RunLock, RunLockedError
from rlaifv_trl.trainer.checkpoints import is_complete_checkpoint, last_complete_checkpoint


SRC = Path(__file__).parents[1] / "src"


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_atomic_writes_follow_the_umask(tmp_path, umask_027):
    atomic_write_text(tmp_path / "card.md", "hello")
    with atomic_directory(tmp_path / "data") as scratch:
        Dataset.from_dict({"a": [1, 2]}).save_to_disk(str(scratch))
    assert (tmp_path / "card.md").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o750
    assert all(path.stat().st_mode & 0o777 == 0o640 for path in (tmp_path / "data").iterdir())
    assert not list(tmp_path.glob(f"*{TEMPORARY_SUFFIX}"))


def test_a_failed_write_leaves_the_old_version_and_no_leftover(tmp_path):
    atomic_write_text(tmp_path / "card.md", "old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "card-folder"):
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        from rlaifv_trl.atomic_io import atomic_write

        with atomic_write(tmp_path / "card.md") as stream:
            stream.write("half of the n")
            raise RuntimeError("killed")
    assert (tmp_path / "card.md").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["card.md"]


def test_leftovers_of_killed_writers_are_swept(tmp_path):
    (tmp_path / "dataset").mkdir()
    leftovers = [temporary_sibling(tmp_path / "dataset" / "iteration-1"), temporary_sibling(tmp_path / "README.md")]
    leftovers[0].mkdir()
    (leftovers[0] / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    leftovers[1].write_text("---\n")
    kept = tmp_path / "dataset" / "notes.tmp"
    kept.write_text("not ours")
    assert sorted(remove_temporary_files(tmp_path)) == sorted(leftovers)
    assert not any(path.exists() for path in leftovers) and kept.exists()


HOLD = """
import sys, time
from rlaifv_trl.run_lock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_folder_is_locked_for_one_process_and_a_killed_holder_releases_it(tmp_path, caplog):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid} on "):
            RunLock(tmp_path).acquire()
        assert time.monotonic() - started < 5  # refused at once, not after a wait
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path):  # the kernel released the dead holder's lock: taken over at once
        assert "ended without releasing it" in caplog.text
    with RunLock(tmp_path):  # released cleanly: no warning this time
        pass


@pytest.mark.slow
def test_a_second_recipe_run_on_the_same_folder_exits_at_once(tmp_path, tiny_vlm_dir):
    from test_recipe import recipe_args, run_recipe_process

    argv = recipe_args(tiny_vlm_dir("llava"), tmp_path / "run", "--prompts_per_iteration", "400")  # a long run
    owner = tmp_path / "run" / ".lock.owner.json"

    def start_and_wait_for_the_lock():
        process = run_recipe_process(argv)
        deadline = time.monotonic() + 300
        while f'"pid": {process.pid}' not in (owner.read_text() if owner.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, "the run did not take the lock"
            time.sleep(0.05)
        return process

    first = start_and_wait_for_the_lock()
    try:
        second = run_recipe_process(argv)
        output, _ = second.communicate(timeout=120)
        assert second.returncode != 0 and first.poll() is None
        assert f"in use by process {first.pid}" in output and "use another output_dir" in output
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    third = start_and_wait_for_the_lock()  # the killed run's lock is taken over at once
    os.killpg(third.pid, signal.SIGKILL)
    output, _ = third.communicate()
    assert f"from process {first.pid}" in output and "ended without releasing it" in output


@pytest.fixture(scope="module")
def checkpoint(tiny_vlm_dirs, tmp_path_factory):
    """A real checkpoint of `RLAIFVDPOTrainer`, with the order its files were written in."""
    from rlaifv_testbed import oracle_preference_dataset
    from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer

    output_dir = tmp_path_factory.mktemp("checkpoints")
    args = RLAIFVDPOConfig(
        output_dir=str(output_dir), use_cpu=True, report_to="none", per_device_train_batch_size=2, max_steps=2,
        save_strategy="steps", save_steps=1, disable_tqdm=True, max_length=256,
    )  # fmt: skip
    trainer = RLAIFVDPOTrainer(
        model=str(tiny_vlm_dirs["llava"]), args=args, train_dataset=oracle_preference_dataset(4)
    )
    trainer.train()
    folder = output_dir / "checkpoint-2"
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
    assert files[-1].name == "trainer_state.json"  # written last
    return folder, files


def test_a_checkpoint_is_complete_only_when_every_write_finished(checkpoint, tmp_path):
    folder, files = checkpoint
    assert is_complete_checkpoint(folder)
    for index, stopped_at in enumerate(files):  # a kill during the write of each file, in the order they were written
        for torn in (False, True):
            copy = tmp_path / f"{index}-{torn}" / folder.name
            copy.mkdir(parents=True)
            for written in files[:index]:
                target = copy / written.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(written, target)
            if torn:
                data = stopped_at.read_bytes()
                target = copy / stopped_at.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[: len(data) // 2])
            assert not is_complete_checkpoint(copy), (stopped_at.name, torn)


def test_resuming_picks_the_last_complete_checkpoint_and_removes_torn_ones(checkpoint, tmp_path):
    folder, files = checkpoint
    shutil.copytree(folder.parent / "checkpoint-1", tmp_path / "checkpoint-1")
    shutil.copytree(folder, tmp_path / "checkpoint-2")
    shutil.copytree(folder, tmp_path / "checkpoint-3")
    weights = tmp_path / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # torn at the end of the weights
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "log_hist')  # torn state
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    assert (tmp_path / "checkpoint-3").exists()
    assert last_complete_checkpoint(tmp_path, remove_incomplete=True) == str(tmp_path / "checkpoint-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]


def test_a_folder_of_an_earlier_release_is_not_resumed(tmp_path):
    from rlaifv_trl.manifest import Manifest

    (tmp_path / "run_state.json").write_text('{"settings": {}, "done": {}}')
    with pytest.raises(ValueError, match="earlier release"):
        Manifest.open(tmp_path, {"seed": 1})
    assert Manifest.open(tmp_path, {"seed": 1}, overwrite=True).restarted is False
