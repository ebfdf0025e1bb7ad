"""Checkpoints under faults: a run killed (SIGKILL) or out of disk at any point of a checkpoint write resumes with
``--resume_from_checkpoint latest`` to the uninterrupted run's exact weights; nothing in a checkpoint is unpickled;
a missing or corrupt RNG state stops the resume unless ``--ignore_rng_state``."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geo_models.testing.faults import pickle_executed, plant_pickles, run_training
from geo_models.training.checkpoints import CheckpointError, list_checkpoints, resolve_checkpoint

REPO = Path(__file__).resolve().parents[2]
FLOW = REPO / "train" / "train_flow.py"
TINY = [
    "--dim", "16", "--depth", "2", "--expansion", "2", "--train_batch_size", "16", "--learning_rate", "1e-3",
    "--lr_warmup_steps", "2", "--max_train_steps", "6", "--checkpointing_steps", "2", "--seed", "3",
    "--logging_steps", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def parquet(embedding_parquet):
    return embedding_parquet


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "network" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(parquet, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_training(FLOW, ["--train_data", parquet, "--output_dir", out, *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    return final_weights(out)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "fault,n",
    [
        ("kill_mid_file", 7),  # 5 state files per checkpoint: the second checkpoint's optimizer state, half written
        ("kill_before_manifest", 2),
        ("kill_before_rename", 2),
        ("disk_full", 8),
    ],
)
def test_fault_during_checkpoint_write_resumes_exactly(parquet, uninterrupted, tmp_path, fault, n):
    argv = ["--train_data", parquet, "--output_dir", tmp_path, *TINY]
    crashed = run_training(FLOW, argv, fault=fault, n=n)
    assert crashed.returncode != 0
    # the interrupted write left no checkpoint-4 folder that `latest` could pick: only a .partial one, never read
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert list(tmp_path.glob(".checkpoint-4.partial"))
    assert resolve_checkpoint(tmp_path, "latest")[1] == 2
    resumed = run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(final_weights(tmp_path), uninterrupted)
    assert not list(tmp_path.glob(".checkpoint-*")), "the stale partial folder is cleaned up by the next save"


LONG = [*TINY, "--max_train_steps", "40", "--checkpointing_steps", "1"]  # ~1 s of training, a checkpoint per step


def test_kill_at_random_times_resumes_exactly(parquet, tmp_path):
    """SIGKILL at random times while training (a checkpoint per step, so kills land in writes too), resume with the
    same command, again and again: the final weights are the uninterrupted run's."""
    argv = ["--train_data", parquet, "--output_dir", tmp_path / "killed", *LONG]
    reference = run_training(FLOW, ["--train_data", parquet, "--output_dir", tmp_path / "ref", *LONG])
    assert reference.returncode == 0, reference.stderr[-3000:]
    rng, killed = random.Random(0), 0
    for _ in range(2):
        result = run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"], kill_after_s=rng.uniform(0, 0.6))
        killed += result.returncode == -9
    assert killed >= 1, "no kill landed during training: the run is shorter than the kill times"
    resumed = run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(final_weights(tmp_path / "killed"), final_weights(tmp_path / "ref"))


