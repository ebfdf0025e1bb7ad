"""Settings of every app in one place: command-line flags, falling back to environment variables, then defaults.

Model sources are local ``save_pretrained`` folders or Hub repo ids (``user/repo`` or ``user/repo@revision``);
the defaults are the starter models in ``apps/starter/`` (small, trained on procedural data).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from apps.common import limits

STARTER_DIR = Path(__file__).resolve().parents[1] / "starter"
SPACE_MODELS = STARTER_DIR.parent / "space_models.json"  # written by apps/build_space.py --model NAME=REPO@COMMIT
MODEL_NAMES = ("geoclip", "locdiff", "sphere_flow")  # geolocators, loaded by ModelStore
PIPELINE_NAMES = ("gps_to_image", "angle_to_image")  # diffusers pipelines, loaded by their app (generate, landmark3d)
ENV_PREFIX = "GEO_MODELS_"


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def default_source(name: str) -> str:
    """Where model ``name`` comes from when no flag says: ``GEO_MODELS_<NAME>``, then the pinned Hub checkpoint of a
    Space built with ``--model`` (``apps/space_models.json``), then the bundled starter folder."""
    pinned = json.loads(SPACE_MODELS.read_text()) if SPACE_MODELS.is_file() else {}
    return os.environ.get(env_var(name)) or pinned.get(name) or str(STARTER_DIR / name)


@dataclass
class Settings:
    """Resolved settings. ``models`` maps a model name to its source (folder or Hub id)."""

    models: dict[str, str] = field(
        default_factory=lambda: {n: default_source(n) for n in (*MODEL_NAMES, *PIPELINE_NAMES)}
    )
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    gallery: str | None = None  # GeoCLIP gallery: None (the model's own), "official", an int N, or a CSV path
    max_megapixels: float = limits.MAX_MEGAPIXELS
    max_file_mb: float = limits.MAX_FILE_MB
    concurrency_limit: int = 1
    max_queue: int = 32
    requests_per_minute: int = 30  # per client (apps.common.client_limits)
    uploads_per_minute: int = 30
    upload_mb_per_hour: float = 500.0
    trust_forwarded_for: bool = False  # behind a proxy that sets X-Forwarded-For (Spaces)
    upload_ttl_s: int = 600  # uploads are deleted this long after they arrive

    def is_starter(self, name: str) -> bool:
        """True when ``name`` loads from the bundled starter folder."""
        return Path(self.models[name]).resolve() == (STARTER_DIR / name).resolve()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags shared by every app (defaults from ``GEO_MODELS_*`` / ``GRADIO_SERVER_*`` environment variables)."""
    env = os.environ.get
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    for name in (*MODEL_NAMES, *PIPELINE_NAMES):
        parser.add_argument(
            f"--{name}",
            default=default_source(name),
            help=f"folder or Hub id[@revision] of the {name} model (env {env_var(name)}; default: the starter model)",
        )
    parser.add_argument("--device", default=env(env_var("device"), "auto"), help="auto, cpu or cuda")
    parser.add_argument("--gallery", default=env(env_var("gallery")), help="GeoCLIP gallery: official, N or a CSV")
    parser.add_argument("--max_megapixels", type=float, default=float(env(env_var("max_megapixels"), 40)))
    parser.add_argument("--concurrency_limit", type=int, default=int(env(env_var("concurrency_limit"), 1)))
    parser.add_argument("--requests_per_minute", type=int, default=int(env(env_var("requests_per_minute"), 30)),
                        help="jobs per client and minute (429 beyond)")  # fmt: skip
    parser.add_argument("--uploads_per_minute", type=int, default=int(env(env_var("uploads_per_minute"), 30)))
    parser.add_argument("--upload_mb_per_hour", type=float, default=float(env(env_var("upload_mb_per_hour"), 500)))
    parser.add_argument("--upload_ttl_s", type=int, default=int(env(env_var("upload_ttl_s"), 600)),
                        help="seconds after which uploaded files are deleted")  # fmt: skip
    parser.add_argument(
        "--trust_forwarded_for",
        action=argparse.BooleanOptionalAction,
        default=env(env_var("trust_forwarded_for"), "1" if env("SPACE_ID") else "0") == "1",
        help="identify clients by X-Forwarded-For (only behind a proxy that sets it; default: on Spaces)",
    )
    return parser


def from_args(args: argparse.Namespace) -> Settings:
    gallery = args.gallery
    if gallery is not None and gallery.isdigit():
        gallery = int(gallery)
    return Settings(
        models={name: getattr(args, name) for name in (*MODEL_NAMES, *PIPELINE_NAMES)},
        host=args.host,
        port=args.port,
        device=args.device,
        gallery=gallery,
        max_megapixels=args.max_megapixels,
        concurrency_limit=max(1, args.concurrency_limit),
        requests_per_minute=args.requests_per_minute,
        uploads_per_minute=args.uploads_per_minute,
        upload_mb_per_hour=args.upload_mb_per_hour,
        trust_forwarded_for=args.trust_forwarded_for,
        upload_ttl_s=args.upload_ttl_s,
    )


def parse_settings(argv=None, description: str = "") -> Settings:
    """Parse ``argv`` (``None``: ``sys.argv[1:]``) into :class:`Settings` (an error naming the flag when a number
    is out of range)."""
    parser = add_arguments(argparse.ArgumentParser(description=description))
    args = parser.parse_args(argv)
    for name in ("requests_per_minute", "uploads_per_minute", "upload_ttl_s"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.upload_mb_per_hour > 0:
        parser.error(f"--upload_mb_per_hour must be > 0, got {args.upload_mb_per_hour}")
    return from_args(args)
