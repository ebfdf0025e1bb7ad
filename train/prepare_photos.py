"""Turn a folder of geotagged photos into a geotagged imagefolder (``metadata.csv``: file_name, latitude, longitude).

Photos with EXIF GPS are copied (or linked) under ``OUTPUT_DIR/images/`` keeping their relative paths; photos
without GPS, with invalid GPS, unreadable, corrupt (e.g. truncated), too large (Pillow's decompression-bomb limit),
or symlinks to files outside ``--input_dir`` are listed in ``OUTPUT_DIR/report.csv`` with the reason, and the run
goes on. Originals are never modified. Two photos never share an output name (``x.png`` and ``x.jpg`` re-encoded by
``--max_size`` become ``x.jpg`` and ``x-1.jpg``), and names a spreadsheet would run as a formula (``=...``,
``+...``, ``-...``, ``@...``) get a leading ``_`` in ``images/`` and a leading ``'`` in report.csv. metadata.csv and
report.csv are written atomically.

Example:
    python train/prepare_photos.py --input_dir ~/Pictures/trip --output_dir data/trip
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import warnings
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


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets evaluate (OWASP "CSV injection")


def _safe_part(name: str) -> str:
    return "_" + name if name.startswith(FORMULA_PREFIXES) else name


def _report_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _destination(rel: Path, suffix: str | None, taken: set[str]) -> Path:
    """``images/<rel>`` with formula-safe parts and ``suffix`` (None: keep), unique among ``taken`` (compared
    case-insensitively, as on macOS/Windows file systems): ``x.jpg``, then ``x-1.jpg``, ..."""
    rel = Path(*[_safe_part(p) for p in rel.parts])
    if suffix is not None:
        rel = rel.with_suffix(suffix)
    candidate, i = rel, 0
    while candidate.as_posix().lower() in taken:
        i += 1
        candidate = rel.with_name(f"{rel.stem}-{i}{rel.suffix}")
    taken.add(candidate.as_posix().lower())
    return Path("images") / candidate


def _check_photo(path: Path, input_dir: Path) -> tuple[float, float] | None:
    """GPS of ``path`` after checking that it lies in ``input_dir`` and decodes completely. Raises ``_Skip``."""
    if input_dir not in path.resolve().parents:
        raise _Skip("outside_input", f"a symlink to {path.resolve()}, outside --input_dir: not followed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            gps = read_gps(path)
            if gps is None:
                return None
            try:
                with Image.open(path) as img:
                    img.load()  # the whole image: a truncated file can carry intact EXIF in its header
            except (OSError, SyntaxError, ValueError) as err:
                raise _Skip("corrupt", f"image data: {type(err).__name__}: {err}") from err
    except Image.DecompressionBombError as err:
        raise _Skip("too_large", str(err)) from err
    except ExifGPSError as err:
        raise _Skip("invalid_gps", str(err)) from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, MemoryError) as err:
        raise _Skip("unreadable", f"{type(err).__name__}: {err}") from err
    return gps


class _Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _place(src: Path, output_dir: Path, rel: Path, taken: set[str], args: argparse.Namespace) -> Path:
    """Copy/link (or re-encode, ``--max_size``) ``src`` to a fresh name under ``output_dir/images``."""
    if args.max_size:
        with Image.open(src) as img:
            if max(img.size) > args.max_size:
                img = ImageOps.exif_transpose(img).convert("RGB")
                img.thumbnail((args.max_size, args.max_size))
                dst = output_dir / _destination(rel, ".jpg", taken)
                dst.parent.mkdir(parents=True, exist_ok=True)
                img.save(dst, quality=92)
                return dst
    dst = output_dir / _destination(rel, None, taken)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if args.link == "hardlink":
        os.link(src, dst)
    elif args.link == "symlink":
        dst.symlink_to(src)
    else:
        shutil.copy2(src, dst)
    return dst


def _list_photos(input_dir: Path) -> list[Path]:
    """Image files under ``input_dir`` (symlinked folders are not entered; file symlinks are listed and checked)."""
    found = []
    for folder, dirs, names in os.walk(input_dir):
        dirs.sort()
        found += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(p for p in found if p.is_file() or p.is_symlink())


def main(argv=None) -> dict[str, int]:
    args = parse_args(argv)
    input_dir, output_dir = Path(args.input_dir).resolve(), Path(args.output_dir).resolve()
    files = _list_photos(input_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rows, skipped, taken = [], [], set()
    for path in tqdm(files, desc="reading EXIF GPS", unit="photo"):
        rel = path.relative_to(input_dir)
        try:
            gps = _check_photo(path, input_dir)
            if gps is None:
                raise _Skip("no_gps", "no GPS latitude/longitude in EXIF")
            if gps == (0.0, 0.0) and not args.keep_null_island:
                raise _Skip("null_island", "GPS is exactly (0, 0); use --keep_null_island to keep")
            dst = _place(path, output_dir, rel, taken, args)
        except _Skip as skip:
            skipped.append((rel.as_posix(), skip.reason, skip.detail))
            continue
        except Exception as err:  # one bad photo (a failed copy, a full disk) is reported; the run goes on
            skipped.append((rel.as_posix(), "failed", f"{type(err).__name__}: {err}"))
            continue
        rows.append({"file_name": dst.relative_to(output_dir).as_posix(), "latitude": gps[0], "longitude": gps[1]})
    frame = pd.DataFrame(rows, columns=["file_name", "latitude", "longitude"])
    write_imagefolder_metadata(output_dir, frame)
    tmp = output_dir / f".report.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reason", "detail"])
        writer.writerows([[_report_cell(str(v)) for v in row] for row in skipped])
    os.replace(tmp, output_dir / "report.csv")
    summary = {"found": len(files), "kept": len(rows), "skipped": len(skipped)}
    print(f"{summary['kept']} of {summary['found']} photos have GPS -> {output_dir / 'metadata.csv'}")
    if skipped:
        print(f"{len(skipped)} skipped (reasons in {output_dir / 'report.csv'})")
    return summary


if __name__ == "__main__":
    main()
