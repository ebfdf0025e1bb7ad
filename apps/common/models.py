"""Model loading in one place: each model is loaded once (lazily, thread-safe) and cached; a model that cannot be
loaded is reported, never fatal. ``gpu`` is ``spaces.GPU`` on ZeroGPU Spaces and a no-op elsewhere."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apps.common.settings import MODEL_NAMES, Settings

try:  # ZeroGPU Spaces
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_kwargs):
        """No-op stand-in for ``spaces.GPU`` (works bare or with arguments)."""
        return fn if fn is not None else (lambda f: f)


logger = logging.getLogger(__name__)
_STORES: dict[int, ModelStore] = {}  # key -> store: GPU functions take the key (picklable), not the store


def split_revision(source: str) -> tuple[str, str | None]:
    """``"user/repo@rev"`` -> ``("user/repo", "rev")``; folders and plain ids get ``None``."""
    if "@" in source and not Path(source).exists():
        repo, _, rev = source.rpartition("@")
        return repo, rev or None
    return source, None


def looks_local(path: str) -> bool:
    """True when ``path`` means a folder rather than a Hub id ``user/repo``: absolute, starting with a dot, or not
    exactly one slash (a missing folder is then reported as such instead of being asked of the Hub)."""
    return Path(path).is_absolute() or path.startswith(".") or path.count("/") != 1


def pipeline_source(settings: Settings, name: str) -> str:
    """Where a tab's diffusers pipeline ``name`` comes from: the settings, then
    :func:`~apps.common.settings.default_source` (``GEO_MODELS_<NAME>``, a Space's pinned checkpoint, the starter)."""
    from apps.common.settings import default_source

    return settings.models.get(name) or default_source(name)


_PIPELINES: dict[tuple[int, str], tuple[Any, str | None]] = {}  # (store key, name) -> (pipeline, reason)
_PIPELINES_LOCK = threading.Lock()


def load_pipeline_once(store: ModelStore, name: str, load: Callable[[str, str], Any], what: str):
    """``(pipeline, None)`` or ``(None, reason)`` for the pipeline ``name`` of ``store`` (a tab's model, not one of
    :data:`MODEL_NAMES`): ``load(source, device)`` on the first call, then cached; a failure disables the tab, the app
    keeps running. ``what`` names the model in the reason (e.g. "GPS-to-image model")."""
    with _PIPELINES_LOCK:
        key = (store.key, name)
        if key not in _PIPELINES:
            source = pipeline_source(store.settings, name)
            try:
                _PIPELINES[key] = (load(source, store.device), None)
                logger.info("loaded %s from %s", name, source)
            except Exception as err:  # noqa: BLE001 - any failure disables the tab, the app keeps running
                reason = f"{what} unavailable ({source}): {type(err).__name__}: {err}"
                _PIPELINES[key] = (None, reason)
                logger.warning(reason)
        return _PIPELINES[key]


def load_source(source: str, device: str) -> Any:
    """Load a geo_models model from a folder or a Hub id via :func:`geo_models.hub.load_model`."""
    from geo_models.hub import load_model

    path, revision = split_revision(source)
    if looks_local(path) and not Path(path).is_dir():
        raise FileNotFoundError(f"no model folder at {path}")
    model = load_model(path, revision=revision)
    model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


class ModelStore:
    """The models of the apps, by name (``geoclip``, ``locdiff``, ``sphere_flow``)."""

    def __init__(self, settings: Settings | None = None, models: dict[str, Any] | None = None):
        self.settings = settings or Settings()
        self._models: dict[str, Any] = dict(models or {})
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.key = id(self)
        _STORES[self.key] = self

    @staticmethod
    def by_key(key: int) -> ModelStore:
        """The store registered under ``key`` (see :attr:`key`)."""
        return _STORES[key]

    @property
    def device(self) -> str:
        if self.settings.device != "auto":
            return self.settings.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def get(self, name: str) -> Any | None:
        """The model, loading it on first use; ``None`` if it cannot be loaded (see :meth:`error`)."""
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; known: {MODEL_NAMES}")
        with self._lock:
            if name not in self._models and name not in self._errors:
                source = self.settings.models.get(name) or ""
                try:
                    self._models[name] = load_source(source, self.device)
                    logger.info("loaded %s from %s", name, source)
                except Exception as err:  # noqa: BLE001 - any failure disables the model, the app keeps running
                    self._errors[name] = f"{name} unavailable ({source}): {type(err).__name__}: {err}"
                    logger.warning(self._errors[name])
            return self._models.get(name)

    def error(self, name: str) -> str | None:
        self.get(name)
        return self._errors.get(name)

    def load_all(self) -> dict[str, str | None]:
        """Load every model now -> ``{name: error message or None}``."""
        return {name: self.error(name) for name in MODEL_NAMES}

    def uses_starter(self) -> bool:
        """True when a loaded model comes from the bundled starter folders."""
        return any(self.settings.is_starter(n) for n in self._models if n in self.settings.models)
