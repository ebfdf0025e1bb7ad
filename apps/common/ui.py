"""Gradio helpers shared by the apps: an image input that enforces the limits, and user-facing errors."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from apps.common import limits

logger = logging.getLogger(__name__)
STARTER_NOTE = "Starter models trained on procedural data: expect toy predictions, not real-world accuracy."


def checked_image(*, max_megapixels: float = limits.MAX_MEGAPIXELS, max_file_mb: float = limits.MAX_FILE_MB,
                  **kwargs) -> gr.Image:  # fmt: skip
    """A ``gr.Image`` passing a file path (EXIF kept) whose upload is checked from its header before decoding: not an
    image, too many megapixels or too large a file -> a ``gr.Error`` message in the UI.

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
                raise gr.Error(str(err)) from err
        return preprocess(payload)

    image.preprocess = checked_preprocess
    return image


def user_errors(fn):
    """Turn any exception of an event handler into a ``gr.Error`` message; the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as err:
            raise gr.Error(str(err)) from err
        except Exception as err:
            logger.exception("error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {err})") from err

    return wrapper
