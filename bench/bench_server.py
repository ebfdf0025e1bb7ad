"""The demo server under sustained use (issue 14): memory, uploads on disk, load, per-client limits, error logs.

Starts ``python apps/hub/app.py`` (starter checkpoints) in a subprocess with its own ``GRADIO_TEMP_DIR``, then:

1. ``--sequential`` GeoCLIP ``geolocate`` requests one after another (a new client address every 25, so the
   per-client limit is not what is measured); the server's RSS every ``--every`` requests;
2. the bytes of uploaded files in the temp dir right after, and once ``--upload_ttl_s`` has passed;
3. ``--clients`` clients in threads, ``--requests`` requests each, all at once (geolocator cycling through GeoCLIP,
   LocDiff, LocDiff-H, sphere flow): errors, p50/p95;
4. one client sending ``2 x --requests_per_minute`` jobs in a burst: how many got 429;
5. bad requests (out-of-range seed, top_k, samples x steps; not-an-image uploads): clear errors, and the traceback
   lines they left in the server log.

    python bench/bench_server.py --output_json bench/results/server.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_app_load import GEOLOCATORS, free_port, percentiles, wait_for  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequential", type=int, default=1000)
    p.add_argument("--every", type=int, default=100, help="RSS sample period (requests)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=10, help="per client")
    p.add_argument("--requests_per_minute", type=int, default=30, help="the server's per-client limit")
    p.add_argument("--upload_ttl_s", type=int, default=30, help="the server's upload lifetime (default app: 600)")
    p.add_argument("--photos", default=str(REPO / "apps" / "starter" / "examples"))
    p.add_argument("--output_json", default="bench/results/server.json")
    return p.parse_args(argv)


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def upload_bytes(temp_dir: Path) -> int:
    return sum(p.stat().st_size for p in temp_dir.rglob("*") if p.is_file())


def unique_copy(src: Path, dst: Path, i: int) -> Path:
    """``src`` with one pixel changed by ``i`` (EXIF kept): Gradio stores uploads by content hash, so identical
    files would be stored once and hide what uploads cost on disk."""
    from PIL import Image

    with Image.open(src) as img:
        exif = img.info.get("exif", b"")
        img = img.convert("RGB")
        img.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
        img.save(dst, quality=95, exif=exif)
    return dst


def main(argv=None) -> dict:
    args = parse_args(argv)
    from gradio_client import Client, handle_file

    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    temp_dir = Path(tempfile.mkdtemp(prefix="gradio_bench_"))
    log_path = temp_dir.parent / f"{temp_dir.name}.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "apps" / "hub" / "app.py"), "--port", str(port), "--trust_forwarded_for"]
    cmd += ["--requests_per_minute", str(args.requests_per_minute), "--upload_ttl_s", str(args.upload_ttl_s)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    out: dict = {"args": vars(args)}
    try:
        wait_for(url, 300, proc)

        def client(address: str):
            return Client(url, verbose=False, headers={"X-Forwarded-For": address})

        # 1. sequential requests, RSS
        bytes_before = upload_bytes(temp_dir)
        rss, seconds, c = [(0, rss_mb(proc.pid))], [], None
        unique = Path(tempfile.mkdtemp(prefix="bench_uploads_"))
        for i in range(args.sequential):
            if i % 25 == 0:
                c = client(f"10.1.{i // 6400}.{(i // 25) % 256}")
            photo = unique_copy(photos[i % len(photos)], unique / f"photo_{i}.jpg", i)  # new bytes: a new upload
            t = time.time()
            c.predict(handle_file(str(photo)), "GeoCLIP", 3, api_name="/geolocate")
            photo.unlink()
            seconds.append(time.time() - t)
            if (i + 1) % args.every == 0:
                rss.append((i + 1, rss_mb(proc.pid)))
                print(f"{i + 1} requests: server RSS {rss[-1][1]:.0f} MB", flush=True)
        warm = [m for n, m in rss if n >= args.every]  # after the first --every requests (warm-up)
        out["sequential"] = {
            "rss_mb": rss,
            "growth_after_warmup_mb": max(warm) - warm[0],  # the criterion: no growth (falls are fine)
            "spread_after_warmup_mb": max(warm) - min(warm),
            "latency": percentiles(seconds),
        }
        # 2. uploads on disk
        right_after = upload_bytes(temp_dir) - bytes_before
        time.sleep(args.upload_ttl_s + min(60, max(1, args.upload_ttl_s // 2)) + 5)
        out["uploads"] = {"bytes_right_after": right_after, "bytes_after_ttl": upload_bytes(temp_dir) - bytes_before}
        print(json.dumps(out["uploads"]), flush=True)
        # 3. concurrent clients
        records, lock = [], threading.Lock()

        def loop(k: int) -> None:
            c = client(f"10.2.0.{k}")
            for r in range(args.requests):
                geolocator = GEOLOCATORS[(k + r) % len(GEOLOCATORS)]
                t = time.time()
                try:
                    res = c.predict(handle_file(str(photos[(k + r) % len(photos)])), geolocator, 3,
                                    api_name="/geolocate")  # fmt: skip
                    error = None if res.get("candidates") else "no candidates"
                except Exception as err:  # noqa: BLE001 - every failure is a finding
                    error = f"{type(err).__name__}: {err}"
                with lock:
                    records.append({"geolocator": geolocator, "seconds": time.time() - t, "error": error})

        t0 = time.time()
        threads = [threading.Thread(target=loop, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [r["seconds"] for r in records if r["error"] is None]
        out["concurrent"] = {
            "requests": len(records),
            "errors": [r for r in records if r["error"]],
            "latency": percentiles(ok),
            "wall_seconds": time.time() - t0,
        }
        print(json.dumps({k: v for k, v in out["concurrent"].items() if k != "errors"}), flush=True)
        # 4. one client over its limit
        import httpx

        burst = [
            httpx.post(f"{url}gradio_api/call/geolocate", json={"data": [None, "GeoCLIP", 3]},
                       headers={"X-Forwarded-For": "10.3.0.1"}, timeout=30).status_code  # fmt: skip
            for _ in range(2 * args.requests_per_minute)
        ]
        out["burst"] = {"sent": len(burst), "rejected_429": burst.count(429), "accepted": burst.count(200)}
        # 5. bad requests -> clear errors, one log line each
        log_before = log_path.read_text().count("Traceback")
        bad = client("10.4.0.1")
        cases = {
            "seed 2**64": ((handle_file(str(photos[0])), "GeoCLIP", 3, 32, 32, 10, 2**64), "maximum value"),
            "top_k 2.5": ((handle_file(str(photos[0])), "GeoCLIP", 2.5), "top_k"),
            "samples x steps": ((handle_file(str(photos[0])), "Sphere flow", 3, 256, 100), "num_samples x"),
            "not an image": ((handle_file(str(Path(__file__))), "GeoCLIP", 3), "not an image"),
        }
        errors = {}
        for name, (call, _) in cases.items():
            try:
                bad.predict(*call, api_name="/geolocate")
                errors[name] = "no error"
            except Exception as err:  # noqa: BLE001
                errors[name] = str(err)[:200]
        out["bad_requests"] = {
            "tried": len(cases),
            "clear_errors": sum(expected in errors[name] for name, (_, expected) in cases.items()),
            "messages": errors,
            "tracebacks_logged": log_path.read_text().count("Traceback") - log_before,
        }
        out["alive_after"] = bool(client("10.5.0.1").predict(handle_file(str(photos[0])), "GeoCLIP", 1,
                                                             api_name="/geolocate").get("candidates"))  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps({k: v for k, v in out.items() if k not in ("args",)}, indent=1, default=str)[:4000])
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
