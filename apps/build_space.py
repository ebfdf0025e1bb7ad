"""Assemble a Space folder for one app: ``python apps/build_space.py geolocate OUT_DIR`` (or ``hub``, ``generate``,
``landmark3d``).

A Space's root holds ``README.md`` (front matter, ``app_file: apps/<app>/app.py``) and ``requirements.txt`` (both
from ``apps/<app>/``), plus ``apps/common``, the app folders it needs, the starter models, the ``geo_models``
library, ``hub_cards`` and the training scripts an app runs (``train/sds_to_mesh.py`` for "lift"): ``app.py`` puts
the Space root on ``sys.path``, as it does for the repository. Upload with
``huggingface-cli upload --repo-type space USER/SPACE OUT_DIR``.

By default the Space serves the bundled starter models and its front matter preloads nothing. To serve pushed
checkpoints instead, pass each as ``--model NAME=USER/REPO@COMMIT`` (a full 40-hex commit: a Space build must be
reproducible): the front matter then lists it under ``models`` (the Hub links the Space to the model) and
``preload_from_hub`` (its files downloaded into the image at build time, at that commit), and
``apps/space_models.json`` makes the app load it (``apps.common.settings``; a ``GEO_MODELS_<NAME>`` variable of the
Space still wins). The front matter is written by huggingface_hub's own ``SpaceCard``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

APPS = Path(__file__).resolve().parent
ROOT = APPS.parent
# app -> the app folders it imports
NEEDS = {"geolocate": ["geolocate"], "generate": ["generate"], "landmark3d": ["landmark3d"],
         "hub": ["hub", "geolocate", "generate", "landmark3d"]}  # fmt: skip
# app -> the models it serves (names of apps.common.settings, i.e. of the starter folders)
SERVES = {"geolocate": ["geoclip", "locdiff", "sphere_flow"], "generate": ["gps_to_image"],
          "landmark3d": ["angle_to_image"],
          "hub": ["geoclip", "locdiff", "sphere_flow", "gps_to_image", "angle_to_image"]}  # fmt: skip
# app -> training scripts it runs (landmark3d's "lift" runs train/sds_to_mesh.py in the server process)
SCRIPTS = {"landmark3d": ["sds_to_mesh.py"], "hub": ["sds_to_mesh.py"]}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "screenshots")
SPACE_MODELS = "space_models.json"  # apps/space_models.json: {name: "repo@commit"}, read by apps.common.settings
MODEL_FILES = (".json", ".safetensors", ".py", ".txt")  # what a model folder loads (not its card, not samples)
COMMIT = re.compile(r"[0-9a-f]{40}")


def parse_model(text: str, app: str) -> tuple[str, str, str]:
    """``"NAME=USER/REPO@COMMIT"`` -> ``(name, repo_id, commit)``; ``ValueError`` naming ``--model`` otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name, sep, source = str(text).partition("=")
    repo_id, at, commit = source.partition("@")
    if not sep or name not in SERVES[app]:
        names = SERVES[app]
        raise ValueError(f"--model must be NAME=USER/REPO@COMMIT with NAME one of {names} for {app}, got {text!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"--model {name}: {repo_id!r} is not a Hub repo id ({err})") from None
    if "/" not in repo_id:
        raise ValueError(f"--model {name}: the repo id must be USER/REPO, got {repo_id!r}")
    if not at or not COMMIT.fullmatch(commit) or set(commit) == {"0"}:
        what = "a real commit (40 hex digits, not a placeholder)"
        raise ValueError(f"--model {name}: pin {what} after '@', got {commit!r}")
    return name, repo_id, commit


def preload_files(name: str) -> list[str]:
    """The files a Space preloads for a model of kind ``name``: those its ``save_pretrained`` folder loads, as the
    starter folder of that kind has them (weights, configs, tokenizer, generated code)."""
    folder = APPS / "starter" / name
    files = sorted(
        str(f.relative_to(folder)) for f in folder.rglob("*")
        if f.is_file() and f.suffix in MODEL_FILES and f.relative_to(folder).parts[0] != "validation"
    )  # fmt: skip
    if not files:
        raise ValueError(f"no starter folder apps/starter/{name} to take the file list of a {name} model from")
    return files


def write_front_matter(app: str, out: Path, models: list[tuple[str, str, str]]) -> None:
    """README.md of the Space: the app's, with ``models`` / ``preload_from_hub`` for the pinned checkpoints only."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(APPS / app / "README.md")
    if models:
        card.data.models = [repo for _, repo, _ in models]
        preload = [f"{repo} {','.join(preload_files(name))} {commit}" for name, repo, commit in models]
        card.data.preload_from_hub = preload
    card.save(out / "README.md")


def build_space(app: str, out: str | Path, models: list[str] | tuple[str, ...] = ()) -> Path:
    """Write the Space of ``app`` into ``out`` (created; must not exist) -> ``out``. ``models``: ``NAME=REPO@COMMIT``
    entries to serve instead of the bundled starter models (see the module docstring)."""
    if app not in NEEDS:
        raise ValueError(f"app must be one of {sorted(NEEDS)}, got {app!r}")
    pinned = [parse_model(m, app) for m in models]
    if len({name for name, _, _ in pinned}) != len(pinned):
        raise ValueError(f"--model: each model once, got {list(models)}")
    out = Path(out)
    out.mkdir(parents=True)
    write_front_matter(app, out, pinned)
    shutil.copy(APPS / app / "requirements.txt", out / "requirements.txt")
    (out / "apps").mkdir()
    shutil.copy(APPS / "__init__.py", out / "apps" / "__init__.py")
    for folder in ["common", *NEEDS[app], "starter"]:
        if (APPS / folder).is_dir():
            shutil.copytree(APPS / folder, out / "apps" / folder, ignore=IGNORE)
    if pinned:
        sources = {name: f"{repo}@{commit}" for name, repo, commit in pinned}
        (out / "apps" / SPACE_MODELS).write_text(json.dumps(sources, indent=2) + "\n")
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
    parser.add_argument("--model", action="append", default=[], metavar="NAME=USER/REPO@COMMIT",
                        help="serve this pushed checkpoint instead of the bundled starter (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        print(build_space(args.app, args.out_dir, args.model))
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
