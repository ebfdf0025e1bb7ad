"""Gradio helpers shared by the apps: an image input that enforces the limits, and user-facing errors."""

from __future__ import annotations

import functools
import gc
import logging
import sys
import traceback
from dataclasses import dataclass

import gradio as gr

from apps.common import limits

logger = logging.getLogger(__name__)
# Page styles of every app (``launch(css=...)``): on a phone the result tables use a smaller font, so their columns
# (given in percent by the apps) hold a place name or a number without breaking it mid-word.
APP_CSS = """
@media (max-width: 600px) {
  #geolocate-table *, #text-query-table * { font-size: 11px !important; }
  #geolocate-table td, #geolocate-table th, #text-query-table td, #text-query-table th { padding: 2px 3px !important; }
}
"""
STARTER_NOTE = "Starter models trained on procedural data: expect toy predictions, not real-world accuracy."


@dataclass(frozen=True)
class RejectedUpload:
    """What a :func:`checked_image` passes to event handlers instead of a path when the upload failed its checks:
    the handler says why on the page (:func:`inline_errors`) or raises it as a ``ValueError`` (API endpoints)."""

    reason: str

    def raise_error(self):
        raise ValueError(self.reason)


def checked_image(*, max_megapixels: float = limits.MAX_MEGAPIXELS, max_file_mb: float = limits.MAX_FILE_MB,
                  **kwargs) -> gr.Image:  # fmt: skip
    """A ``gr.Image`` passing a file path (EXIF kept) whose upload is checked from its header before decoding: not an
    image, too many megapixels or too large a file -> a :class:`RejectedUpload` carrying the reason (the file is
    never decoded), so an ``upload`` handler can say so at once, inline, and Locate can refuse it.

    The check wraps this instance's ``preprocess`` (a ``gr.Image`` subclass would make Gradio write a ``.pyi`` stub
    next to this file at import time).
    """
    image = gr.Image(type="filepath", **kwargs)
    preprocess = image.preprocess

    def checked_preprocess(payload):
        if payload is not None and getattr(payload, "path", None):
            try:
                limits.check_image_file(payload.path, max_megapixels=max_megapixels, max_file_mb=max_file_mb)
            except ValueError as err:
                return RejectedUpload(str(err))
        return preprocess(payload)

    image.preprocess = checked_preprocess
    return image


def user_errors(fn):
    """Turn any exception of an event handler into a ``gr.Error`` message; the server keeps serving.

    A user's mistake (``ValueError``, ``gr.Error``) is logged as one line; only unexpected exceptions get a traceback.
    After each call the garbage of the request is collected (:func:`collect_request_garbage`).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            _report(fn, err)
            raise
        except Exception as err:
            message = _report(fn, err)
            raise gr.Error(message or f"Something went wrong ({type(err).__name__}: {err})",
                           print_exception=False) from None  # fmt: skip
        finally:
            collect_request_garbage()

    return wrapper


def _report(fn, err: BaseException) -> str | None:
    """Log an event handler's exception: a user's mistake (``gr.Error``, ``ValueError``) as one line, returning its
    message; anything else with its traceback, returning None. Call it inside the ``except`` block."""
    if isinstance(err, gr.Error):
        logger.info("%s: user error: %s", fn.__name__, err.message)
        return err.message
    if isinstance(err, ValueError):
        logger.info("%s: user error: %s", fn.__name__, err)
        return str(err)
    logger.exception("error in %s", fn.__name__)
    return None


def error_markdown(message: str) -> str:
    """A user's error as the status line of a tab (the last good answer stays below it)."""
    return f"⚠️ **Error**: {message}"


def inline_errors(num_outputs: int):
    """For a UI event whose first output is a status ``gr.Markdown``: a user's error (``ValueError``, ``gr.Error``) or
    an unexpected one (logged with its traceback) becomes :func:`error_markdown` in that status, and the other
    ``num_outputs - 1`` outputs are left as they were (``gr.skip()``). So an error never wipes the last good answer,
    never leaves an "Error" label over stale outputs, and no toast covers the controls (issue 17). API endpoints keep
    :func:`user_errors`: a client sees the error."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                message = _report(fn, err) or f"something went wrong ({type(err).__name__}: {err})"
            finally:
                collect_request_garbage()
            if num_outputs == 1:
                return error_markdown(message)
            return (error_markdown(message), *[gr.skip() for _ in range(num_outputs - 1)])

        return wrapper

    return decorate


def collect_request_garbage() -> None:
    """Free the request's reference cycles now. Plotly figures are cycles (each trace points to its parent), so
    only a full collection frees them, and with the models' ~750K objects in the heap Python ran one only every few
    hundred requests: the server's memory grew ~0.35 MB per request. :func:`apps.common.launch.prepare` freezes the
    start-up objects (``gc.freeze``), so this full collection scans only what requests created (< 1 ms)."""
    gc.collect()


class _OneLineUserErrors:
    """Stands in for the ``traceback`` module inside ``gradio.queueing``, which prints a full traceback for every
    failed event: a user's error (a ``gr.Error``, or input Gradio rejects before any handler runs: out-of-range
    numbers, missing arguments of a raw API call) becomes one log line, so a client cannot flood the log; any other
    exception keeps its traceback."""

    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        exc = sys.exc_info()[1]
        frames = {frame.name for frame in traceback.extract_tb(exc.__traceback__)} if exc is not None else set()
        if isinstance(exc, gr.Error) or (exc is not None and frames & {"validate_inputs", "preprocess_data"}):
            logger.info("user error: %s", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            return
        traceback.print_exc(*args, **kwargs)


def quiet_user_error_tracebacks() -> None:
    """Install :class:`_OneLineUserErrors` in Gradio's queue (idempotent)."""
    import gradio.queueing

    gradio.queueing.traceback = _OneLineUserErrors()
