"""Fault injection for the reliability suite (``tests/reliability``) and ``bench/bench_reliability.py``.

- :func:`run_training` runs a ``train/`` script in a fresh interpreter, optionally with a fault armed inside it:
  ``kill`` (SIGKILL of itself) at the n-th file written into a checkpoint, after the n-th checkpoint's files but
  before its manifest, or right before the n-th checkpoint's rename; ``disk_full`` (``OSError(ENOSPC)`` at the n-th
  checkpoint file); or ``SIGKILL`` ``kill_after_s`` seconds after ``main()`` started (a timer thread inside the
  process, so start-up time does not blur where the kill lands).
- :func:`plant_pickles` writes files that run code when unpickled (they create a marker file), under every name a
  loader or resume path might pick up; :func:`pickle_executed` tells whether any ran.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

__all__ = ["FAULTS", "pickle_executed", "plant_pickles", "run_training"]

# fault name -> what it does (the ``n`` of run_training counts calls of the patched function)
FAULTS = {
    "kill_mid_file": "SIGKILL after the n-th checkpoint file is half written",
    "kill_before_manifest": "SIGKILL after the n-th checkpoint's files, before its checkpoint.json",
    "kill_before_rename": "SIGKILL after the n-th checkpoint's checkpoint.json, before the rename",
    "disk_full": "OSError(ENOSPC) when writing the n-th checkpoint file",
}

_RUNNER = textwrap.dedent(
    """
    import errno, importlib, json, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import geo_models.training.checkpoints as ck
    import geo_models.training.state_tree as st

    script, fault, n, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    kill_after_s = float(sys.argv[5])
    calls = {"n": 0}

    def hit():
        calls["n"] += 1
        return calls["n"] == n

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if fault in ("kill_mid_file", "disk_full"):
        save_tree = st.save_tree

        def faulty_save_tree(tree, stem):
            if hit():
                if fault == "disk_full":
                    raise OSError(errno.ENOSPC, "No space left on device (injected)")
                files = save_tree(tree, stem)
                with open(files[0], "r+b") as f:
                    f.truncate(max(1, os.path.getsize(files[0]) // 2))
                die()
            return save_tree(tree, stem)

        ck.save_tree = faulty_save_tree
    elif fault == "kill_before_manifest":
        sha = ck._sha256

        def faulty_sha(path):
            if path.name.startswith("model_0.") and path.suffix == ".json" and hit():
                die()
            return sha(path)

        ck._sha256 = faulty_sha
    elif fault == "kill_before_rename":
        replace = os.replace

        def faulty_replace(src, dst):
            if str(src).endswith(".partial") and hit():
                die()
            return replace(src, dst)

        ck.os.replace = faulty_replace
    sys.path.insert(0, str(Path(script).resolve().parent))  # as `python train/x.py` would: its folder first
    module = importlib.import_module(Path(script).stem)
    if kill_after_s >= 0:
        import threading, time

        def timer():
            time.sleep(kill_after_s)
            die()

        threading.Thread(target=timer, daemon=True).start()
    module.main(argv)
    """
)


def run_training(
    script: str | os.PathLike,
    argv: list[str],
    *,
    fault: str | None = None,
    n: int = 1,
    kill_after_s: float | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``script``'s ``main(argv)`` in a new interpreter (one thread); returns the finished process.

    Args:
        fault: one of :data:`FAULTS`, armed for the ``n``-th matching call; None: no fault inside.
        kill_after_s: SIGKILL the process this many seconds after ``main()`` started, if it is still running.
    """
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"fault must be one of {sorted(FAULTS)} or None, got {fault!r}")
    delay = -1.0 if kill_after_s is None else float(kill_after_s)
    args = [str(script), str(fault), str(n), json.dumps([str(a) for a in argv]), str(delay)]
    cmd = [sys.executable, "-c", _RUNNER, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: the marker's existence proves that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


# names a checkpoint or model folder may hold that some loader could unpickle (accelerate, transformers, diffusers,
# open_clip, torch)
PICKLE_NAMES = (
    "custom_checkpoint_0.pkl",
    "random_states_0.pkl",
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "sampler.bin",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
    "open_clip_pytorch_model.bin",
    "model.pt",
    "training_args.bin",
)


def plant_pickles(folder: str | os.PathLike, marker: str | os.PathLike, names=PICKLE_NAMES) -> list[Path]:
    """Write a code-running pickle under each of ``names`` in ``folder`` (both ``pickle`` and ``torch.save``
    framing: a plain pickle stream is what ``torch.load`` reads for legacy files). Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps({"state": _Payload(str(marker))}, protocol=2)
    written = []
    for name in names:
        path = folder / name
        path.write_bytes(payload)
        written.append(path)
    return written


def pickle_executed(marker: str | os.PathLike, *, wait_s: float = 0.0) -> bool:
    """Whether a planted pickle ran (its marker exists)."""
    deadline = time.monotonic() + wait_s
    while True:
        if Path(marker).exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
