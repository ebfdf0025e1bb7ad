"""Embedding parquet format and train/embed_images.py (tiny open_clip, random weights, offline)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from geo_models.data.embeddings import EmbeddingDataset, read_embedding_parquet, write_embedding_parquet

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "train" / "embed_images.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("embed_images", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------ format
def test_round_trip_file_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((7, 5)).astype(np.float32)
    ll = np.stack([rng.uniform(-90, 90, 7), rng.uniform(-180, 180, 7)], 1)
    names = [f"img{i}.png" for i in range(7)]
    write_embedding_parquet(tmp_path / "d" / "part-00001.parquet", emb[4:], ll[4:], file_name=names[4:])
    write_embedding_parquet(
        tmp_path / "d" / "part-00000.parquet", torch.from_numpy(emb[:4]), ll[:4], extra_columns={"text": list("abcd")}
    )
    schema = pq.read_schema(tmp_path / "d" / "part-00000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32())
    assert schema.field("latitude").type == pa.float64()
    assert not list((tmp_path / "d").glob(".*"))  # no temp files left

    e, latlon, other = read_embedding_parquet(tmp_path / "d")
    assert e.dtype == torch.float32 and latlon.dtype == torch.float32
    assert e.shape == (7, 5) and latlon.shape == (7, 2)
    assert torch.equal(e, torch.from_numpy(emb))
    assert torch.allclose(latlon, torch.from_numpy(ll).float())
    assert other["file_name"].tolist()[4:] == names[4:] and other["text"].tolist()[:4] == list("abcd")

    e1, _, _ = read_embedding_parquet(tmp_path / "d" / "part-00001.parquet")
    assert torch.equal(e1, torch.from_numpy(emb[4:]))
    ds = EmbeddingDataset(tmp_path / "d")
    assert len(ds) == 7 and ds.dim == 5
    assert torch.equal(ds[3]["embedding"], torch.from_numpy(emb[3])) and ds[3]["latlon"].shape == (2,)


def test_reads_fixed_size_list_and_float64(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    table = pa.table(
        {
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3),
            "latitude": [0.0, 1, 2, 3],
            "longitude": pa.array([0, 1, 2, 3], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "f.parquet")
    e, ll, other = read_embedding_parquet(tmp_path / "f.parquet")
    assert e.dtype == torch.float32 and torch.equal(e, torch.from_numpy(x).float()) and other.shape == (4, 0)


@pytest.mark.parametrize(
    "embedding, latlon, match",
    [
        (np.zeros((3, 4)), np.zeros((2, 2)), "rows"),
        (np.zeros((3, 4)), np.zeros((3, 3)), r"shape \(N, 2\)"),
        (np.zeros(4), np.zeros((1, 2)), r"shape \(N, D\)"),
        (np.full((1, 4), np.nan), np.zeros((1, 2)), "finite"),
        (np.zeros((1, 4)), [[91.0, 0.0]], r"latitude must be in \[-90, 90\]"),
        (np.zeros((1, 4)), [[0.0, -181.0]], r"longitude must be in \[-180, 180\]"),
        (np.zeros((1, 4)), [[np.inf, 0.0]], "finite"),
    ],
)
def test_write_validation(tmp_path, embedding, latlon, match):
    with pytest.raises(ValueError, match=match):
        write_embedding_parquet(tmp_path / "x.parquet", embedding, latlon)
    assert not (tmp_path / "x.parquet").exists()


def test_read_validation(tmp_path):
    def write(name, **cols):
        pq.write_table(pa.table(cols), tmp_path / name)
        return tmp_path / name

    ok = {"latitude": [0.0, 1.0], "longitude": [0.0, 1.0]}
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['longitude'\]"):
        read_embedding_parquet(write("a.parquet", embedding=[[1.0], [2.0]], latitude=[0.0, 1.0]))
    with pytest.raises(ValueError, match="one length D"):
        read_embedding_parquet(write("b.parquet", embedding=[[1.0], [2.0, 3.0]], **ok))
    with pytest.raises(ValueError, match="NaN or inf"):
        read_embedding_parquet(write("c.parquet", embedding=[[1.0], [float("nan")]], **ok))
    with pytest.raises(ValueError, match="null rows"):
        read_embedding_parquet(write("d.parquet", embedding=[[1.0], None], **ok))
    with pytest.raises(ValueError, match="must hold floats"):
        read_embedding_parquet(write("e.parquet", embedding=[["a"], ["b"]], **ok))
    with pytest.raises(ValueError, match="latitude must be in"):
        read_embedding_parquet(write("f.parquet", embedding=[[1.0], [2.0]], latitude=[0.0, 100.0], longitude=[0, 0]))
    with pytest.raises(ValueError, match="does not exist"):
        read_embedding_parquet(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without"):
        read_embedding_parquet(tmp_path / "empty")
    write_embedding_parquet(tmp_path / "mix" / "p0.parquet", np.zeros((1, 2)), [[0, 0]])
    write_embedding_parquet(tmp_path / "mix" / "p1.parquet", np.zeros((1, 3)), [[0, 0]])
    with pytest.raises(ValueError, match="embedding dim"):
        read_embedding_parquet(tmp_path / "mix")


# ------------------------------------------------------------------------------------------ embed_images
@pytest.fixture
def imagefolder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        name = f"sub/img_{i:02d}.png" if i % 3 == 0 else f"img_{i:02d}.png"
        size = (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name)
        rows.append({"file_name": name, "latitude": -80 + 13.5 * i, "longitude": 170 - 29.25 * i, "text": f"t{i}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


ARGS = ["--model_name", "tiny-vit", "--allow_random_weights", "--shard_size", "5", "--batch_size", "4"]


def _check_output(out, root):
    meta = pd.read_csv(root / "metadata.csv")
    emb, latlon, other = read_embedding_parquet(out)
    assert emb.shape == (12, 32)
    assert other["file_name"].tolist() == meta["file_name"].tolist()  # file order, each row exactly once
    assert other["text"].tolist() == meta["text"].tolist()
    assert torch.allclose(latlon, torch.tensor(meta[["latitude", "longitude"]].to_numpy(), dtype=torch.float32))
    info = json.loads((out / "embedding_info.json").read_text())
    assert info["count"] == 12 and info["dim"] == 32 and info["model_name"] == "tiny-vit" and info["complete"]
    assert info["pretrained"] is None and info["normalized"] is False
    return emb


def test_embed_images_shards_and_resume(imagefolder, tmp_path):
    mod = _load_script()
    out = tmp_path / "emb"
    mod.main(["--train_data", str(imagefolder), "--output_dir", str(out), *ARGS])
    shards = sorted(p.name for p in out.glob("*.parquet"))
    assert shards == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(out / s).metadata.num_rows for s in shards] == [5, 5, 2]
    emb = _check_output(out, imagefolder)

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    mod.main(["--train_data", str(imagefolder), "--output_dir", str(out), *ARGS])  # no-op
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes

    (out / "part-00001.parquet").unlink()
    mod.main(["--train_data", str(imagefolder), "--output_dir", str(out), *ARGS])
    new = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert new["part-00000.parquet"] == mtimes["part-00000.parquet"]
    assert new["part-00002.parquet"] == mtimes["part-00002.parquet"]
    assert torch.equal(_check_output(out, imagefolder), emb)  # same seed -> same random weights

    with pytest.raises(ValueError, match="another run"):
        mod.main(["--train_data", str(imagefolder), "--output_dir", str(out), *ARGS, "--seed", "1"])


def test_embed_images_args_and_bad_metadata(imagefolder, tmp_path):
    mod = _load_script()
    with pytest.raises(SystemExit):
        mod.parse_args(["--train_data", "x", "--output_dir", "y", "--model_name", "tiny-vit"])  # no weights
    with pytest.raises(SystemExit):
        mod.parse_args(["--train_data", "x", "--output_dir", "y", "--pretrained", "openai", "--shard_size", "0"])
    meta = pd.read_csv(imagefolder / "metadata.csv")
    meta.loc[3, "latitude"] = 95.0
    meta.to_csv(imagefolder / "metadata.csv", index=False)
    with pytest.raises(ValueError, match="latitude must be in"):
        mod.main(["--train_data", str(imagefolder), "--output_dir", str(tmp_path / "o"), *ARGS])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30 s: 3 fresh interpreters importing torch + open_clip (~10 s each) on 2 shared cores
def test_embed_images_accelerate_two_processes(imagefolder, tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x (multi-CPU needs mpirun);
    # `--multi_gpu` uses torchrun and the script switches accelerate to CPU/gloo when no GPU is present.
    out = tmp_path / "emb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(SCRIPT),
           "--train_data", str(imagefolder), "--output_dir", str(out), *ARGS]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "process 0: 2 to embed" in res.stdout and "process 1: 1 to embed" in res.stdout, res.stdout
    assert len(list(out.glob("part-*.parquet"))) == 3
    emb = _check_output(out, imagefolder)
    mod = _load_script()  # single process with the same seed gives the same embeddings
    mod.main(["--train_data", str(imagefolder), "--output_dir", str(tmp_path / "single"), *ARGS])
    assert torch.allclose(read_embedding_parquet(tmp_path / "single")[0], emb, atol=1e-6)
