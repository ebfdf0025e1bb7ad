"""bench/bench_flow_synthetic.py, shorter: the sphere flow learns a known vMF-mixture density (issue 5 acceptance).

Slow (a few CPU minutes): run with ``--runslow``.
"""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_flow_synthetic.py"


@pytest.mark.slow
def test_flow_learns_known_density(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_flow_synthetic", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out_json = tmp_path / "out.json"
    args = ["--num_train", "100000", "--max_train_steps", "3000", "--num_test", "1000", "--num_mmd", "500"]
    args += ["--num_permutations", "200", "--grid_deg", "9", "--entropy_samples", "50000"]
    out = bench.main([*args, "--output_json", str(out_json)])
    assert json.loads(out_json.read_text())["passed"] == out["passed"]
    # the same bars as the benchmark
    assert abs(out["nll"]["gap"]) < bench.NLL_TOLERANCE, out["nll"]
    assert out["integral"]["max_abs_error"] < bench.INTEGRAL_TOLERANCE, out["integral"]
    assert out["mmd"]["model vs true"]["p_value"] > bench.MMD_ALPHA, out["mmd"]
    # and the test has power: a perturbed truth (kappa x 0.7) is rejected
    assert out["mmd"]["kappa x 0.7 vs true"]["p_value"] < bench.MMD_ALPHA, out["mmd"]
