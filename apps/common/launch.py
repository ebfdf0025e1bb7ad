"""Start an app: settings from flags/env, models loaded once, a queue with a concurrency limit, then serve."""

from __future__ import annotations

import logging
from collections.abc import Callable

import gradio as gr

from apps.common.models import ModelStore
from apps.common.settings import Settings, parse_settings


def prepare(build: Callable[[ModelStore], gr.Blocks], settings: Settings, store: ModelStore | None = None):
    """Load the models (failures only disable them), build the demo and set up its queue -> (demo, store)."""
    store = store or ModelStore(settings)
    for name, error in store.load_all().items():
        logging.getLogger(__name__).info("%s: %s", name, error or "ok")
    demo = build(store)
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    return demo, store


def launch_kwargs(settings: Settings) -> dict:
    return dict(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_file_mb:g}mb",
                show_error=True)  # fmt: skip


def launch(build: Callable[[ModelStore], gr.Blocks], argv=None, *, description: str = "") -> int:
    """``main(argv)`` of an app: parse flags, load models, serve until interrupted."""
    return serve(build, parse_settings(argv, description))


def serve(build: Callable[[ModelStore], gr.Blocks], settings: Settings) -> int:
    """Load the models, build the demo and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo, _ = prepare(build, settings)
    demo.launch(**launch_kwargs(settings))
    return 0
