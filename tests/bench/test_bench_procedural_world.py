"""Location is learnable from the procedural world images: kNN on colour statistics beats chance at 2500 km."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_procedural_world.py"


def test_knn_colour_baseline_beats_chance(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_procedural_world", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--num_images", "400", "--seed", "3", "--output_json", str(tmp_path / "out.json")])
    results = out["results"]
    knn = results["kNN k=1 (colour stats)"]["acc_2500km"]
    chance = max(
        results["chance: random training location"]["acc_2500km"],
        results["chance: most central training location"]["acc_2500km"],
    )
    assert knn > chance + 15, results
