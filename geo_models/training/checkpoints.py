"""Training checkpoints that survive ``kill -9`` and never unpickle: what ``--checkpointing_steps`` writes and
``--resume_from_checkpoint`` reads, in every ``train/`` script.

A checkpoint ``output_dir/checkpoint-<step>/`` holds what ``accelerator.save_state`` would (every prepared model,
optimizer and scheduler, the registered custom objects, the GradScaler, each process's RNG states and accelerate's
step counter), but as :mod:`geo_models.training.state_tree` files (safetensors + JSON), and it is *atomic*:

1. every process writes into ``output_dir/.checkpoint-<step>.partial/`` (the main process the shared state, each
   process its own ``rng_state_<rank>``), files flushed to disk;
2. the main process writes ``checkpoint.json`` last: the step, the number of processes, and every file's size
   and SHA-256;
3. the folder is renamed to ``checkpoint-<step>`` (an existing one of that step is replaced only then).

A crash or a full disk at any point leaves either the previous checkpoints untouched or a ``.partial`` folder
that nothing reads; ``latest`` is the newest folder with a valid ``checkpoint.json`` (a warning names any skipped).
Loading checks sizes and hashes before reading anything; a missing or corrupt RNG state is an error unless
``ignore_rng_state=True`` (``--ignore_rng_state``), because the resumed run would silently differ from an
uninterrupted one. Folders of accelerate's own ``save_state`` (pickles) are refused, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from geo_models.training.state_tree import load_tree, save_tree

__all__ = [
    "MANIFEST",
    "CheckpointError",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "resolve_checkpoint",
    "resume_state",
    "save_checkpoint",
    "trainable_state_dict",
]

MANIFEST = "checkpoint.json"
FORMAT = "geo_models-checkpoint-1"
LOOP = "geo_models.training-1"  # the state layout of geo_models.training.harness.fit (recorded in the manifest)
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: incomplete, corrupt, or of another run (message names the file)."""


# ------------------------------------------------------------------------------------------------ finding
def list_checkpoints(output_dir: str | os.PathLike, *, complete_only: bool = False) -> list[Path]:
    """``checkpoint-<step>`` folders of ``output_dir``, oldest first (``complete_only``: those with a manifest
    whose files are all present with their recorded sizes)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    found = sorted(found, key=lambda p: int(p.name.split("-")[-1]))
    return [p for p in found if _incomplete_reason(p) is None] if complete_only else found


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> tuple[Path | None, int]:
    """``(checkpoint folder, global step)`` for ``--resume_from_checkpoint`` (``latest`` or a path); (None, 0) if none.

    ``latest`` is the newest *complete* checkpoint; incomplete ones (a write interrupted by a crash or a full disk)
    are skipped with a warning naming them. If checkpoints exist but none is complete, that is an error rather than
    a silent start from scratch.
    """
    if not resume_from_checkpoint:
        return None, 0
    if resume_from_checkpoint == "latest":
        candidates = list_checkpoints(output_dir)
        for path in reversed(candidates):
            reason = _incomplete_reason(path)
            if reason is None:
                return path, _step_of(path)
            logger.warning("resume_from_checkpoint=latest: skipping %s (%s)", path, reason)
        if candidates:
            raise CheckpointError(
                f"resume_from_checkpoint=latest: none of the {len(candidates)} checkpoints in {output_dir} is "
                "complete (see the warnings above); pass one explicitly or start a new --output_dir"
            )
        return None, 0
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"resume_from_checkpoint: {path} is not a checkpoint folder")
    step = _step_of(path)
    reason = _incomplete_reason(path)
    if reason is not None:
        raise CheckpointError(f"resume_from_checkpoint: {path} cannot be resumed from ({reason})")
    return path, step


def _step_of(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError) as err:
        raise CheckpointError(f"resume_from_checkpoint: {path.name!r} is not named checkpoint-<step>") from err


def _read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        legacy = any(path.glob("*.pkl")) or any(path.glob("*.bin"))
        why = "written by accelerate's save_state (pickles), which is not loaded" if legacy else "an interrupted write"
        raise CheckpointError(f"no {MANIFEST}: {why}")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{manifest_path} is unreadable ({err})") from err
    return manifest


def _incomplete_reason(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (cheap: manifest and file sizes), or None. RNG states are checked
    when loading, where ``ignore_rng_state`` may waive them."""
    try:
        manifest = _read_manifest(path)
    except CheckpointError as err:
        return str(err)
    for name, entry in manifest["files"].items():
        if name.startswith("rng_state_"):
            continue
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry.get("bytes"):
            return f"{name} has {file.stat().st_size} bytes, {entry.get('bytes')} written"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ saving