def test_incomplete_checkpoints_are_skipped_with_a_warning(tmp_path, caplog):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model_0.safetensors").write_bytes(b"x" * 10)
    files = {"model_0.safetensors": {"bytes": 10, "sha256": "0"}}
    manifest = {"format": "geo_models-checkpoint-1", "step": 2, "num_processes": 1, "files": files}
    (tmp_path / "checkpoint-2" / "checkpoint.json").write_text(json.dumps(manifest))
    files4 = {"model_0.safetensors": {"bytes": 11, "sha256": "0"}}  # truncated after the manifest: refused too
    (tmp_path / "checkpoint-4" / "checkpoint.json").write_text(json.dumps({**manifest, "files": files4}))
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint(tmp_path, "latest") == (tmp_path / "checkpoint-2", 2)
    assert "checkpoint-6" in caplog.text and "checkpoint-4" in caplog.text and "interrupted" in caplog.text
    with pytest.raises(CheckpointError, match="checkpoint-6 cannot be resumed from"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-6"))
    shutil.rmtree(tmp_path / "checkpoint-2")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints"):
        resolve_checkpoint(tmp_path, "latest")


@pytest.fixture(scope="module")
def checkpointed_run(parquet, tmp_path_factory):
    """A finished run with checkpoints 2, 4 and 6."""
    out = tmp_path_factory.mktemp("checkpointed")
    result = run_training(FLOW, ["--train_data", parquet, "--output_dir", out, *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_run_until(run: Path, step: int, dest: Path) -> Path:
    """``dest`` holding only ``run``'s checkpoint at ``step`` (a run killed right after it)."""
    shutil.copytree(run / f"checkpoint-{step}", dest / f"checkpoint-{step}")
    return dest


def test_planted_pickles_are_never_executed(parquet, checkpointed_run, uninterrupted, tmp_path):
    out = copy_run_until(checkpointed_run, 4, tmp_path / "run")
    marker = tmp_path / "PWNED"
    plant_pickles(out / "checkpoint-4", marker)  # beside our files, under accelerate's and torch's names
    argv = ["--train_data", parquet, "--output_dir", out, *TINY, "--resume_from_checkpoint", "latest"]
    resumed = run_training(FLOW, argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not pickle_executed(marker)
    assert same_weights(final_weights(out), uninterrupted)
    # a checkpoint folder of pickles only (accelerate's save_state): refused, nothing run
    legacy = tmp_path / "legacy"
    plant_pickles(legacy / "checkpoint-2", marker)
    refused = run_training(FLOW, [*argv[:3], str(legacy), *argv[4:]])
    assert refused.returncode != 0 and "save_state (pickles)" in refused.stderr
    assert not pickle_executed(marker)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_rng_state_is_an_error_unless_ignored(parquet, checkpointed_run, uninterrupted, tmp_path, damage):
    out = copy_run_until(checkpointed_run, 4, tmp_path / "run")
    rng = out / "checkpoint-4" / "rng_state_0.safetensors"
    if damage == "missing":
        rng.unlink()
    else:
        data = bytearray(rng.read_bytes())
        data[-3] ^= 0xFF  # one flipped byte inside the torch RNG state: same size, other hash
        rng.write_bytes(bytes(data))
    argv = ["--train_data", parquet, "--output_dir", out, *TINY]
    # `latest` skips a checkpoint with a missing file (a cheap size check); name the folder to see the RNG error
    refused = run_training(FLOW, [*argv, "--resume_from_checkpoint", out / "checkpoint-4"])
    assert refused.returncode != 0
    assert "rng_state_0.safetensors" in refused.stderr and "--ignore_rng_state" in refused.stderr
    ignored = run_training(FLOW, [*argv, "--resume_from_checkpoint", out / "checkpoint-4", "--ignore_rng_state"])
    assert ignored.returncode == 0, ignored.stderr[-3000:]
    assert "resuming without RNG states" in ignored.stderr


# Every point of every checkpoint write of the TINY run (3 checkpoints x 5 state files; 3 manifests; 3 renames).
SWEEP = (
    [("kill_mid_file", n) for n in range(1, 16)]
    + [("disk_full", n) for n in range(1, 16)]
    + [("kill_before_manifest", n) for n in range(1, 4)]
    + [("kill_before_rename", n) for n in range(1, 4)]
)


@pytest.mark.slow
@pytest.mark.parametrize("fault,n", SWEEP)
def test_fault_sweep_resumes_exactly(parquet, uninterrupted, tmp_path, fault, n):
    argv = ["--train_data", parquet, "--output_dir", tmp_path, *TINY]
    assert run_training(FLOW, argv, fault=fault, n=n).returncode != 0
    resumed = run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(final_weights(tmp_path), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_random_kill_sweep_resumes_exactly(parquet, tmp_path, seed):
    """Like test_kill_at_random_times_resumes_exactly, 10 more random schedules of 3 kills each."""
    argv = ["--train_data", parquet, "--output_dir", tmp_path / "killed", *LONG]
    reference = run_training(FLOW, ["--train_data", parquet, "--output_dir", tmp_path / "ref", *LONG])
    assert reference.returncode == 0, reference.stderr[-3000:]
    rng = random.Random(100 + seed)
    for _ in range(3):
        run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"], kill_after_s=rng.uniform(0, 0.8))
    resumed = run_training(FLOW, [*argv, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(final_weights(tmp_path / "killed"), final_weights(tmp_path / "ref"))
