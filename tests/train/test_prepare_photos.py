import hashlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from geo_models.data.exif import gps_exif


@pytest.fixture
def prepare_photos(train_script):
    return train_script("prepare_photos")


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def photo_dir(tmp_path):
    src = tmp_path / "photos"
    (src / "day2").mkdir(parents=True)
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    img.save(src / "sydney.jpg", exif=gps_exif(-33.8688, 151.2093))
    img.save(src / "day2" / "nyc.JPG", exif=gps_exif(40.7128, -74.0060))
    Image.new("RGB", (400, 100), "blue").save(src / "day2" / "big.jpg", exif=gps_exif(35.0, 139.0))
    img.save(src / "no_gps.jpg")
    img.save(src / "null.jpg", exif=gps_exif(0.0, 0.0))
    good = (src / "sydney.jpg").read_bytes()
    (src / "corrupt.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (src / "garbage.jpg").write_bytes(b"this is not an image")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    return src


def test_prepare_photos_metadata_and_report(prepare_photos, photo_dir, tmp_path):
    before = digest(photo_dir)
    out = tmp_path / "dataset"
    summary = prepare_photos.main(["--input_dir", str(photo_dir), "--output_dir", str(out)])
    assert summary == {"found": 7, "kept": 3, "skipped": 4}
    meta = pd.read_csv(out / "metadata.csv").set_index("file_name")
    assert sorted(meta.index) == ["images/day2/big.jpg", "images/day2/nyc.JPG", "images/sydney.jpg"]
    assert meta.loc["images/sydney.jpg", "latitude"] == pytest.approx(-33.8688, abs=1e-6)
    assert meta.loc["images/sydney.jpg", "longitude"] == pytest.approx(151.2093, abs=1e-6)
    assert meta.loc["images/day2/nyc.JPG", "longitude"] == pytest.approx(-74.0060, abs=1e-6)
    report = pd.read_csv(out / "report.csv").set_index("file")
    assert report["reason"].to_dict() == {
        "corrupt.jpg": "unreadable",
        "garbage.jpg": "unreadable",
        "no_gps.jpg": "no_gps",
        "null.jpg": "null_island",
    }
    # Originals untouched; copies byte-identical.
    assert digest(photo_dir) == before
    assert (out / "images/sydney.jpg").read_bytes() == (photo_dir / "sydney.jpg").read_bytes()
    # The result reads back as a dataset.
    from geo_models.data.imagefolder import GeoImageFolder

    ds = GeoImageFolder(out)
    assert len(ds) == 3 and ds[0]["image"].mode == "RGB"


def test_prepare_photos_resize_and_keep_null_island(prepare_photos, photo_dir, tmp_path):
    before = digest(photo_dir)
    out = tmp_path / "small"
    summary = prepare_photos.main(
        ["--input_dir", str(photo_dir), "--output_dir", str(out), "--max_size", "100", "--keep_null_island"]
    )
    assert summary["kept"] == 4
    with Image.open(out / "images/day2/big.jpg") as img:
        assert max(img.size) == 100
    assert digest(photo_dir) == before


@pytest.mark.parametrize(
    "extra, message",
    [(["--max_size", "4"], "--max_size"), (["--output_dir", "INSIDE"], "--output_dir"), ([], "--input_dir")],
)
def test_prepare_photos_cli_errors(prepare_photos, photo_dir, tmp_path, capsys, extra, message):
    input_dir = str(photo_dir) if extra else str(tmp_path / "missing")
    argv = ["--input_dir", input_dir, "--output_dir", str(tmp_path / "out"), *extra]
    argv = [str(photo_dir / "sub") if a == "INSIDE" else a for a in argv]
    with pytest.raises(SystemExit):
        prepare_photos.main(argv)
    assert message in capsys.readouterr().err
