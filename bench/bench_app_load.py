"""Load test of the demo hub's ``geolocate`` endpoint on the starter checkpoints (issue 7).

Starts ``python apps/hub/app.py`` in a subprocess on a free port, then ``--clients`` gradio_client clients in
threads each send ``--requests`` geolocation requests (an example photo; the geolocator cycles through GeoCLIP,
LocDiff, LocDiff-H and sphere flow), all at once. Reports errors, p50/p95/max latency overall and per geolocator,
and checks the server still answers afterwards.

    python bench/bench_app_load.py --output_json bench/results/app_load.json
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GEOLOCATORS = ["GeoCLIP", "LocDiff", "LocDiff-H", "Sphere flow"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=10, help="per client")
    p.add_argument("--photos", default=str(REPO / "apps" / "starter" / "examples"), help="folder of example photos")
    p.add_argument("--startup_timeout", type=float, default=300.0)
    p.add_argument("--output_json", default="bench/results/app_load.json")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from gradio_client import Client, handle_file

    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise ValueError(f"--photos: no images in {args.photos}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, str(REPO / "apps" / "hub" / "app.py"), "--port", str(port)], cwd=REPO)
    try:
        t0 = time.time()
        wait_for(url, args.startup_timeout, proc)
        startup = time.time() - t0
        records, lock = [], threading.Lock()

        def client_loop(c: int) -> None:
            client = Client(url, verbose=False)
            for r in range(args.requests):
                geolocator = GEOLOCATORS[(c + r) % len(GEOLOCATORS)]
                photo = photos[(c * args.requests + r) % len(photos)]
                t = time.time()
                try:
                    out = client.predict(handle_file(str(photo)), geolocator, 3, api_name="/geolocate")
                    error = None if out.get("candidates") else "no candidates"
                except Exception as err:  # noqa: BLE001 - every failure is a finding of the load test
                    error = f"{type(err).__name__}: {err}"
                with lock:
                    records.append({"geolocator": geolocator, "seconds": time.time() - t, "error": error})

        t0 = time.time()
        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        alive = Client(url, verbose=False).predict(handle_file(str(photos[0])), "GeoCLIP", 1, api_name="/geolocate")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = [r["seconds"] for r in records if r["error"] is None]
    out = {
        "args": vars(args),
        "startup_seconds": startup,
        "wall_seconds": wall,
        "requests": len(records),
        "errors": [r for r in records if r["error"] is not None],
        "latency": percentiles(ok),
        "per_geolocator": {
            g: percentiles([r["seconds"] for r in records if r["geolocator"] == g and r["error"] is None])
            for g in GEOLOCATORS
        },
        "alive_after": bool(alive.get("candidates")),
        "throughput_rps": len(ok) / wall,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "args"}, indent=2))
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
