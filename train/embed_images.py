#!/usr/bin/env python
"""Embed an imagefolder with an open_clip image tower into a sharded embedding parquet dataset.

    python train/embed_images.py --train_data photos/ --output_dir emb/ --model_name ViT-L-14 --pretrained openai
    accelerate launch --multi_gpu --num_processes 2 train/embed_images.py ...  # disjoint shards per process
    (on a machine without GPU the same command runs 2 CPU processes with gloo)

Input: an imagefolder with `metadata.csv` or `metadata.jsonl` (`file_name`, `latitude`, `longitude`, optional `text`).
Output: `part-00000.parquet`, ... (`shard_size` rows each, in metadata order) with columns `embedding`
(list<float32>, D), `latitude`, `longitude` (float64, degrees), `file_name` (+ `text` if present), and
`embedding_info.json` (model, pretrained tag, dim, count). Embeddings are `model.encode_image(x)`: the backbone's
projected image features, before any trainable head and NOT L2-normalised.
Resumable: shards already written (same file names) are skipped; shards are written atomically (temp + rename).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from geo_models.data.embeddings import write_embedding_parquet
from geo_models.data.imagefolder import read_imagefolder_metadata
from geo_models.encoders.image import register_open_clip_configs, resolve_pretrained
from geo_models.io import write_json_atomic
from geo_models.training import make_accelerator

INFO_NAME = "embedding_info.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train_data", required=True, help="imagefolder with metadata.csv / metadata.jsonl")
    p.add_argument("--output_dir", required=True, help="folder for part-XXXXX.parquet shards")
    p.add_argument("--model_name", default="ViT-L-14", help="open_clip model name (or a tiny test model: tiny-vit)")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag (e.g. openai) or local weights file")
    p.add_argument("--allow_random_weights", action="store_true", help="allow --pretrained unset (tests only)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--shard_size", type=int, default=10000, help="rows per parquet shard")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--seed", type=int, default=0, help="seed (only matters for random weights)")
    args = p.parse_args(argv)
    if args.pretrained is None and not args.allow_random_weights:
        p.error(
            "--pretrained is required (e.g. --pretrained openai or a weights file); random weights need "
            "--allow_random_weights"
        )
    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.num_workers < 0:
        p.error("--num_workers must be >= 0")
    return args


class _Images(Dataset):
    def __init__(self, root: Path, files: list[str], transform):
        self.root, self.files, self.transform = root, files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.root / self.files[i]) as im:
            return self.transform(im.convert("RGB"))


def shard_path(output_dir: str | os.PathLike, k: int) -> Path:
    return Path(output_dir) / f"part-{k:05d}.parquet"


def _shard_done(path: Path, files: list[str]) -> bool:
    """A shard is done when it exists and holds exactly these file names in this order."""
    if not path.is_file():
        return False
    try:
        return pq.read_table(path, columns=["file_name"]).column("file_name").to_pylist() == files
    except Exception:  # unreadable / partial file from elsewhere: recompute it
        return False


def _run_config(args: argparse.Namespace) -> dict:
    """What must not change between a run and its resumption (the image list may grow or shrink)."""
    cfg = {"model_name": args.model_name, "pretrained": args.pretrained, "shard_size": args.shard_size}
    if args.pretrained is None:
        cfg["seed"] = args.seed
    return cfg


def main(argv=None) -> None:
    from accelerate.utils import set_seed

    args = parse_args(argv)
    accelerator = make_accelerator()
    set_seed(args.seed)  # identical random weights on every process
    register_open_clip_configs()

    root, out = Path(args.train_data), Path(args.output_dir)
    meta = read_imagefolder_metadata(root).reset_index(drop=True)  # validated: columns, lat/lon range, files exist
    n = len(meta)
    if n == 0:
        raise ValueError(f"train_data {str(root)!r}: the metadata has no rows")
    files = meta["file_name"].tolist()
    num_shards = math.ceil(n / args.shard_size)
    cfg = _run_config(args)
    info_path = out / INFO_NAME
    if info_path.is_file():  # every process checks, so all fail together
        old = json.loads(info_path.read_text())
        diff = {k: (old.get(k), v) for k, v in cfg.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"output_dir {str(out)!r} holds embeddings of another run {diff}; use a new output_dir")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(info_path, {**cfg, "count": n, "complete": False})
        for stale in sorted(out.glob("part-*.parquet")):  # the image list shrank since an earlier run
            if stale.name > shard_path(out, num_shards - 1).name:
                accelerator.print(f"removing stale shard {stale}")
                stale.unlink()

    def rows(k):
        return range(k * args.shard_size, min(n, (k + 1) * args.shard_size))

    mine = range(accelerator.process_index, num_shards, accelerator.num_processes)
    todo = [k for k in mine if not _shard_done(shard_path(out, k), [files[i] for i in rows(k)])]
    print(f"{n} images, {num_shards} shards; process {accelerator.process_index}: {len(todo)} to embed", flush=True)

    if todo:
        import open_clip

        weights = resolve_pretrained(args.model_name, args.pretrained)  # shipped tags such as 'procedural' too
        model, _, preprocess = open_clip.create_model_and_transforms(args.model_name, pretrained=weights)
        model = model.to(accelerator.device).eval()
        progress = tqdm(
            total=sum(len(rows(k)) for k in todo), desc="embedding", disable=not accelerator.is_local_main_process
        )
        for k in todo:
            idx = list(rows(k))
            shard_files = [files[i] for i in idx]
            loader = DataLoader(
                _Images(root, shard_files, preprocess), batch_size=args.batch_size, num_workers=args.num_workers
            )
            feats = []
            with torch.no_grad(), accelerator.autocast():
                for pixels in loader:
                    feats.append(model.encode_image(pixels.to(accelerator.device)).float().cpu())  # (B, D)
                    progress.update(len(pixels))
            part = meta.iloc[idx]
            extra = {"text": part["text"].fillna("").astype(str).tolist()} if "text" in part else None
            write_embedding_parquet(
                shard_path(out, k),
                torch.cat(feats),
                part[["latitude", "longitude"]].to_numpy(dtype="float64"),
                extra_columns=extra,
                file_name=shard_files,
            )
        progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        count, dim = 0, None
        for k in range(num_shards):
            f = pq.ParquetFile(shard_path(out, k))
            count += f.metadata.num_rows
            if dim is None and f.metadata.num_rows:
                dim = len(f.read_row_group(0, columns=["embedding"]).column(0)[0])
        if count != n:
            raise RuntimeError(f"wrote {count} rows for {n} images")
        write_json_atomic(
            info_path,
            {**cfg, "count": n, "dim": dim, "normalized": False, "features": "encode_image", "complete": True},
        )
        accelerator.print(f"wrote {count} embeddings of dim {dim} to {out}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
