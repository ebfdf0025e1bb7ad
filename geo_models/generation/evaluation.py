"""Metrics of generated images (paper sec. 4.2 Table 1, sec. 4.4 Table 2), as plain functions.

- :func:`clip_score`: text-image alignment, ``max(100 * cos(image, text), 0)`` with an open_clip model (Hessel et
  al.'s CLIPScore with w = 100, torchmetrics' convention); the paper's values are ~18-29 with CLIP ViT-L/14.
- GPS score: :meth:`geo_models.generation.gps_clip.GPSCLIP.gps_score`, ``100 * cos(image, GPS)`` (not clipped).
- :func:`nearest_neighbour_indices`: the "GPS NN" baseline (the training image nearest to the query point).
- :class:`AngleClassifier` + :func:`angle_accuracy`: image -> 10-degree azimuth bin (36 classes), a linear head on
  frozen image features (backbone features, or :func:`colour_features`).
- :func:`generate_images`: seeded, batched generation with a progress bar; :func:`markdown_table`, :func:`image_grid`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from geo_models.sphere import check_latlon, haversine_km

__all__ = [
    "NUM_ANGLE_BINS",
    "AngleClassifier",
    "angle_accuracy",
    "chance_angle_accuracy",
    "clip_score",
    "colour_features",
    "fit_angle_classifier",
    "generate_images",
    "image_grid",
    "markdown_table",
    "nearest_neighbour_indices",
    "paired_difference",
]

NUM_ANGLE_BINS = 36  # 10-degree bins (paper sec. 4.1)
OCTANT_TOLERANCE_DEG = 22.5  # "octant" accuracy: predicted bin centre within +-22.5 degrees (a 45-degree sector)


@torch.no_grad()
def clip_score(backbone, images: Any, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
    """CLIP score of each image with its text: ``max(100 * cos(image_i, text_i), 0)``, ``(N,)`` in [0, 100].

    Args:
        backbone: an :class:`~geo_models.encoders.image.OpenCLIPBackbone` (e.g. ``ViT-L-14``/``openai``).
        images: ``N`` PIL images / paths, or a preprocessed ``(N, 3, S, S)`` tensor.
        texts: ``N`` strings (or one, used for every image).
    """
    if isinstance(texts, str):
        texts = [texts]
    img = F.normalize(backbone.embed_images(images, batch_size=batch_size).float(), dim=-1)
    texts = list(texts) * len(img) if len(texts) == 1 else list(texts)
    if len(texts) != len(img):
        raise ValueError(f"texts: got {len(texts)} texts for {len(img)} images (give 1 or the same number)")
    txt = torch.cat([backbone.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    return (100 * (img * F.normalize(txt.float(), dim=-1)).sum(-1)).clamp(min=0).cpu()


def nearest_neighbour_indices(query_latlon: Any, reference_latlon: Any, *, chunk_size: int = 1024) -> torch.Tensor:
    """Index of the great-circle-nearest reference point for each query: ``(Q, 2)``, ``(R, 2)`` -> ``(Q,)`` long."""
    query = check_latlon(query_latlon, "query_latlon").reshape(-1, 2).double()
    ref = check_latlon(reference_latlon, "reference_latlon").reshape(-1, 2).double()
    if not len(ref):
        raise ValueError("reference_latlon must not be empty")
    out = [
        haversine_km(query[i : i + chunk_size, None], ref[None]).argmin(dim=1)
        for i in range(0, len(query), chunk_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- angles
def colour_features(images: Any, *, size: int = 8) -> torch.Tensor:
    """Images -> ``(N, 3 * size * size)``: the RGB values of the image downsampled to ``size x size`` (in [0, 1])."""
    from geo_models.encoders.image import load_images

    imgs = load_images(images)
    if isinstance(imgs, torch.Tensor):
        raise ValueError("images: colour features need PIL images or file paths, not a preprocessed tensor")
    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255 for im in imgs
    ]
    return torch.from_numpy(np.stack(arrays)).flatten(1)


def _circular_error_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).remainder(360.0)
    return torch.minimum(d, 360.0 - d)


def angle_accuracy(pred_bins: Any, azimuth_deg: Any) -> dict[str, float]:
    """``{"angle_acc", "octant_acc"}`` in percent: the predicted 10-degree bin is the true azimuth's bin
    (``floor(azimuth / 10)``), and the predicted bin's centre is within 22.5 degrees of the true azimuth."""
    pred = torch.as_tensor(pred_bins).long().reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1)
    if len(pred) != len(az) or not len(az):
        raise ValueError(f"pred_bins and azimuth_deg must be non-empty and equally long, got {len(pred)}, {len(az)}")
    true_bins = torch.floor(az.remainder(360.0) / 10).long() % NUM_ANGLE_BINS
    err = _circular_error_deg(pred.double() * 10 + 5, az)
    return {
        "angle_acc": 100 * (pred == true_bins).double().mean().item(),
        "octant_acc": 100 * (err <= OCTANT_TOLERANCE_DEG + 1e-9).double().mean().item(),
    }


