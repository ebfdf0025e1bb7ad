"""Hugging Face Hub integration: model-type registry, push/pull helpers, model cards from ``hub_cards/``.

Every model saves ``config.json`` (constructor keyword arguments + ``model_type``) and ``model.safetensors``. The
``model_type`` tells :func:`load_model` which class to build, so ``load_model("user/repo")`` works for any of them.

Pushes and pulls by repo id (:func:`load_model`, :func:`pull_folder`, :func:`push_folder`, the models'
``from_pretrained`` / ``push_to_hub``) are retried on transient failures (5xx, 408/429, timeouts, dropped or cut
connections): :data:`HUB_ATTEMPTS` attempts with exponential backoff from :data:`HUB_BACKOFF_S`; then
:class:`HubTransferError` names the repo, the operation and the last cause. Every HTTP wait of huggingface_hub that
has no timeout (its API calls: repo info, tree, create repo, commit) gets :func:`hub_timeout` seconds
(``GEO_MODELS_HUB_TIMEOUT``, default 60; <= 0 turns it off), so a stalled Hub raises instead of hanging. Downloads keep
huggingface_hub's own timeouts (``HF_HUB_DOWNLOAD_TIMEOUT``, ``HF_HUB_ETAG_TIMEOUT``), go to a temporary file renamed
into place once complete and size-checked, and a commit lands whole or not at all: a failed pull or push leaves no
half-written model behind (:func:`pull_folder` with ``local_dir`` swaps the folder in once complete).
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx2
import torch
from huggingface_hub import (
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    PyTorchModelHubMixin,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session
from safetensors.torch import load_file, save_file

LIBRARY_NAME = "geo_models"
logger = logging.getLogger(__name__)

# model_type -> "module:Class". Explicit (reading it tells which code runs) and lazy (no heavy imports here).
MODEL_TYPES: dict[str, str] = {
    "location_encoder": "geo_models.encoders.location:LocationEncoder",
    "geoclip": "geo_models.geoclip.modeling:GeoCLIP",
    "knn": "geo_models.baselines:KNNGeolocator",
    "locdiff": "geo_models.locdiff.pipeline:LocDiffPipeline",
    "sphere_flow": "geo_models.flow.pipeline:SphereFlowPipeline",
    "gps_clip": "geo_models.generation.gps_clip:GPSCLIP",
    "nerf": "geo_models.sds.field:NeRFField",
}
# diffusers-style models (ModelMixin + ConfigMixin) name their class in config.json's "_class_name" instead
DIFFUSERS_CLASS_TYPES: dict[str, str] = {"NeRFField": "nerf"}


def register_model_type(model_type: str, target: str) -> None:
    """Register ``"module:Class"`` under ``model_type`` (for users' own model classes)."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:ClassName', got {target!r}")
    MODEL_TYPES[model_type] = target


def model_class(model_type: str) -> type:
    """The class registered for ``model_type``."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not registered; known: {sorted(MODEL_TYPES)}")
    module_name, _, class_name = MODEL_TYPES[model_type].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def read_config(name_or_path: str | os.PathLike, *, revision: str | None = None, **hub_kwargs) -> dict[str, Any]:
    """``config.json`` of a local folder or Hub repo id."""
    path = Path(name_or_path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"name_or_path: {path} has no config.json (not a saved geo_models model)")
    else:
        config_file = hf_hub_download(str(name_or_path), "config.json", revision=revision, **hub_kwargs)
    return json.loads(Path(config_file).read_text())


def load_model(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs):
    """Load any registered model from a local folder or a Hub repo id, dispatching on its ``model_type``.

    From the Hub, transient failures are retried (see the module docstring); then :class:`HubTransferError`.
    """

    def load():
        config = read_config(name_or_path, revision=revision)
        model_type = config.get("model_type") or DIFFUSERS_CLASS_TYPES.get(config.get("_class_name"))
        if model_type is None:
            raise ValueError(f"name_or_path: config.json of {name_or_path} has no model_type")
        if "model_type" not in config:
            kwargs.setdefault("use_safetensors", True)  # diffusers would fall back to a pickled .bin: never
        return model_class(model_type).from_pretrained(name_or_path, revision=revision, **kwargs)

    return load() if Path(name_or_path).is_dir() else with_retries("pull", str(name_or_path), load)


# ------------------------------------------------------------------------------------- retries, timeouts, errors
HUB_ATTEMPTS = 3  # tries of one push or pull (each may retry single requests inside huggingface_hub)
HUB_BACKOFF_S = 1.0  # wait before the 2nd try; doubles after each
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
_TRANSIENT_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
_IN_RETRY = contextvars.ContextVar("geo_models_hub_in_retry", default=False)
_TIMED_CLIENTS: weakref.WeakSet = weakref.WeakSet()
_T = TypeVar("_T")


class HubTransferError(OSError):
    """A push to or a pull from the Hub that failed on every attempt; the message names the repo and the last cause
    (chained as ``__cause__``)."""


def hub_timeout() -> float | None:
    """Seconds huggingface_hub's untimed HTTP waits get (``GEO_MODELS_HUB_TIMEOUT``, default 60); None: no limit."""
    value = float(os.environ.get("GEO_MODELS_HUB_TIMEOUT") or 60)
    return value if value > 0 else None


def _fill_timeouts(request: httpx2.Request) -> None:
    """httpx request hook: give each wait that has no timeout :func:`hub_timeout` seconds."""
    limit = hub_timeout()
    timeouts = request.extensions.get("timeout")
    if limit is not None and isinstance(timeouts, dict):
        request.extensions["timeout"] = {k: limit if v is None else v for k, v in timeouts.items()}


def _ensure_timeouts() -> None:
    """Hook :func:`_fill_timeouts` into huggingface_hub's shared HTTP client (a new one after ``close_session()``).
    Explicit timeouts (downloads, a user's own client settings) are kept."""
    client = get_session()
    if client not in _TIMED_CLIENTS:
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], _fill_timeouts]}
        _TIMED_CLIENTS.add(client)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a failure a later try may not meet: a 5xx/408/429
    answer, a timeout, a dropped or cut connection, a download that came out short."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _TRANSIENT_ERRORS):
            return True
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return error.response.status_code in TRANSIENT_STATUS
        if isinstance(error, OSError) and "Consistency check failed" in str(error):  # huggingface_hub's size check
            return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def with_retries(action: str, repo_id: str, fn: Callable[..., _T], *args, **kwargs) -> _T:
    """``fn(*args, **kwargs)``, tried up to :data:`HUB_ATTEMPTS` times while it fails with a transient error (see
    :func:`is_transient`), waiting :data:`HUB_BACKOFF_S`, then twice as long, ... in between. A call made inside
    another ``with_retries`` runs once (the outer one retries). Raises :class:`HubTransferError` ("``action``
    ``repo_id`` failed after N attempts: <cause>") when all attempts failed; other errors pass through unchanged."""
    if _IN_RETRY.get():
        return fn(*args, **kwargs)
    token, attempts, delay = _IN_RETRY.set(True), max(1, HUB_ATTEMPTS), HUB_BACKOFF_S
    try:
        for attempt in range(1, attempts + 1):
            _ensure_timeouts()
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                cause = f"{type(err).__name__}: {err}"
                if attempt == attempts:
                    where = f"{action} {repo_id!r} (Hub {constants.ENDPOINT})"
                    raise HubTransferError(f"{where} failed after {attempt} attempts: {cause}") from err
                logger.warning(
                    "%s %r: attempt %d failed (%s); retrying in %.2gs", action, repo_id, attempt, cause, delay
                )
                time.sleep(delay)
                delay *= 2
    finally:
        _IN_RETRY.reset(token)