def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``model.state_dict()`` that are trainable parameters (LoRA runs checkpoint only these: the
    frozen base is reloaded from its own files)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trainable}


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, keep: int | None = None, *, trainable_only: bool = False
) -> Path:
    """Write ``output_dir/checkpoint-<step>`` atomically (module docstring), then keep the newest ``keep`` complete
    checkpoints (None: all). Call it on every process (they synchronise); returns the folder.

    Args:
        trainable_only: save only the models' trainable parameters (LoRA: adapters + embedder).
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".checkpoint-{step}.partial"
    if accelerator.is_main_process:
        for stale in output_dir.glob(".checkpoint-*.partial"):  # left by a crash: never read, safe to drop
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    written: list[Path] = []
    if accelerator.is_main_process:
        for i, model in enumerate(accelerator._models):
            unwrapped = accelerator.unwrap_model(model)
            state = trainable_state_dict(unwrapped) if trainable_only else unwrapped.state_dict()
            written += save_tree(state, partial / f"model_{i}")
        for i, optimizer in enumerate(accelerator._optimizers):
            written += save_tree(optimizer.state_dict(), partial / f"optimizer_{i}")
        for i, scheduler in enumerate(accelerator._schedulers):
            written += save_tree(scheduler.state_dict(), partial / f"scheduler_{i}")
        for i, obj in enumerate(accelerator._custom_objects):
            written += save_tree(obj.state_dict(), partial / f"custom_{i}")
        if accelerator.scaler is not None:
            written += save_tree(accelerator.scaler.state_dict(), partial / "scaler")
    written += save_tree(_rng_state(accelerator), partial / f"rng_state_{accelerator.process_index}")
    for file in written:
        _fsync(file)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(partial.iterdir()) if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "loop": LOOP,
            "step": step,
            "num_processes": accelerator.num_processes,
            "trainable_only": trainable_only,
            "files": files,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _fsync(partial / MANIFEST)
        _fsync(partial)
        if final.exists():  # same step saved again (e.g. after a resume): swap only once the new one is complete
            old = output_dir / f".checkpoint-{step}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
        _fsync(output_dir)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (None keeps all), and incomplete ones older than the
    newest complete checkpoint (they can never be resumed from)."""
    if keep is None:
        return
    complete = list_checkpoints(output_dir, complete_only=True)
    kept = complete[-keep:] if keep > 0 else []
    newest = _step_of(kept[-1]) if kept else None
    for path in list_checkpoints(output_dir):
        if path in kept or (path not in complete and (newest is None or _step_of(path) > newest)):
            continue
        shutil.rmtree(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _rng_state(accelerator) -> dict:
    python = random.getstate()
    numpy = np.random.get_state()
    state = {
        "accelerator_step": int(accelerator.step),
        "python": python,
        "numpy": numpy,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


# ------------------------------------------------------------------------------------------------ loading
def load_checkpoint(
    accelerator, path: str | os.PathLike, *, trainable_only: bool = False, ignore_rng_state: bool = False
) -> None:
    """Restore a :func:`save_checkpoint` folder into the prepared objects of ``accelerator``.

    Every file is checked against the manifest (size and SHA-256) first; only ``json`` and ``safetensors`` read
    them. ``trainable_only``: the models' files must hold exactly their trainable parameters (loaded over the base).

    Raises:
        CheckpointError: incomplete or corrupt files, another number of models/optimizers/processes, weights that
            do not match the model; a missing/corrupt RNG state unless ``ignore_rng_state``.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    try:
        _restore(accelerator, path, manifest, trainable_only=trainable_only, ignore_rng_state=ignore_rng_state)
    except CheckpointError as err:
        if manifest.get("loop") == LOOP:
            raise
        raise CheckpointError(
            f"{err}. {path} was written before the shared training loop (geo_models.training, 2026-12-04): "
            "checkpoints of train_flow, train_locdiff, train_geoclip and train_gps_clip from then hold another "
            "state layout and do not resume (those of train_clip and the Stable Diffusion trainers do); start the "
            "run again"
        ) from err


def _restore(accelerator, path: Path, manifest: dict, *, trainable_only: bool, ignore_rng_state: bool) -> None:
    files = manifest["files"]
    rng_name = f"rng_state_{accelerator.process_index}"
    bad_rng = None
    for name, entry in files.items():
        file = path / name
        problem = None
        if not file.is_file():
            problem = "is missing"
        elif file.stat().st_size != entry.get("bytes") or _sha256(file) != entry.get("sha256"):
            problem = "does not match its recorded size and SHA-256 (corrupt)"
        if problem and name.startswith(rng_name + "."):
            bad_rng = f"{file} {problem}"
        elif problem:
            raise CheckpointError(f"resume_from_checkpoint: {file} {problem}")
    if manifest.get("num_processes") != accelerator.num_processes:
        written_by, now = manifest.get("num_processes"), accelerator.num_processes
        bad_rng = bad_rng or f"{path} was written by {written_by} processes, this run has {now}"
    if f"{rng_name}.json" not in files:
        bad_rng = bad_rng or f"{path / (rng_name + '.json')} is missing"
    if bad_rng and not ignore_rng_state:
        raise CheckpointError(
            f"resume_from_checkpoint: {bad_rng}; without this process's RNG states the resumed run would not match "
            "an uninterrupted one. Pass --ignore_rng_state (ignore_rng_state=True) to resume anyway."
        )
    device = accelerator.device
    for i, model in enumerate(accelerator._models):
        _load_model(accelerator.unwrap_model(model), path / f"model_{i}", files, trainable_only)
    for kind, objects in (
        ("optimizer", accelerator._optimizers),
        ("scheduler", accelerator._schedulers),
        ("custom", accelerator._custom_objects),
    ):
        for i, obj in enumerate(objects):
            obj.load_state_dict(_load_part(path / f"{kind}_{i}", files, device if kind == "custom" else "cpu"))
        extra = sum(1 for n in files if n.startswith(f"{kind}_") and n.endswith(".json")) - len(objects)
        if extra:
            raise CheckpointError(f"resume_from_checkpoint: {path} holds {extra} more {kind} state(s) than this run")
    if accelerator.scaler is not None and "scaler.json" in files:
        accelerator.scaler.load_state_dict(_load_part(path / "scaler", files))
    if bad_rng:
        logger.warning("resuming without RNG states (--ignore_rng_state): %s", bad_rng)
    else:
        _set_rng_state(accelerator, _load_part(path / rng_name, files))
    logger.info("resumed from %s (step %d)", path, manifest.get("step", -1))


def _load_part(stem: Path, files: dict, device="cpu"):
    if stem.name + ".json" not in files:
        raise CheckpointError(f"resume_from_checkpoint: {stem}.json is missing (another training setup?)")
    try:
        return load_tree(stem, device=device)
    except ValueError as err:
        raise CheckpointError(f"resume_from_checkpoint: {err}") from err


def _load_model(model: torch.nn.Module, stem: Path, files: dict, trainable_only: bool) -> None:
    state = _load_part(stem, files)
    if not isinstance(state, dict):
        raise CheckpointError(f"resume_from_checkpoint: {stem}.json is not a state dict")
    expected = set(trainable_state_dict(model)) if trainable_only else set(model.state_dict())
    if set(state) != expected:
        raise CheckpointError(
            f"resume_from_checkpoint: {stem}.safetensors does not hold this run's weights (missing "
            f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]}): another model, "
            "--finetune, --lora_rank or embedder?"
        )
    try:
        model.load_state_dict(state, strict=not trainable_only)
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(f"resume_from_checkpoint: {stem}.safetensors: {err}") from err


def _set_rng_state(accelerator, state: dict) -> None:
    accelerator.step = int(state["accelerator_step"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_state(
    accelerator,
    output_dir: str | os.PathLike,
    resume_from_checkpoint: str | None,
    *,
    trainable_only: bool = False,
    ignore_rng_state: bool = False,
) -> int:
    """Resolve ``--resume_from_checkpoint`` (``latest`` or a folder) and load it; returns the step to start from
    (0 when there is nothing to resume)."""
    checkpoint, start_step = resolve_checkpoint(output_dir, resume_from_checkpoint)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, trainable_only=trainable_only, ignore_rng_state=ignore_rng_state)
    return start_step