def chance_angle_accuracy() -> dict[str, float]:
    """Random guessing: 1/36 of the bins (2.78%, paper Table 2) and 45/360 of the circle (12.5%)."""
    return {"angle_acc": 100 / NUM_ANGLE_BINS, "octant_acc": 100 * 2 * OCTANT_TOLERANCE_DEG / 360}


class AngleClassifier:
    """Image features -> azimuth bin (36 x 10 degrees): standardised features, one linear layer (multinomial
    logistic regression, L2-regularised, fitted by L-BFGS). Targets are smoothed over neighbouring bins (a circular
    Gaussian of ``label_sigma_bins``), which helps with the few views per bin of a landmark collection.

    Attributes: ``mean``, ``std`` ``(D,)``; ``weight`` ``(D, 36)``; ``bias`` ``(36,)``; ``config`` (the features
    it expects, e.g. ``{"features": "colour"}``, saved alongside).
    """

    def __init__(self, *, weight_decay: float = 1e-3, label_sigma_bins: float = 1.0, config: dict | None = None):
        if weight_decay < 0 or label_sigma_bins < 0:
            raise ValueError(f"weight_decay and label_sigma_bins must be >= 0, got {weight_decay}, {label_sigma_bins}")
        self.weight_decay, self.label_sigma_bins = weight_decay, label_sigma_bins
        self.config = dict(config or {})
        self.mean = self.std = self.weight = self.bias = None

    def fit(self, features: Any, azimuth_deg: Any, *, max_iter: int = 200) -> AngleClassifier:
        """Fit on ``features (N, D)`` of real views with their azimuths ``(N,)`` in degrees."""
        x = torch.as_tensor(features, dtype=torch.float32)
        az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
        if x.ndim != 2 or len(x) != len(az) or len(x) < 2 or not torch.isfinite(x).all():
            raise ValueError(f"features must be finite (N >= 2, D) with N azimuths, got {tuple(x.shape)}, {len(az)}")
        if not torch.isfinite(az).all():
            raise ValueError("azimuth_deg must be finite degrees")
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        x = (x - self.mean) / self.std
        bins = torch.floor(az.remainder(360.0) / 10).long() % NUM_ANGLE_BINS
        d = (torch.arange(NUM_ANGLE_BINS)[None] - bins[:, None]).abs()
        d = torch.minimum(d, NUM_ANGLE_BINS - d).float()
        target = F.one_hot(bins, NUM_ANGLE_BINS).float()
        if self.label_sigma_bins > 0:
            target = torch.softmax(-(d**2) / (2 * self.label_sigma_bins**2), dim=1)
        weight = torch.zeros(x.shape[1], NUM_ANGLE_BINS, requires_grad=True)
        bias = torch.zeros(NUM_ANGLE_BINS, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -(target * torch.log_softmax(x @ weight + bias, dim=1)).sum(1).mean()
            loss = loss + self.weight_decay * (weight**2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    @torch.no_grad()
    def predict(self, features: Any) -> torch.Tensor:
        """``(N, D)`` features -> ``(N,)`` predicted bins in [0, 36)."""
        if self.weight is None:
            raise ValueError("this AngleClassifier is not fitted: call fit() or AngleClassifier.load()")
        x = torch.as_tensor(features, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"features must have shape (N, {len(self.mean)}), got {tuple(x.shape)}")
        return (((x - self.mean) / self.std) @ self.weight + self.bias).argmax(dim=1)

    def save(self, directory: str | Path) -> Path:
        """``directory/angle_classifier.safetensors`` + ``angle_classifier.json`` (config)."""
        from safetensors.torch import save_file

        if self.weight is None:
            raise ValueError("this AngleClassifier is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "angle_classifier.safetensors"))
        (directory / "angle_classifier.json").write_text(json.dumps(self.config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AngleClassifier:
        from safetensors.torch import load_file

        directory = Path(directory)
        file = directory / "angle_classifier.safetensors"
        if not file.is_file():
            raise ValueError(f"angle_classifier: {file} not found (save one with AngleClassifier.save)")
        model = cls(config=json.loads((directory / "angle_classifier.json").read_text()))
        state = load_file(str(file))
        model.mean, model.std, model.weight, model.bias = state["mean"], state["std"], state["weight"], state["bias"]
        return model


# ---------------------------------------------------------------------------------------------------- generation
def fit_angle_classifier(
    features: Any, azimuth_deg: Any, *, holdout_fraction: float = 0.2, seed: int = 0, config: dict | None = None
) -> tuple[AngleClassifier, dict[str, float], list[int]]:
    """Paper Table 2's classifier fitted on real views, a seeded ``holdout_fraction`` of them held out as its check.

    Args:
        features: ``(N, D)`` features of the real views; azimuth_deg: their ``N`` azimuths, degrees.
        holdout_fraction: in [0, 1); ``round(fraction * N)`` views (a seeded permutation's first) are held out.
        seed: the permutation's seed. config: the classifier's config (the features it expects).

    Returns:
        ``(classifier, check, held_out)``: the classifier fitted on the other views, :func:`angle_accuracy` on the
        held-out ones (``{}`` when none) and their indices.

    Raises:
        ValueError: fewer than 2 views left to fit.
    """
    n = len(features)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = int(round(holdout_fraction * n))
    test, fit = perm[:n_test], perm[n_test:]
    if len(fit) < 2:
        raise ValueError(f"{len(fit)} views left to fit the classifier (need >= 2)")
    x = torch.as_tensor(features, dtype=torch.float32)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    classifier = AngleClassifier(config=config).fit(x[fit], az[fit])
    check = angle_accuracy(classifier.predict(x[test]), az[test]) if test else {}
    return classifier, check, test


def generate_images(
    pipe,
    prompts: Sequence[str],
    conditions: dict[str, Sequence[float]],
    *,
    num_images_per_pair: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    desc: str = "generating",
    **call_kwargs,
) -> list[Image.Image]:
    """``num_images_per_pair`` images for each of ``P`` (prompt, condition) pairs, pair-major (image ``p * N + k``).

    ``conditions`` are per-pair keyword arguments of ``pipe`` (``{"latitude": [...], "longitude": [...]}`` or
    ``{"azimuth": [...]}``). Image ``p * N + k`` starts from the noise of ``torch.Generator().manual_seed(seed + p * N
    + k)``, whatever the batching, so rows of a table generated with the same seed share their initial noise.
    """
    n = int(num_images_per_pair)
    if n < 1 or int(batch_size) < 1:
        raise ValueError(f"num_images_per_pair and batch_size must be >= 1, got {num_images_per_pair}, {batch_size}")
    if any(len(v) != len(prompts) for v in conditions.values()):
        raise ValueError(f"conditions must have one value per prompt ({len(prompts)}), got {conditions!r}")
    jobs = [(p, k) for p in range(len(prompts)) for k in range(n)]
    images: list[Image.Image] = []
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc, unit="batch"):
        chunk = jobs[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + p * n + k) for p, k in chunk]
        kwargs = {name: [float(values[p]) for p, _ in chunk] for name, values in conditions.items()}
        out = pipe([prompts[p] for p, _ in chunk], generator=generators, output_type="pil", **kwargs, **call_kwargs)
        images.extend(out.images)
    return images


def paired_difference(a: Any, b: Any, *, num_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Paired comparison of per-item scores ``a`` and ``b`` (same items, e.g. the same GPS point and initial noise):
    mean of ``a - b``, its 95% bootstrap interval (``num_resamples`` resamples of the items, seeded), the share of
    items with ``a > b`` and ``n``. An interval above 0 says ``a`` scores higher beyond resampling noise."""
    a, b = torch.as_tensor(a, dtype=torch.float64).reshape(-1), torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"a and b must hold the same number (>= 2) of paired scores, got {a.numel()} and {b.numel()}")
    d = a - b
    g = torch.Generator().manual_seed(seed)
    means = d[torch.randint(0, len(d), (num_resamples, len(d)), generator=g)].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean_diff": d.mean().item(), "ci95_low": low, "ci95_high": high,
            "share_positive": (d > 0).double().mean().item(), "n": len(d)}  # fmt: skip


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows (dicts) -> a markdown table with ``columns`` = ``[(key, header), ...]``; None / NaN show as ``-``."""

    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def image_grid(rows: Sequence[Sequence[Image.Image]], *, cell_size: int = 64) -> Image.Image:
    """A grid image: one row of ``cell_size`` squares per sequence (shorter rows are left blank)."""
    width = max((len(r) for r in rows), default=0)
    if not width:
        raise ValueError("rows must hold at least one image")
    grid = Image.new("RGB", (width * cell_size, len(rows) * cell_size), "white")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid.paste(img.convert("RGB").resize((cell_size, cell_size)), (j * cell_size, i * cell_size))
    return grid