# ---------------------------------------------------------------------------------------------------- model cards
def card_template(model_type: str) -> str:
    """Text of ``hub_cards/<model_type>.md`` (falls back to ``hub_cards/default.md``)."""
    folder = importlib.resources.files("hub_cards")
    for name in (f"{model_type}.md", "default.md"):
        if folder.joinpath(name).is_file():
            return folder.joinpath(name).read_text(encoding="utf-8")
    raise FileNotFoundError("hub_cards/default.md is missing from the installation")


def render_model_card(
    model_type: str,
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    base_model: str | Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    pipeline_tag: str | None = None,
    metrics: Mapping[str, float] | None = None,
    dataset_name: str = "custom",
    **template_vars: Any,
) -> ModelCard:
    """Model card for a model of ``model_type``: YAML metadata + the ``hub_cards`` template rendered with Jinja.

    ``metrics`` (e.g. ``{"acc_25km": 12.3}``) go to the metadata (names + a model-index entry) and to a table in the
    card. ``template_vars`` are passed to the template (e.g. ``training_data``, ``config``).
    """
    model_name = repo_id.split("/")[-1] if repo_id else model_type
    eval_results = [
        EvalResult(
            task_type="image-geolocation",
            task_name="Image geolocation",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            metric_type=k,
            metric_name=k,
            metric_value=float(v),
        )
        for k, v in (metrics or {}).items()
    ]
    data = ModelCardData(
        license=license,
        library_name=LIBRARY_NAME,
        tags=sorted({LIBRARY_NAME, "geolocation", model_type, *tags}),
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        pipeline_tag=pipeline_tag,
        metrics=list(metrics) if metrics else None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        data,
        template_str=card_template(model_type),
        model_type=model_type,
        model_name=model_name,
        repo_id=repo_id or "path/to/saved_model",
        metrics=dict(metrics or {}),
        **template_vars,
    )


