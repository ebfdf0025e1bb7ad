"""Turn a folder of geotagged photos into a geotagged imagefolder (``metadata.csv``: file_name, latitude, longitude).

Photos with EXIF GPS are copied (or linked) under ``OUTPUT_DIR/images/`` keeping their relative paths; photos without
GPS, with invalid GPS, or unreadable, are listed in ``OUTPUT_DIR/report.csv`` with the reason. Originals are never
modified.

Example:
    python train/prepare_photos.py --input_dir ~/Pictures/trip --output_dir data/trip
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from geo_models.data.exif import ExifGPSError, read_gps
from geo_models.data.imagefolder import write_imagefolder_metadata

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_dir", required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--output_dir", required=True, help="imagefolder to create (must not be inside input_dir)")
    parser.add_argument("--link", choices=["copy", "hardlink", "symlink"], default="copy", help="how images get there")
    parser.add_argument(
        "--max_size",
        type=int,
        default=None,
        help="re-encode images whose longest side exceeds this (JPEG, EXIF-rotated)",
    )
    parser.add_argument(
        "--keep_null_island", action="store_true", help="keep (0, 0) fixes (usually a camera without a GPS fix)"
    )
    args = parser.parse_args(argv)
    if args.max_size is not None and args.max_size < 16:
        parser.error(f"--max_size must be >= 16, got {args.max_size}")
    input_dir, output_dir = Path(args.input_dir).resolve(), Path(args.output_dir).resolve()
    if not input_dir.is_dir():
        parser.error(f"--input_dir {args.input_dir} is not a folder")
    if output_dir == input_dir or input_dir in output_dir.parents:
        parser.error("--output_dir must not be --input_dir or inside it (originals are never touched)")
    return args


def _place(src: Path, dst: Path, args: argparse.Namespace) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if args.max_size:
        with Image.open(src) as img:
            if max(img.size) > args.max_size:
                img = ImageOps.exif_transpose(img).convert("RGB")
                img.thumbnail((args.max_size, args.max_size))
                dst = dst.with_suffix(".jpg")
                img.save(dst, quality=92)
                return dst
    if args.link == "hardlink":
        os.link(src, dst)
    elif args.link == "symlink":
        dst.symlink_to(src)
    else:
        shutil.copy2(src, dst)
    return dst


def main(argv=None) -> dict[str, int]:
    args = parse_args(argv)
    input_dir, output_dir = Path(args.input_dir).resolve(), Path(args.output_dir).resolve()
    files = sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for path in tqdm(files, desc="reading EXIF GPS", unit="photo"):
        rel = path.relative_to(input_dir)
        try:
            gps = read_gps(path)
        except ExifGPSError as err:
            skipped.append((str(rel), "invalid_gps", str(err)))
            continue
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            skipped.append((str(rel), "unreadable", f"{type(err).__name__}: {err}"))
            continue
        if gps is None:
            skipped.append((str(rel), "no_gps", "no GPS latitude/longitude in EXIF"))
            continue
        if gps == (0.0, 0.0) and not args.keep_null_island:
            skipped.append((str(rel), "null_island", "GPS is exactly (0, 0); use --keep_null_island to keep"))
            continue
        dst = _place(path, output_dir / "images" / rel, args)
        rows.append({"file_name": dst.relative_to(output_dir).as_posix(), "latitude": gps[0], "longitude": gps[1]})
    write_imagefolder_metadata(output_dir, pd.DataFrame(rows, columns=["file_name", "latitude", "longitude"]))
    with open(output_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reason", "detail"])
        writer.writerows(skipped)
    summary = {"found": len(files), "kept": len(rows), "skipped": len(skipped)}
    print(f"{summary['kept']} of {summary['found']} photos have GPS -> {output_dir / 'metadata.csv'}")
    if skipped:
        print(f"{len(skipped)} skipped (reasons in {output_dir / 'report.csv'})")
    return summary


if __name__ == "__main__":
    main()
