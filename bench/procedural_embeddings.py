"""Shared set-up of the learning benchmarks: procedural world images embedded with a frozen backbone.

Train and test sets use different seeds; everything is cached in ``data_dir`` so several benchmarks reuse it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from geo_models.data.procedural import generate_world

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A ``train/`` script as a module (its ``main(argv)`` runs it in this process), imported by name from train/."""
    if str(REPO / "train") not in sys.path:
        sys.path.insert(0, str(REPO / "train"))
    return importlib.import_module(name)


def world_embeddings(
    data_dir: Path,
    *,
    num_train: int = 20000,
    num_test: int = 2000,
    backbone: str = "procedural-clip",
    pretrained: str | None = "procedural",
    landmark_fraction: float = 0.0,
    num_val: int = 0,
) -> dict[str, Path]:
    """Paths ``train``/``test`` (embedding parquet folders) and ``train_images``/``test_images`` (imagefolders);
    with ``num_val > 0`` also ``val``/``val_images`` (a third seed: held-out data to fit or select on).

    ``pretrained=None`` or ``"none"``: the backbone's architecture with random weights (seed 0), i.e. features that
    were never trained on geography. ``landmark_fraction > 0``: that fraction of the photos are taken at the fixed
    landmark sites of ``generate_world`` (exact repeat locations), cached under ``world_lm{percent}_...``.
    """
    embed = load_script("embed_images")
    random_weights = not pretrained or pretrained.lower() == "none"
    weights = ["--allow_random_weights"] if random_weights else ["--pretrained", pretrained]
    features = f"{backbone}-random" if random_weights else backbone
    out = {}
    splits = [("train", num_train, 0), ("test", num_test, 1)] + ([("val", num_val, 2)] if num_val else [])
    for split, n, seed in splits:
        world = f"world_lm{round(landmark_fraction * 100)}" if landmark_fraction else "world"
        images, emb = data_dir / f"{world}_{split}_{n}", data_dir / f"{world}_{split}_{n}_{features}"
        if not (images / "metadata.csv").exists():
            generate_world(images, n, seed=seed, landmark_fraction=landmark_fraction)
        embed.main(
            [
                "--train_data",
                str(images),
                "--output_dir",
                str(emb),
                "--model_name",
                backbone,
                *weights,
                "--batch_size",
                "256",
            ]
        )  # fmt: skip (resumable: a no-op when the shards exist)
        out[split], out[f"{split}_images"] = emb, images
    return out


def markdown_table(results: dict[str, dict[str, float]], columns: list[str]) -> str:
    """``| method | col... |`` rows of metric dicts, one decimal."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{m[c]:.1f}" for c in columns) + " |" for name, m in results.items()]
    return "\n".join(lines)
