"""The fault suite's table (issue 14): runs ``tests/reliability`` (``--runslow``: every checkpoint fault point too) and
random kill schedules) and counts, per kind of fault, the cases injected, survived and lost.

Each test case injects one fault and asserts the outcome a user needs, so a passing case is a survived fault:
- checkpoint faults (SIGKILL mid-file, before the manifest, before the rename, disk full, random-time kills,
  missing/corrupt RNG states): the resumed run ends with the uninterrupted run's exact weights, or stops with a
  clear error; a failing case is lost data (or a silent divergence);
- Hub faults (500s, timeouts, truncated bodies during push and pull): success after retries or a clear error, never
  a half-written model folder;
- planted pickles (checkpoints, model folders of every loader): never executed;
- hostile files for prepare_photos (truncated, bombs, odd modes, odd names, symlinks, random byte damage): reported
  with a reason, the run goes on;
- bad library inputs: a ValueError naming the argument.

    python bench/bench_reliability.py --output_json bench/results/reliability.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# kind -> (test file, predicate on the test name)
KINDS = {
    "checkpoint faults": ("test_checkpoint_faults.py", lambda n: "pickle" not in n),
    "planted pickles": ("test_checkpoint_faults.py|test_planted_pickles.py", lambda n: "pickle" in n),
    "Hub faults (push/pull)": ("test_hub_faults.py", lambda n: True),
    "hostile files (prepare_photos)": ("test_prepare_photos_faults.py", lambda n: True),
    "bad library inputs": ("test_bad_inputs.py", lambda n: True),
}


def classify(file: str, name: str) -> str | None:
    for kind, (files, keep) in KINDS.items():
        if file in files.split("|") and keep(name):
            return kind
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the default suite's part only (no --runslow)")
    parser.add_argument("--output_json", default="bench/results/reliability.json")
    args = parser.parse_args(argv)
    xml = Path(tempfile.mkdtemp()) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability", f"--junitxml={xml}"]
    if not args.fast:
        cmd.append("--runslow")
    started = time.time()
    subprocess.run(cmd, cwd=REPO, check=False)
    seconds = time.time() - started
    table = {kind: {"injected": 0, "survived": 0, "lost_or_failed": 0, "failures": []} for kind in KINDS}
    for case in ET.parse(xml).getroot().iter("testcase"):
        file = case.get("classname", "").split(".")[-1] + ".py"
        kind = classify(file, case.get("name", ""))
        if kind is None or case.find("skipped") is not None:
            continue
        row = table[kind]
        row["injected"] += 1
        if case.find("failure") is None and case.find("error") is None:
            row["survived"] += 1
        else:
            row["lost_or_failed"] += 1
            row["failures"].append(case.get("name"))
    result = {"runslow": not args.fast, "seconds": seconds, "table": table}
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    print("| fault kind | cases injected | survived | lost data / failed |\n|---|---|---|---|")
    for kind, row in table.items():
        print(f"| {kind} | {row['injected']} | {row['survived']} | {row['lost_or_failed']} |")
    return result


if __name__ == "__main__":
    main()
