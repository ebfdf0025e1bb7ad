import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geo_models.data.imagefolder import GeoImageFolder, read_imagefolder_metadata, write_imagefolder_metadata
from geo_models.data.webdataset import GeoWebDataset, expand_shards, write_webdataset


def make_imagefolder(root, n=7, with_text=True):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"images/{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name)
        row = {"file_name": name, "latitude": -80.0 + 20 * i, "longitude": 170.0 - 50 * i}
        if with_text:
            row["text"] = f"photo {i}"
        rows.append(row)
    write_imagefolder_metadata(root, pd.DataFrame(rows))
    return rows


def test_imagefolder_round_trip(tmp_path):
    rows = make_imagefolder(tmp_path)
    ds = GeoImageFolder(tmp_path, transform=lambda im: torch.from_numpy(np.array(im)))
    assert len(ds) == 7
    item = ds[3]
    assert item["image"].shape == (8, 8, 3) and item["text"] == "photo 3"
    assert torch.equal(item["latlon"], torch.tensor([rows[3]["latitude"], rows[3]["longitude"]]))


def test_imagefolder_jsonl(tmp_path):
    rows = make_imagefolder(tmp_path, with_text=False)
    (tmp_path / "metadata.csv").unlink()
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = read_imagefolder_metadata(tmp_path)
    assert list(frame["latitude"]) == [r["latitude"] for r in rows]
    assert "text" not in GeoImageFolder(tmp_path)[0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.drop(columns="longitude"), "missing column"),
        (lambda f: f.assign(latitude=f["latitude"].where(f.index != 2, 123.0)), "latitude must be in"),
        (lambda f: f.assign(longitude="east"), "must be numbers"),
        (lambda f: f.assign(file_name=f["file_name"].str.replace("000", "999")), "not found"),
    ],
)
def test_imagefolder_validation(tmp_path, edit, message):
    make_imagefolder(tmp_path)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    edit(frame).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=message):
        read_imagefolder_metadata(tmp_path)


def test_no_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="root: .* has no metadata.csv"):
        GeoImageFolder(tmp_path)


def test_webdataset_round_trip(tmp_path):
    rows = make_imagefolder(tmp_path / "folder")
    shards = write_webdataset(tmp_path / "folder", tmp_path / "shards", shard_size=3)
    assert len(shards) == 3
    assert expand_shards(tmp_path / "shards") == [str(s) for s in shards]
    pattern = str(tmp_path / "shards" / "shard-{000000..000002}.tar")
    assert expand_shards(pattern) == [str(s) for s in shards]
    items = list(GeoWebDataset(pattern, split_by_node=False))
    assert [it["text"] for it in items] == [r["text"] for r in rows]
    assert torch.allclose(
        torch.stack([it["latlon"] for it in items]), torch.tensor([[r["latitude"], r["longitude"]] for r in rows])
    )
    with Image.open(tmp_path / "folder" / rows[4]["file_name"]) as original:
        assert np.array_equal(np.asarray(items[4]["image"]), np.asarray(original.convert("RGB")))


def test_webdataset_bad_sample(tmp_path):
    import webdataset as wds

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with wds.TarWriter(str(tmp_path / "bad.tar")) as sink:
        sink.write({"__key__": "x1", "png": png.getvalue(), "json": json.dumps({"latitude": 95, "longitude": 0})})
    with pytest.raises(ValueError, match="'x1'.*latitude must be in"):
        list(GeoWebDataset(tmp_path / "bad.tar", split_by_node=False))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .tar shards"):
        expand_shards(tmp_path / "empty")
