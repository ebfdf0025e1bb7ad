"""Assemble a Space folder for one app: ``python apps/build_space.py geolocate OUT_DIR`` (or ``hub``).

A Space's root holds ``README.md`` (front matter, ``app_file: apps/<app>/app.py``) and ``requirements.txt`` (both
copied from ``apps/<app>/``), plus ``apps/common``, the app folders it needs, the starter models if present, the
``geo_models`` library, ``hub_cards`` and the training scripts an app runs (``train/sds_to_mesh.py`` for "lift"):
``app.py`` puts the Space root on ``sys.path``, as it does for the repository. Upload with
``huggingface-cli upload --repo-type space USER/SPACE OUT_DIR``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

APPS = Path(__file__).resolve().parent
ROOT = APPS.parent
# app -> the app folders it imports
NEEDS = {"geolocate": ["geolocate"], "generate": ["generate"], "landmark3d": ["landmark3d"],
         "hub": ["hub", "geolocate", "generate", "landmark3d"]}  # fmt: skip
# app -> training scripts it runs (landmark3d's "lift" runs train/sds_to_mesh.py in the server process)
SCRIPTS = {"landmark3d": ["sds_to_mesh.py"], "hub": ["sds_to_mesh.py"]}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "screenshots")


def build_space(app: str, out: str | Path) -> Path:
    """Write the Space of ``app`` into ``out`` (created; must not exist) -> ``out``."""
    if app not in NEEDS:
        raise ValueError(f"app must be one of {sorted(NEEDS)}, got {app!r}")
    out = Path(out)
    out.mkdir(parents=True)
    shutil.copy(APPS / app / "README.md", out / "README.md")
    shutil.copy(APPS / app / "requirements.txt", out / "requirements.txt")
    (out / "apps").mkdir()
    shutil.copy(APPS / "__init__.py", out / "apps" / "__init__.py")
    for folder in ["common", *NEEDS[app], "starter"]:
        if (APPS / folder).is_dir():
            shutil.copytree(APPS / folder, out / "apps" / folder, ignore=IGNORE)
    shutil.copytree(ROOT / "geo_models", out / "geo_models", ignore=IGNORE)
    if app in SCRIPTS:
        (out / "train").mkdir()
        for script in SCRIPTS[app]:
            shutil.copy(ROOT / "train" / script, out / "train" / script)
    shutil.copytree(ROOT / "hub_cards", out / "hub_cards", ignore=IGNORE)  # model cards of what a Space writes
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=sorted(NEEDS))
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(build_space(args.app, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
