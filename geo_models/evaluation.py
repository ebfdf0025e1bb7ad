"""Evaluate any geolocator on a geotagged test set: accuracies at 1/25/200/750/2500 km, median error, GeoScore, NLL.

A geolocator is any object with ``predict(images=None, image_embeddings=None, *, top_k, ...) -> GeoPrediction``
(GeoCLIP, LocDiffPipeline, SphereFlowPipeline, the kNN baseline...); models that also have
``log_prob(latlon, image_embeddings=...)`` get the mean negative log-likelihood of the true locations too.

    from geo_models.evaluation import evaluate_geolocation, load_geolocator

    model = load_geolocator("runs/geoclip")
    metrics = evaluate_geolocation(model, "emb_test/", top_k=5, output_json="results.json")

``train/evaluate_geolocation.py`` is the command-line front end of :func:`evaluate_geolocation`.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from geo_models.calibration import CalibrationAccumulator, reliability_plot
from geo_models.data.embeddings import read_embedding_parquet
from geo_models.data.formats import DatasetFormat, dataset_format
from geo_models.data.imagefolder import GeoImageFolder
from geo_models.data.webdataset import GeoWebDataset, expand_shards
from geo_models.io import write_json_atomic, write_text_atomic
from geo_models.sphere import geolocation_metrics, haversine_km

__all__ = [
    "EvaluationInputError",
    "accepts",
    "batch_log_prob",
    "build_predict_kwargs",
    "check_gallery",
    "check_test_data",
    "evaluate_geolocation",
    "iter_batches",
    "load_geolocator",
]

FORMATS = ("embeddings", "imagefolder", "webdataset")
# one batch: (inputs of predict, {"image_embeddings": (B, D)} or {"images": [B images]}; latlon (B, 2); file names)
Batch = tuple[dict[str, Any], torch.Tensor, list[str] | None]


class EvaluationInputError(ValueError):
    """An invalid input of :func:`evaluate_geolocation`: ``argument`` is the name of the argument at fault, and the
    message starts with it (the command line turns it into the flag ``--<argument>``)."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


