"""Conversion of the official GeoCLIP release (PyPI ``geoclip`` 1.3.0, MIT) to our :class:`GeoCLIP`.

Two sources: the ``.pth`` files shipped in the PyPI package (read with ``torch.load(weights_only=True)``, never
unpickling code), or a release folder / Hub repo in the official ``from_pretrained`` format (``config.json`` with
``model_type: geoclip-geolocation`` + ``model.safetensors`` + the gallery CSV).
"""

from __future__ import annotations

import json
import re
from os import PathLike
from pathlib import Path

import torch

from geo_models.geoclip.gallery import gallery_from_csv, official_gallery, official_package_dir

OFFICIAL_CONFIG = dict(embedding_dim=768, projection_dim=512, sigmas=(2**0, 2**4, 2**8), num_features=256)
OFFICIAL_CARD = dict(license="mit", base_model="openai/clip-vit-large-patch14", tags=["geoclip", "official-weights"])
_CAPSULE_TO_MLP = {"1": "0", "3": "2", "5": "4"}  # Linear layers inside nn.Sequential(RFF, Linear, ReLU, ...)


def convert_location_encoder_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``LocEnc{i}.capsule.{0.b,1,3,5}`` / ``LocEnc{i}.head.0`` -> our ``branches.{i}.{rff.b,mlp.*,head}``."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"LocEnc(\d+)\.(capsule|head)\.(\d+)\.(b|weight|bias)", key)
        if m is None:
            raise ValueError(f"unexpected key in the official location encoder weights: {key!r}")
        i, part, idx, name = m.groups()
        if part == "head":
            out[f"branches.{i}.head.{name}"] = value
        elif idx == "0":
            out[f"branches.{i}.rff.b"] = value
        else:
            out[f"branches.{i}.mlp.{_CAPSULE_TO_MLP[idx]}.{name}"] = value
    return out


def _package_weights() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    folder = official_package_dir() / "weights"

    def load(name):
        return torch.load(folder / name, map_location="cpu", weights_only=True)

    return (
        load("location_encoder_weights.pth"),
        load("image_encoder_mlp_weights.pth"),
        load("logit_scale_weights.pth"),
        official_gallery(),
    )


def _release_weights(source: str | PathLike, **hub_kwargs):
    from huggingface_hub import snapshot_download
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    if not path.is_dir():
        path = Path(
            snapshot_download(str(source), allow_patterns=["config.json", "*.safetensors", "*.csv"], **hub_kwargs)
        )
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "geoclip-geolocation" or config.get("format_version") != 1:
        raise ValueError(
            f"source: {source} is not an official GeoCLIP release (model_type geoclip-geolocation, format_version 1)"
        )
    gallery_file = str(config.get("gallery_file"))
    if not gallery_file.endswith(".csv") or Path(gallery_file).name != gallery_file:
        raise ValueError(f"source: config.json gallery_file must name a CSV file in the release, got {gallery_file!r}")
    weights = load_file(str(path / "model.safetensors"))
    loc = {k.removeprefix("location_encoder."): v for k, v in weights.items() if k.startswith("location_encoder.")}
    head = {k.removeprefix("image_encoder.mlp."): v for k, v in weights.items() if k.startswith("image_encoder.mlp.")}
    return loc, head, weights["logit_scale"], gallery_from_csv(path / gallery_file)


def official_state(source: str | PathLike | None = None, **hub_kwargs) -> dict[str, torch.Tensor]:
    """The official GeoCLIP weights as a state dict of :class:`~geo_models.geoclip.GeoCLIP` built with
    :data:`OFFICIAL_CONFIG` (location encoder keys converted, image head, logit scale, the official 100K gallery);
    ``GeoCLIP.from_official`` loads it.

    Args:
        source: ``None`` for the files of the ``geoclip`` PyPI package; else an official release folder or Hub id.
    """
    loc, head, logit_scale, gallery = _package_weights() if source is None else _release_weights(source, **hub_kwargs)
    state = {f"location_encoder.{k}": v for k, v in convert_location_encoder_keys(loc).items()}
    state.update({f"image_head.{k}": v for k, v in head.items()})
    state["logit_scale"] = logit_scale.reshape(())
    state["gallery"] = gallery
    return state
