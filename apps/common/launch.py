"""Start an app: settings from flags/env, models loaded once, a queue with a concurrency limit, then serve."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import gradio as gr

from apps.common.janitor import UploadJanitor
from apps.common.models import ModelStore
from apps.common.settings import Settings, parse_settings
from apps.common.ui import APP_CSS, quiet_user_error_tracebacks


def prepare(build: Callable[[ModelStore], gr.Blocks], settings: Settings, store: ModelStore | None = None):
    """Load the models (failures only disable them), build the demo and set up its queue -> (demo, store)."""
    store = store or ModelStore(settings)
    for name, error in store.load_all().items():
        logging.getLogger(__name__).info("%s: %s", name, error or "ok")
    return configure(build(store), settings), store


def configure(demo: gr.Blocks, settings: Settings) -> gr.Blocks:
    """Queue (concurrency limit, size), upload clean-up and memory set-up of a built demo, before ``launch``."""
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    # uploads (and other files Gradio caches for this app) are deleted upload_ttl_s after they arrive
    demo.upload_janitor = UploadJanitor(demo, settings.upload_ttl_s).start()
    quiet_user_error_tracebacks()
    # Models, Gradio and the demo are built: move their objects out of the collector's sight, so the full collection
    # after each request (apps.common.ui.collect_request_garbage) scans only the request's objects.
    gc.collect()
    gc.freeze()
    return demo


def launch_kwargs(settings: Settings) -> dict:
    """``demo.launch`` arguments: address, file size limit, and the per-client limits in front of Gradio."""
    from starlette.middleware import Middleware

    from apps.common.client_limits import ClientLimits, LimitSettings

    limits = LimitSettings(
        requests_per_minute=settings.requests_per_minute,
        uploads_per_minute=settings.uploads_per_minute,
        upload_mb_per_hour=settings.upload_mb_per_hour,
        trust_forwarded_for=settings.trust_forwarded_for,
    )
    return dict(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_file_mb:g}mb",
                show_error=True, app_kwargs={"middleware": [Middleware(ClientLimits, settings=limits)]},
                css=APP_CSS)  # fmt: skip


def launch(build: Callable[[ModelStore], gr.Blocks], argv=None, *, description: str = "") -> int:
    """``main(argv)`` of an app: parse flags, load models, serve until interrupted."""
    return serve(build, parse_settings(argv, description))


def serve(build: Callable[[ModelStore], gr.Blocks], settings: Settings) -> int:
    """Load the models, build the demo and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo, _ = prepare(build, settings)
    demo.launch(**launch_kwargs(settings))
    return 0
