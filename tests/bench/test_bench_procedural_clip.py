"""bench/bench_procedural_clip.py runs end to end on small generated sets and writes its JSON table."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_procedural_clip.py"


def test_bench_writes_knn_table(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_procedural_clip", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out_json = tmp_path / "out.json"
    args = ["--num_train", "300", "--num_test", "100", "--train_seed", "21", "--test_seed", "22"]
    out = bench.main([*args, "--output_json", str(out_json)])
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(out))
    results = out["results"]
    assert set(results) == {
        "kNN cosine: procedural-clip (procedural)",
        "kNN cosine: procedural-clip (random weights)",
        "kNN: colour stats",
        "chance: random training location",
    }
    assert out["n_train"] == 300 and out["n_test"] == 100
    for metrics in results.values():
        assert set(metrics) >= {"acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km"}
    trained = results["kNN cosine: procedural-clip (procedural)"]["acc_2500km"]
    assert trained > results["chance: random training location"]["acc_2500km"] + 20, results
