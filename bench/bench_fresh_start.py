"""Benchmark: the README's first command on a fresh clone, timed until every tab of the demo hub answers (issue 7).

1. ``git clone`` of this repository's HEAD into ``--workdir`` (no venv, no pip cache: ``PIP_CACHE_DIR`` points to an
   empty folder, so every wheel is fetched and installed again; apt packages already installed are kept, as on a
   machine where the README's apt step ran before).
2. ``bash scripts/demo.sh --port PORT`` (set-up + hub), timed until the page answers HTTP 200.
3. One ``gradio_client`` call per endpoint (``geolocate`` with each starter geolocator on an example photo,
   ``text_query``, ``generate``), timed; then the hub is stopped.

    python bench/bench_fresh_start.py --output_json bench/results/fresh_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT = """
import json, sys, time
from gradio_client import Client, handle_file
c = Client(sys.argv[1], verbose=False)
photo = sys.argv[2]
calls = {f"geolocate {m}": ((handle_file(photo), m, 3), "/geolocate") for m in ("GeoCLIP", "LocDiff", "LocDiff-H",
                                                                             "Sphere flow")}
calls["text_query"] = (("snowy mountains", 10, 3), "/text_query")
calls["generate"] = (("A street in Manhattan", 40.75, -73.98, 3.5, 7.5, 10, 0), "/generate")
out = {}
for name, (args, api) in calls.items():
    t = time.time()
    try:
        r = c.predict(*args, api_name=api)
        out[name] = {"seconds": time.time() - t, "ok": True, "answer": str(r)[:120]}
    except Exception as err:
        out[name] = {"seconds": time.time() - t, "ok": False, "answer": repr(err)[:300]}
print(json.dumps(out))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/geo_models_fresh", help="emptied first: the clone, venv and pip cache")
    p.add_argument("--port", type=int, default=7875)
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the hub")
    p.add_argument("--output_json", default="bench/results/fresh_start.json")
    return p.parse_args(argv)


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(1)
    return False


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "GEO_MODELS_VENV")}
    env["PIP_CACHE_DIR"] = str(work / "pip_cache")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    log = open(work / "demo.log", "w")
    t0, c0 = time.time(), os.times()
    proc = subprocess.Popen(["bash", "scripts/demo.sh", "--port", str(args.port)], cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{args.port}/"
    try:
        up = wait_http(url, proc, args.timeout)
        up_seconds = time.time() - t0
        if not up:
            sys.exit(f"the hub did not come up (see {work / 'demo.log'})")
        photo = sorted((clone / "apps" / "starter" / "examples").glob("*.jpg"))[0]
        calls = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", CLIENT, url, str(photo)],
                               capture_output=True, text=True, timeout=900)  # fmt: skip
        if calls.returncode:
            sys.exit(f"API calls failed:\n{calls.stderr[-2000:]}")
        endpoints = json.loads(calls.stdout.strip().splitlines()[-1])
        all_seconds = time.time() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    c1 = os.times()
    setup_lines = [line.strip() for line in (work / "demo.log").read_text().splitlines() if "[setup]" in line]
    result = {
        "commit": commit,
        "seconds_to_http_200": up_seconds,
        "seconds_to_all_endpoints_answered": all_seconds,
        "children_cpu_seconds": (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system),
        "setup_log": setup_lines,
        "all_endpoints_ok": all(e["ok"] for e in endpoints.values()),
        "endpoints": endpoints,
        "venv_gb": sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 2**30,
    }
    print(json.dumps(result, indent=1))
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