# ------------------------------------------------------------------------------------------------ input checks
def _check_int(value: Any, name: str, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise EvaluationInputError(name, f"{name} must be an integer >= {low}, got {value!r}")


def check_test_data(test_data: str | os.PathLike) -> DatasetFormat:
    """The format of ``test_data`` (``"embeddings"``, ``"imagefolder"`` or ``"webdataset"``, see
    :func:`~geo_models.data.formats.dataset_format`); raises :class:`EvaluationInputError` when it does not exist,
    is no dataset, or names WebDataset shards that are missing."""
    text = str(test_data)
    if not Path(text).exists() and "{" not in text:
        raise EvaluationInputError("test_data", f"test_data {text} does not exist")
    try:
        fmt = dataset_format(text)
    except ValueError as err:
        raise EvaluationInputError("test_data", f"test_data: {err}") from err
    if fmt == "webdataset":
        try:
            shards = expand_shards(text)
        except ValueError as err:
            raise EvaluationInputError("test_data", f"test_data: {err}") from err
        absent = [s for s in shards if not Path(s).is_file()]
        if absent:
            raise EvaluationInputError("test_data", f"test_data: {len(absent)} shard(s) not found, e.g. {absent[0]}")
    return fmt


def check_gallery(gallery: Any) -> Any:
    """``gallery`` as retrieval models take it: ``None``, ``"official"``, an int N >= 1 (a digit string becomes an
    int), an existing CSV file of latitude,longitude, or a ``(G, 2)`` latlon tensor / array (passed through)."""
    if gallery is None:
        return None
    if isinstance(gallery, str) and gallery.isdigit():
        gallery = int(gallery)
    if isinstance(gallery, bool):
        raise EvaluationInputError("gallery", f"gallery must be 'official', an integer or a CSV path, got {gallery}")
    if isinstance(gallery, int):
        if gallery < 1:
            raise EvaluationInputError("gallery", "gallery N must be >= 1")
        return gallery
    if isinstance(gallery, (str, os.PathLike)):
        if gallery != "official" and not Path(gallery).is_file():
            raise EvaluationInputError(
                "gallery", f"gallery {gallery} is neither 'official', an integer, nor an existing CSV file"
            )
    return gallery


# ------------------------------------------------------------------------------------------------ the model
def accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (explicitly or through ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    return name in params or any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values())


def _check_geolocator(model: Any) -> None:
    if not callable(getattr(model, "predict", None)):
        raise EvaluationInputError("model", f"model: {type(model).__name__} has no predict() (not a geolocator)")


def build_predict_kwargs(
    model: Any,
    *,
    top_k: int = 5,
    batch_size: int = 256,
    ten_crop: bool = False,
    gallery: Any = None,
    predict_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``model.predict``: ``top_k``, ``batch_size`` when predict takes it, ``ten_crop`` and
    ``gallery`` when set, then ``predict_kwargs``. Raises :class:`EvaluationInputError` naming the argument that
    ``model.predict`` cannot take."""
    _check_geolocator(model)
    name = type(model).__name__
    kwargs: dict[str, Any] = {"top_k": top_k}
    if accepts(model.predict, "batch_size"):
        kwargs["batch_size"] = batch_size
    if ten_crop:
        if not accepts(model.predict, "ten_crop"):
            raise EvaluationInputError("ten_crop", f"ten_crop: {name}.predict has no ten_crop option")
        kwargs["ten_crop"] = True
    if gallery is not None:
        if not accepts(model.predict, "gallery"):
            raise EvaluationInputError("gallery", f"gallery: {name}.predict takes no gallery (not a retrieval model)")
        kwargs["gallery"] = gallery
    for key, value in (predict_kwargs or {}).items():
        if not isinstance(key, str) or not accepts(model.predict, key):
            raise EvaluationInputError("predict_kwargs", f"predict_kwargs: {name}.predict has no argument {key!r}")
        kwargs[key] = value
    return kwargs


def _resolve_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _to_device(model: Any, device: torch.device) -> Any:
    if isinstance(model, torch.nn.Module):
        return model.to(device).eval()
    if callable(getattr(model, "to", None)):  # pipelines (LocDiff...): not modules, but they move their parts
        return model.to(device)
    return model


def load_geolocator(
    name_or_path: str | os.PathLike, revision: str | None = None, device: str | torch.device | None = None
) -> Any:
    """A saved geolocator (a folder written by ``save_pretrained`` or a Hub repo id, any registered ``model_type``,
    loaded with :func:`geo_models.hub.load_model`) on ``device`` (default: cuda if available, else cpu), in eval
    mode. Raises :class:`EvaluationInputError` (argument ``model``) when the loaded model has no ``predict``."""
    from geo_models.hub import load_model

    model = _to_device(load_model(name_or_path, revision=revision), _resolve_device(device))
    _check_geolocator(model)
    return model


# ------------------------------------------------------------------------------------------------ data
def iter_batches(
    test_data: str | os.PathLike,
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    num_workers: int = 0,
    data_format: DatasetFormat | None = None,
) -> tuple[int | None, Iterator[Batch]]:
    """``(total, batches)``: the number of samples (None when unknown: WebDataset shards) and an iterator of
    ``(inputs, latlon (B, 2), file_names or None)`` with inputs ``{"image_embeddings": (B, D)}`` (embedding parquet)
    or ``{"images": [B PIL images]}`` (imagefolder, WebDataset), at most ``max_samples`` in all. ``data_format``:
    one of ``FORMATS`` (default: detected with :func:`~geo_models.data.formats.dataset_format`).

    Raises:
        ValueError: from the dataset readers (e.g. a parquet without a ``latitude`` column), when opening it.
    """
    fmt = data_format or dataset_format(test_data)
    if fmt == "embeddings":
        emb, latlon, frame = read_embedding_parquet(test_data)
        names = frame["file_name"].astype(str).tolist() if "file_name" in frame.columns else None
        if max_samples is not None:
            emb, latlon = emb[:max_samples], latlon[:max_samples]
            names = names[:max_samples] if names is not None else None

        def embedding_batches() -> Iterator[Batch]:
            for s in range(0, len(emb), batch_size):
                e = s + batch_size
                yield {"image_embeddings": emb[s:e]}, latlon[s:e], names[s:e] if names is not None else None

        return len(emb), embedding_batches()
    if fmt == "imagefolder":
        dataset = GeoImageFolder(test_data)
        total = len(dataset) if max_samples is None else min(max_samples, len(dataset))
        items = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, range(total)),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=list,
        )
    elif fmt == "webdataset":
        total = max_samples  # unknown length (at most max_samples)
        stream = itertools.islice(iter(GeoWebDataset(str(test_data), split_by_node=False)), max_samples)
        items = iter(lambda: list(itertools.islice(stream, batch_size)), [])
    else:
        raise ValueError(f"data_format must be one of {FORMATS}, got {data_format!r}")

    def image_batches() -> Iterator[Batch]:
        for batch in items:
            yield (
                {"images": [b["image"] for b in batch]},
                torch.stack([b["latlon"] for b in batch]),
                [str(b["file_name"]) for b in batch],
            )

    return total, image_batches()


def batch_log_prob(model, inputs: dict[str, Any], latlon: torch.Tensor) -> torch.Tensor | None:
    """Per-image log-density (nats) of the true ``latlon (B, 2)``, or None when it cannot be computed for these inputs.

    Called with gradients enabled (exact likelihoods of flow models take Jacobian traces with autograd)."""
    if "image_embeddings" in inputs:
        return model.log_prob(latlon, image_embeddings=inputs["image_embeddings"].to(latlon.device))
    if accepts(model.log_prob, "images"):
        return model.log_prob(latlon, images=inputs["images"])
    if callable(getattr(model, "embed_images", None)):
        with torch.no_grad():
            embeddings = model.embed_images(inputs["images"])
        return model.log_prob(latlon, image_embeddings=embeddings)
    return None


def batch_density_samples(model, inputs: dict[str, Any], latlon: torch.Tensor, num_samples: int):
    """``(log-density of the true latlon (B,), log-densities of num_samples of the model's own samples (B, S))``
    for one batch, or None when the model cannot give them (the inputs of
    :meth:`~geo_models.calibration.CalibrationAccumulator.add_samples`).

    A kernel-density model (GeoCLIP, kNN, LocDiff) builds its mixture once and samples it; the sphere flow samples
    without guidance (its density is the unguided model's) and solves its likelihood at the samples and the truth."""
    feats = inputs.get("image_embeddings")
    if feats is None and callable(getattr(model, "embed_images", None)):
        with torch.no_grad():
            feats = model.embed_images(inputs["images"])
    if feats is None:
        return None
    feats = feats.to(latlon.device)
    generator = torch.Generator().manual_seed(0)
    if callable(getattr(model, "density_mixture", None)):
        mixture = model.density_mixture(image_embeddings=feats)
        samples = mixture.sample(num_samples, generator=generator)
        return mixture.log_prob(latlon.cpu()).float(), mixture.log_prob(samples).float()
    if callable(getattr(model, "sample", None)) and callable(getattr(model, "log_prob", None)):
        with torch.no_grad():
            samples = model.sample(image_embeddings=feats, num_samples=num_samples, guidance_scale=0.0,
                                   generator=generator)  # fmt: skip
        true_lp = model.log_prob(latlon, image_embeddings=feats).detach().float().cpu()
        return true_lp, model.log_prob(samples, image_embeddings=feats).detach().float().cpu()
    return None


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_geolocation(
    model: Any,
    test_data: str | os.PathLike,
    *,
    top_k: int = 5,
    batch_size: int = 256,
    ten_crop: bool = False,
    gallery: Any = None,
    max_samples: int | None = None,
    skip_nll: bool = False,
    predict_kwargs: Mapping[str, Any] | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    output_json: str | os.PathLike | None = None,
    per_image_csv: str | os.PathLike | None = None,
    progress: bool = True,
    calibration: bool = False,
    calibration_samples: int = 256,
    reliability_png: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Geolocate every sample of a geotagged test set with ``model`` and score the predictions.

    Args:
        model: a loaded geolocator, any object with ``predict(images=None, image_embeddings=None, *, top_k, ...)
            -> GeoPrediction`` (e.g. from :func:`load_geolocator`). It is moved to ``device`` (``.to(device)``, and
            ``.eval()`` for ``torch.nn.Module`` models, in place for modules).
        test_data: an embedding dataset (a ``.parquet`` file or a folder of them with ``embedding``, ``latitude``,
            ``longitude``, optional ``file_name``; rows go to ``predict(image_embeddings=...)``), a geotagged
            imagefolder (``metadata.csv`` / ``metadata.jsonl``) or WebDataset shards (a ``.tar``, a folder of them
            or a brace pattern ``shards-{000..009}.tar``; images go to ``predict(images=...)``, the model needs a
            backbone).
        top_k: candidates per image (kept in the per-image CSV).
        batch_size: images (or embeddings) per ``predict`` call (also passed to ``predict`` when it takes it).
        ten_crop: ten-crop test-time augmentation (image datasets and models whose predict has ``ten_crop``).
        gallery: for retrieval models: ``"official"``, an int N (Fibonacci grid of N points), a CSV of
            latitude,longitude or a ``(G, 2)`` latlon tensor.
        max_samples: evaluate only the first N samples.
        skip_nll: do not compute the NLL even if the model has ``log_prob``.
        predict_kwargs: extra keyword arguments of ``model.predict`` (any values, e.g. a ``torch.Generator``).
        num_workers: image-loading workers (imagefolder only).
        device: torch device (default: cuda if available, else cpu).
        output_json: if given, the metrics are written there as JSON (atomically; folders are created).
        per_image_csv: if given, a per-image CSV is written there (atomically): ``file_name`` when known, true and
            predicted latitude/longitude, ``error_km``, ``candidates`` (the top-k as a JSON string), ``nll`` when
            computed.
        progress: show a progress bar.
        calibration: also score the model's density (models with ``density_grid``: every geolocator of the
            project): NLL, coverage of its 50/90/95% highest-density regions and their median areas
            (:mod:`geo_models.calibration`), the regions found from ``calibration_samples`` of the model's own
            samples per image (for the sphere flow: that many likelihood solves per image).
        reliability_png: where the reliability plot goes (default: ``<output_json stem>.reliability.png`` when
            ``calibration`` and ``output_json`` are given).

    Returns:
        ``{"n", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"}`` (accuracies
        in percent, median error in km, mean GeoScore), plus ``"nll"`` (mean negative log-likelihood of the true
        locations, nats) when the model has ``log_prob`` and ``skip_nll`` is false (and it can be computed for the
        data: a model whose ``log_prob`` needs embeddings and that cannot embed images gets none on image data).

    Raises:
        EvaluationInputError: (a ``ValueError``) for invalid inputs, its message starting with the argument's name:
            e.g. ``"predict_kwargs: SphereFlowPipeline.predict has no argument 'x'"``, ``"ten_crop needs images
            ..."``, ``"test_data ...: no samples"``; a ``ValueError`` of ``model.predict`` is re-raised as one of
            argument ``model``.

    Example:
        >>> from geo_models.evaluation import evaluate_geolocation, load_geolocator
        >>> model = load_geolocator("runs/flow")  # doctest: +SKIP
        >>> metrics = evaluate_geolocation(  # doctest: +SKIP
        ...     model, "emb_test/", top_k=1, output_json="eval.json", per_image_csv="eval.per_image.csv",
        ...     predict_kwargs={"num_samples": 16, "generator": torch.Generator().manual_seed(0)},
        ... )
        >>> metrics["acc_25km"], metrics["nll"]  # doctest: +SKIP
    """
    # 1. Inputs (all before loading any data)
    _check_int(top_k, "top_k", 1)
    _check_int(batch_size, "batch_size", 1)
    _check_int(max_samples, "max_samples", 1)
    _check_int(num_workers, "num_workers", 0)
    if predict_kwargs is not None and not isinstance(predict_kwargs, Mapping):
        raise EvaluationInputError(
            "predict_kwargs", f"predict_kwargs must be a dict, got {type(predict_kwargs).__name__}"
        )
    fmt = check_test_data(test_data)
    if ten_crop and fmt == "embeddings":
        raise EvaluationInputError(
            "ten_crop", "ten_crop needs images (an imagefolder or WebDataset), not precomputed embeddings"
        )
    gallery = check_gallery(gallery)
    kwargs = build_predict_kwargs(
        model, top_k=top_k, batch_size=batch_size, ten_crop=ten_crop, gallery=gallery, predict_kwargs=predict_kwargs
    )
    device = _resolve_device(device)
    model = _to_device(model, device)
    name = type(model).__name__
    want_nll = callable(getattr(model, "log_prob", None)) and not skip_nll
    if calibration and not callable(getattr(model, "density_grid", None)):
        raise EvaluationInputError("calibration", f"calibration: {name} has no density_grid (no density to score)")
    if calibration:
        _check_int(calibration_samples, "calibration_samples", 16)
    accumulator = CalibrationAccumulator() if calibration else None

    # 2. Predict (and log-densities), batch by batch
    try:
        total, batches = iter_batches(
            test_data, batch_size=batch_size, max_samples=max_samples, num_workers=num_workers, data_format=fmt
        )
    except ValueError as err:
        raise EvaluationInputError("test_data", f"test_data {test_data}: {err}") from err
    preds, trues, candidates, names, nlls = [], [], [], [], []
    nll_ok = want_nll
    bar = tqdm(total=total, desc=f"evaluating on {Path(test_data).name}", unit="image", disable=not progress)
    with bar:
        for inputs, latlon, file_names in batches:
            try:
                with torch.no_grad():
                    pred = model.predict(**inputs, **kwargs)
            except ValueError as err:
                raise EvaluationInputError(
                    "model", f"model: {name} cannot evaluate test_data {test_data}: {err}"
                ) from err
            if len(pred) != len(latlon):
                raise RuntimeError(f"{name}.predict returned {len(pred)} rows for {len(latlon)} inputs")
            preds.append(pred.latlon.detach().float().cpu())
            trues.append(latlon.float())
            candidates.extend(json.dumps(r) for r in pred.to_records())
            names.extend(file_names if file_names is not None else [None] * len(latlon))
            lp = None
            if accumulator is not None:
                found = batch_density_samples(model, inputs, latlon.to(device), calibration_samples)
                if found is None:
                    raise EvaluationInputError("calibration", f"calibration: {name} cannot embed these images")
                accumulator.add_samples(found[1], found[0])
                lp = found[0]  # the truth's log-densities: the NLL's too (a LocDiff density samples again otherwise)
            if nll_ok:
                lp = batch_log_prob(model, inputs, latlon.to(device)) if lp is None else lp
                if lp is None:
                    warnings.warn(f"{name}.log_prob needs image_embeddings; no nll for image data", stacklevel=2)
                    nll_ok = False
                else:
                    nlls.append(-lp.detach().double().cpu().reshape(-1))
            bar.update(len(latlon))
    if not preds:
        raise EvaluationInputError("test_data", f"test_data {test_data}: no samples")

    # 3. Metrics and files
    pred_latlon, true_latlon = torch.cat(preds), torch.cat(trues)
    metrics: dict[str, float] = geolocation_metrics(pred_latlon, true_latlon)
    nll = torch.cat(nlls) if nll_ok else None
    if nll is not None:
        metrics["nll"] = float(nll.mean())
    if accumulator is not None:
        scored = accumulator.metrics()
        metrics.setdefault("nll", scored.pop("nll"))  # the same log-densities (the flow's: the same solves)
        metrics.update({k: v for k, v in scored.items() if k != "nll"})
        if reliability_png is None and output_json is not None:
            reliability_png = Path(output_json).with_name(f"{Path(output_json).stem}.reliability.png")
        if reliability_png is not None:
            reliability_plot({name: accumulator.reliability()}, reliability_png, title=f"{name}: coverage")
    if output_json is not None:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_json, metrics)
    if per_image_csv is not None:
        rows: dict[str, list] = {}
        if any(n is not None for n in names):
            rows["file_name"] = names
        rows.update(
            true_latitude=true_latlon[:, 0].tolist(),
            true_longitude=true_latlon[:, 1].tolist(),
            pred_latitude=pred_latlon[:, 0].tolist(),
            pred_longitude=pred_latlon[:, 1].tolist(),
            error_km=haversine_km(pred_latlon, true_latlon).tolist(),
            candidates=candidates,
        )
        if nll is not None:
            rows["nll"] = nll.tolist()
        Path(per_image_csv).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(per_image_csv, pd.DataFrame(rows).to_csv(index=False))
    return metrics
