"""prepare_photos on hostile folders: truncated files with intact GPS headers, decompression bombs, odd image modes,
odd names (formulas, commas, newlines, unicode), output-name clashes, symlinks out of the input, random byte damage.
Every bad file is reported with a reason, the run goes on, and every kept file decodes completely."""

import csv
import io
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from geo_models.data.exif import gps_exif


@pytest.fixture
def prepare(train_script):
    module = train_script("prepare_photos")

    def run(src: Path, out: Path, *extra: str):
        summary = module.main(["--input_dir", str(src), "--output_dir", str(out), *extra])
        meta = pd.read_csv(out / "metadata.csv", keep_default_na=False)
        with open(out / "report.csv", newline="") as f:
            report = {row["file"]: row for row in csv.DictReader(f)}
        return summary, meta, report

    return run


def jpeg_with_gps(lat=48.85, lon=2.35, size=(96, 64), mode="RGB", fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, format=fmt, exif=gps_exif(lat, lon))
    return buf.getvalue()


def assert_kept_files_decode(out: Path, meta: pd.DataFrame) -> None:
    for name in meta["file_name"]:
        with Image.open(out / name) as img:
            img.load()


def test_hostile_corpus(prepare, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good = jpeg_with_gps()
    (src / "good.jpg").write_bytes(good)
    for frac in (0.5, 0.8, 0.95):  # the EXIF header is intact, the scan is cut
        (src / f"cut_{int(frac * 100)}.jpg").write_bytes(good[: int(len(good) * frac)])
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_bytes(b"not an image at all")
    bomb = Image.new("1", (16000, 12000))  # 192 M pixels: over Pillow's 2 x 89 M error limit, a few kB on disk
    bomb.save(src / "bomb.png", exif=gps_exif(10.0, 10.0))
    odd_modes = [("CMYK", "JPEG", "cmyk.jpg"), ("L", "JPEG", "grey.jpg"), ("I;16", "PNG", "deep.png"),
                 ("LA", "PNG", "alpha.png"), ("P", "PNG", "palette.png"), ("1", "PNG", "bits.png")]  # fmt: skip
    for mode, fmt, name in odd_modes:
        (src / name).write_bytes(jpeg_with_gps(mode=mode, fmt=fmt))
    names = ["=HYPERLINK(1).jpg", "+cmd.jpg", "-2+3.jpg", "@SUM(A1).jpg"]
    names += ['a,b"c.jpg', "new\nline.jpg", "café 東京.jpg"]
    for name in names:
        (src / name).write_bytes(good)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg_with_gps(1.0, 1.0))
    (src / "link_out.jpg").symlink_to(outside)
    (src / "link_in.jpg").symlink_to(src / "good.jpg")

    summary, meta, report = prepare(src, out)
    assert summary["found"] == summary["kept"] + summary["skipped"] == 22
    reasons = {name: row["reason"] for name, row in report.items()}
    assert {reasons[f"cut_{p}.jpg"] for p in (50, 80, 95)} <= {"corrupt", "unreadable"}
    assert reasons["cut_95.jpg"] == "corrupt"  # GPS readable from the header, image data cut: was kept before
    assert reasons["empty.jpg"] == reasons["text.png"] == "unreadable"
    assert reasons["bomb.png"] == "too_large"
    assert reasons["link_out.jpg"] == "outside_input"
    kept = set(meta["file_name"])
    assert {"images/cmyk.jpg", "images/grey.jpg", "images/deep.png", "images/alpha.png", "images/palette.png",
            "images/bits.png", "images/good.jpg", "images/link_in.jpg"} <= kept  # fmt: skip
    # formula-like names get a leading "_"; others are kept as they are (quoted by the CSV writer)
    assert {"images/_=HYPERLINK(1).jpg", "images/_+cmd.jpg", "images/_-2+3.jpg", "images/_@SUM(A1).jpg"} <= kept
    assert {'images/a,b"c.jpg', "images/new\nline.jpg", "images/café 東京.jpg"} <= kept
    assert not any(name.startswith(("=", "+", "-", "@")) for row in meta.itertuples() for name in row[1:2])
    assert not (out / "images" / "link_out.jpg").exists() and len(kept) == summary["kept"]
    assert_kept_files_decode(out, meta)
    with open(out / "report.csv", newline="") as f:  # no cell a spreadsheet would evaluate
        assert not any(cell.startswith(("=", "+", "-", "@")) for row in csv.reader(f) for cell in row)


def test_max_size_never_lets_two_photos_share_a_name(prepare, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "x.png").write_bytes(jpeg_with_gps(10.0, 20.0, size=(300, 200), fmt="PNG"))
    (src / "x.jpg").write_bytes(jpeg_with_gps(-30.0, 40.0, size=(300, 200)))
    (src / "X.JPG").write_bytes(jpeg_with_gps(50.0, 60.0, size=(40, 30)))  # small: copied as is, same name but case
    summary, meta, _ = prepare(src, out, "--max_size", "64")
    assert summary["kept"] == 3 and meta["file_name"].str.lower().is_unique
    coords = {row.file_name: (row.latitude, row.longitude) for row in meta.itertuples()}
    for name, (lat, lon) in coords.items():
        with Image.open(out / name) as img:  # each output file is the photo whose coordinates it is listed with
            assert max(img.size) <= 64 or (lat, lon) == pytest.approx((50.0, 60.0))
    assert sorted(coords.values()) == sorted([(10.0, 20.0), (-30.0, 40.0), (50.0, 60.0)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))  # fmt: skip
def test_random_byte_damage_never_stops_the_run(prepare, tmp_path_factory, damage, cut):
    src = tmp_path_factory.mktemp("in")
    data = bytearray(jpeg_with_gps())
    for pos, value in damage:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    (src / "damaged.jpg").write_bytes(bytes(data))
    (src / "good.jpg").write_bytes(jpeg_with_gps())
    out = tmp_path_factory.mktemp("out")
    summary, meta, report = prepare(src, out)
    assert summary["found"] == 2 and "images/good.jpg" in set(meta["file_name"])
    assert ("images/damaged.jpg" in set(meta["file_name"])) != ("damaged.jpg" in report)
    assert_kept_files_decode(out, meta)
    assert not [p for p in os.listdir(out) if p.startswith(".")], "no temporary files left"