# -------------------------------------------------------------------------------------------- PyTorch model mixin
class GeoModelHubMixin(PyTorchModelHubMixin, library_name=LIBRARY_NAME):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for geo_models' ``nn.Module`` models.

    On top of huggingface_hub's mixin: ``config.json`` carries ``model_type``; weights load strictly from
    safetensors only (never unpickled); the model card is rendered from ``hub_cards/<model_type>.md``, with
    ``model_card_kwargs`` passed to :func:`render_model_card` (e.g. ``metrics=...``, ``datasets=...``).
    """

    model_type: ClassVar[str] = "model"
    card_defaults: ClassVar[dict[str, Any]] = {}

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        config = dict(config if config is not None else (self._hub_mixin_config or {}))
        config["model_type"] = self.model_type
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        return render_model_card(self.model_type, **{**self.card_defaults, **kwargs})

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs) -> str:
        """Upload config, weights and a model card to ``repo_id`` (created if needed) in one commit; returns the
        commit url. Transient failures are retried, then :class:`HubTransferError`."""
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        push = super().push_to_hub
        return with_retries("push to", repo_id, push, repo_id, model_card_kwargs=card_kwargs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a saved folder or a Hub repo id. From the Hub: ``config.json`` is fetched first (a failure
        raises: huggingface_hub's mixin would build the model from default arguments), transient failures are
        retried, then :class:`HubTransferError`."""
        name = str(pretrained_model_name_or_path)
        load = super().from_pretrained
        if Path(name).is_dir():
            return load(name, **kwargs)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "force_download", "token", "local_files_only")
                      if k in kwargs}  # fmt: skip

        def fetch_config_then_load():
            hf_hub_download(name, "config.json", **hub_kwargs)
            return load(name, **kwargs)

        return with_retries("pull", name, fetch_config_then_load)

    def hub_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors written to ``model.safetensors`` (subclasses may leave out what their config rebuilds)."""
        return self.state_dict()

    def load_hub_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Inverse of :meth:`hub_state_dict`; raises ``RuntimeError`` naming missing/unexpected keys."""
        self.load_state_dict(state, strict=strict)

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in self.hub_state_dict().items()}
        save_file(state, str(Path(save_directory) / "model.safetensors"))

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        model = cls(**model_kwargs)
        if Path(model_id).is_dir():
            weights = Path(model_id) / "model.safetensors"
            if not weights.is_file():
                raise ValueError(f"{model_id} has no model.safetensors")
        else:
            weights = hf_hub_download(
                model_id,
                "model.safetensors",
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        model.load_hub_state_dict(load_file(str(weights), device=map_location), strict=strict)
        return model.eval()


def push_folder(folder: str | os.PathLike, repo_id: str, *, commit_message: str = "Upload", **kwargs) -> str:
    """Upload a saved folder (e.g. a diffusers pipeline) to ``repo_id`` in one commit, creating the repo; returns the
    commit url. Transient failures are retried (a commit whose answer was lost is not duplicated: unchanged files
    are skipped), then :class:`HubTransferError`."""
    private = kwargs.pop("private", None)

    def push() -> str:
        api = HfApi()
        rid = api.create_repo(repo_id, exist_ok=True, private=private).repo_id
        return api.upload_folder(repo_id=rid, folder_path=str(folder), commit_message=commit_message, **kwargs)

    return with_retries("push to", repo_id, push)


def pull_folder(
    repo_id: str, *, revision: str | None = None, local_dir: str | os.PathLike | None = None, **hub_kwargs
) -> Path:
    """Download every file of ``repo_id`` (e.g. a diffusers pipeline, then ``Pipeline.from_pretrained(folder)``);
    returns the folder: the cache snapshot, or ``local_dir``. Transient failures are retried, then
    :class:`HubTransferError`. (With the Hub unreachable, huggingface_hub returns a cached snapshot of the revision
    only if its cached file listing shows it complete.)

    ``local_dir`` is filled through a temporary sibling folder that replaces it once the download is complete, so a
    failed pull leaves ``local_dir`` as it was (absent or the previous complete copy), never half-written.
    ``hub_kwargs`` go to ``huggingface_hub.snapshot_download`` (``allow_patterns``, ``cache_dir``, ``token``, ...).
    """
    if local_dir is None:
        return Path(with_retries("pull", repo_id, snapshot_download, repo_id, revision=revision, **hub_kwargs))
    target = Path(local_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        with_retries("pull", repo_id, snapshot_download, repo_id, revision=revision, local_dir=partial, **hub_kwargs)
        _swap_in(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _swap_in(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` by renames (same file system): ``target`` is never a mix of the two."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
