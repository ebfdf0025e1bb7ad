"""Hugging Face Hub integration: model-type registry, push/pull helpers, model cards from ``hub_cards/``.

Every model saves ``config.json`` (constructor keyword arguments + ``model_type``) and ``model.safetensors``. The
``model_type`` tells :func:`load_model` which class to build, so ``load_model("user/repo")`` works for any of them.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, PyTorchModelHubMixin, hf_hub_download
from safetensors.torch import load_file, save_file

LIBRARY_NAME = "geo_models"

# model_type -> "module:Class". Explicit (reading it tells which code runs) and lazy (no heavy imports here).
MODEL_TYPES: dict[str, str] = {
    "location_encoder": "geo_models.encoders.location:LocationEncoder",
    "geoclip": "geo_models.geoclip.modeling:GeoCLIP",
    "knn": "geo_models.baselines:KNNGeolocator",
    "locdiff": "geo_models.locdiff.pipeline:LocDiffPipeline",
    "sphere_flow": "geo_models.flow.pipeline:SphereFlowPipeline",
    "gps_clip": "geo_models.generation.gps_clip:GPSCLIP",
}


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
    """Load any registered model from a local folder or a Hub repo id, dispatching on its ``model_type``."""
    config = read_config(name_or_path, revision=revision)
    if "model_type" not in config:
        raise ValueError(f"name_or_path: config.json of {name_or_path} has no model_type")
    return model_class(config["model_type"]).from_pretrained(name_or_path, revision=revision, **kwargs)


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
        """Upload config, weights and a model card to ``repo_id`` (created if needed); returns the commit url."""
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

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
    """Upload a saved folder (e.g. a diffusers pipeline) to ``repo_id``, creating the repo; returns the commit url."""
    api = HfApi()
    repo_id = api.create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None)).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, **kwargs)
