"""Geolocation and text queries as pure functions: PIL image / text + options -> (figure, table, JSON-able dict).

No Gradio here, so tests call them directly; ``app.py`` wraps them with the UI, limits and error messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from apps.common.candidates import DISTINCT_RADIUS_KM, distinct_places, nearest_shares
from apps.common.geocode import place_names
from apps.common.models import ModelStore, gpu
from apps.common.wording import format_latlon
from apps.common.worldmap import map_figure
from geo_models.checks import check_int, check_number
from geo_models.sphere import haversine_km

# geolocator label -> models it needs
GEOLOCATORS: dict[str, tuple[str, ...]] = {
    "GeoCLIP": ("geoclip",),
    "LocDiff": ("locdiff",),
    "LocDiff-H": ("locdiff", "geoclip"),
    "Sphere flow": ("sphere_flow",),
}
# how a place's score combines the guesses merged into it (apps.common.candidates): probabilities add up
COMBINE = {"GeoCLIP": "sum", "LocDiff": "max", "LocDiff-H": "sum", "Sphere flow": "max"}
OVERSAMPLE = 4  # guesses asked per candidate shown, so that merging near-duplicates still leaves top_k places
SCORE_LABELS = {  # what a score means, in the JSON and the maps' hover texts
    "GeoCLIP": "probability",
    "LocDiff": "share of the model's guesses nearest to this place",
    "LocDiff-H": "probability (within 200 km of LocDiff's samples)",
    "Sphere flow": "log-density (higher is likelier; +2.3 = 10x)",
}
SCORE_COLUMNS = {  # the table's column header (short, so the table fits a phone)
    "GeoCLIP": "probability",
    "LocDiff": "share of guesses",
    "LocDiff-H": "probability",
    "Sphere flow": "log-density",
}
SHARE_RADIUS_KM = 750.0  # LocDiff's own density radius (LocDiffPipeline.predict): farther samples count for no place


MAX_TOP_K = 20
MAX_SAMPLES = 256
MAX_STEPS = 100
MAX_SEED = 2**32 - 1
HEAT_RESOLUTIONS = [1, 2, 3, 5, 10, 15, 20]  # choices of the app (degrees dividing 180)
DENSITY_RESOLUTION_DEG = (1.0, 20.0)  # the flow's heatmap (solved near its samples only: flow_heat_grid); the other
# geolocators' kernel densities are drawn at KERNEL_HEAT_DEG whatever this option
MAX_SAMPLE_STEPS = 64 * 64  # samples x steps of one request: caps what one visitor holds the queue for (~5 s)
TEXT_RESOLUTION_DEG = (2.0, 20.0)


@dataclass
class GeolocateOptions:
    """User options: candidates shown, samples drawn by the generative models, their steps, the density map."""

    top_k: int = 5
    num_samples: int = 32
    num_inference_steps: int = 32
    density_resolution_deg: float = 2.0
    seed: int = 0

    def checked(self) -> GeolocateOptions:
        """The options as ints/floats within their bounds (``ValueError`` naming the option otherwise), so no
        request can overflow a seed or hold the queue for minutes."""
        top_k = check_int(self.top_k, "top_k", 1, MAX_TOP_K)
        samples = check_int(self.num_samples, "num_samples", 1, MAX_SAMPLES)
        steps = check_int(self.num_inference_steps, "num_inference_steps", 1, MAX_STEPS)
        if samples * steps > MAX_SAMPLE_STEPS:
            raise ValueError(
                f"num_samples x num_inference_steps must be <= {MAX_SAMPLE_STEPS} (one request's work), got "
                f"{samples} x {steps} = {samples * steps}: lower one of them"
            )
        low, high = DENSITY_RESOLUTION_DEG
        resolution = check_number(self.density_resolution_deg, "density_resolution_deg", low, high)
        if abs(180 / resolution - round(180 / resolution)) > 1e-6:
            raise ValueError(f"density_resolution_deg must divide 180 (e.g. 1, 2, 3, 5, 10), got {resolution:g}")
        seed = check_int(self.seed, "seed", 0, MAX_SEED)
        return GeolocateOptions(top_k, samples, steps, resolution, seed)


def unavailable(store: ModelStore, geolocator: str) -> str | None:
    """Why ``geolocator`` cannot run (a missing model), or ``None``."""
    if geolocator not in GEOLOCATORS:
        return f"unknown geolocator {geolocator!r}; choose one of {list(GEOLOCATORS)}"
    errors = [store.error(name) for name in GEOLOCATORS[geolocator]]
    return "; ".join(e for e in errors if e) or None


FLOW_HEAT_RADIUS_KM = 1500.0  # the flow's heatmap solves the cells within this distance of one of its samples
MAX_FLOW_HEAT_CELLS = 2500  # and at most this many (the nearest to the samples): ~1 s of solves here
UNGUIDED_ANCHORS = 64  # unguided samples that mark where the heatmap's (unguided) density has its mass


def flow_heat_grid(flow, feats: torch.Tensor, samples: torch.Tensor, resolution_deg: float):
    """The flow's exact log-density on a ``resolution_deg`` grid where it matters: the cells within
    ``FLOW_HEAT_RADIUS_KM`` of one of the answer's samples or of ``UNGUIDED_ANCHORS`` unguided samples (nearest
    first, at most ``MAX_FLOW_HEAT_CELLS``) are solved; the rest stay NaN (not drawn). A full grid is one likelihood
    solve per cell (3 degrees: 7,200 solves, ~20 s here at tolerance 1e-3); the samples show where the mass is
    (bench/README.md "Every geolocator's density": the mass the solved cells hold, against the full grid).
    Tolerance 1e-3: the heatmap is for the eye (cells move by ~3% of the colour range against 1e-4)."""
    from geo_models.sphere.density import DensityGrid, density_grid_points

    lats, lons, pts = density_grid_points(resolution_deg)
    # the heatmap is the unguided density: its own samples (cheap: a few Euler steps, no likelihood) find its modes,
    # which the guided samples of the answer can miss
    unguided = flow.sample(image_embeddings=feats, num_samples=UNGUIDED_ANCHORS, num_inference_steps=16,
                           guidance_scale=0.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    anchors = torch.cat([samples[0], unguided[0]]).double()
    distance = haversine_km(pts[:, None].double(), anchors[None]).min(dim=1).values
    order = torch.argsort(distance)[:MAX_FLOW_HEAT_CELLS]
    solve = order[distance[order] <= FLOW_HEAT_RADIUS_KM]
    if len(solve) == 0:
        solve = order[:1]
    log_density = torch.full((len(pts),), float("nan"))
    log_density[solve] = flow.log_prob(pts[solve][None], image_embeddings=feats, atol=1e-3, rtol=1e-3)[0].float()
    return DensityGrid(lats, lons, log_density.view(1, len(lats), len(lons)))


KERNEL_HEAT_DEG = 3.0  # GeoCLIP / LocDiff / LocDiff-H heatmaps: their kernel densities on a 3-degree grid
KERNEL_HEAT_OVERSAMPLE = 2  # 2 x 2 points per cell: a 60 km kernel still shows on 330 km cells (~0.1 s)
KERNEL_HEAT = {"resolution_deg": KERNEL_HEAT_DEG, "oversample": KERNEL_HEAT_OVERSAMPLE}


def _heat(grid) -> dict:
    return {"values": grid.log_density[0].numpy(), "title": "log-density", "colorscale": "Inferno"}


@gpu(duration=120)
@torch.no_grad()
def _run(store_key: int, image, geolocator: str, opt: GeolocateOptions) -> dict:
    """Run a geolocator on one image -> ``{"candidates" (K, 2), "scores" (K,), "samples" (S, 2)?, "heat"}``: every
    geolocator's density as a heatmap (issue 18): the kernel densities of GeoCLIP, LocDiff and LocDiff-H
    (``geo_models.kernel_density``, kernels fitted on held-out data), the flow's exact likelihood."""
    store = ModelStore.by_key(store_key)
    gen = torch.Generator().manual_seed(int(opt.seed))
    s = max(int(opt.num_samples), int(opt.top_k))
    k = min(OVERSAMPLE * int(opt.top_k), s) if geolocator != "GeoCLIP" else OVERSAMPLE * int(opt.top_k)
    steps = int(opt.num_inference_steps)
    gallery = store.settings.gallery
    out: dict = {}
    if geolocator == "GeoCLIP":
        geoclip = store.get("geoclip")
        feats = geoclip.embed_images([image])
        pred = geoclip.predict(image_embeddings=feats, top_k=k, gallery=gallery)
        out["heat"] = _heat(geoclip.density_grid(image_embeddings=feats, gallery=gallery, **KERNEL_HEAT))
    elif geolocator == "LocDiff":
        locdiff = store.get("locdiff")
        pred = locdiff.predict(images=[image], num_samples=s, num_inference_steps=steps, top_k=k,
                               generator=gen)  # fmt: skip
        out["samples"] = pred.extras["samples"][0]
        samples = pred.extras["samples"].double()  # its density: these samples under its fitted kernel
        mixture = locdiff.kernel.mixture(samples, torch.full(samples.shape[:2], 1.0 / samples.shape[1]))
        out["heat"] = _heat(mixture.grid(KERNEL_HEAT_DEG, KERNEL_HEAT_OVERSAMPLE))
    elif geolocator == "LocDiff-H":
        locdiff, geoclip = store.get("locdiff"), store.get("geoclip")
        feats = locdiff.embed_images([image])
        if feats.shape[-1] != geoclip.embedding_dim:
            raise ValueError(
                f"LocDiff-H needs GeoCLIP and LocDiff on the same backbone: features of {feats.shape[-1]} vs "
                f"{geoclip.embedding_dim} dimensions"
            )
        pred = locdiff.predict_hybrid(geoclip, feats, top_k=k, gallery=gallery, num_samples=s,
                                      num_inference_steps=steps, generator=gen)  # fmt: skip
        samples = pred.extras["locdiff"].extras["samples"]
        out["samples"] = samples[0]
        grid = geoclip.density_grid(image_embeddings=feats, gallery=gallery, prior_latlon=samples,
                                    prior_radius_km=200.0, prior_fallback=True, **KERNEL_HEAT)  # fmt: skip
        out["heat"] = _heat(grid)
    elif geolocator == "Sphere flow":
        flow = store.get("sphere_flow")
        feats = flow.embed_images([image])
        tol = dict(atol=1e-4, rtol=1e-4)
        pred = flow.predict(image_embeddings=feats, num_samples=s, num_inference_steps=steps, top_k=k,
                            generator=gen, **tol)  # fmt: skip
        out["samples"] = pred.extras["samples"][0]
        out["heat"] = _heat(flow_heat_grid(flow, feats, pred.extras["samples"], opt.density_resolution_deg))
    else:
        raise ValueError(f"unknown geolocator {geolocator!r}; choose one of {list(GEOLOCATORS)}")
    out["latlon"], out["candidates"], out["scores"] = pred.latlon[0], pred.candidates[0], pred.scores[0]
    return {key: (v.float().cpu().numpy() if isinstance(v, torch.Tensor) else v) for key, v in out.items()}


def geolocate(
    store: ModelStore,
    image,
    geolocator: str = "GeoCLIP",
    options: GeolocateOptions | None = None,
    true_latlon: tuple[float, float] | None = None,
    on_stage=None,
) -> tuple[object, pd.DataFrame, dict]:
    """Geolocate one PIL image -> (``{"world", "region"}`` plotly maps, candidates table, JSON-able result).

    ``on_stage(fraction, description)``, if given, is called as each stage starts (the model, naming the places,
    drawing the maps): the app's progress indicator. Raises ``ValueError`` with a user-facing message for an unknown
    or unavailable geolocator or bad options.
    """
    stage = on_stage or (lambda fraction, description: None)
    opt = (options or GeolocateOptions()).checked()
    reason = unavailable(store, geolocator)
    if reason:
        raise ValueError(f"{geolocator} is not available: {reason}")
    work = "" if geolocator == "GeoCLIP" else f" ({opt.num_samples} samples x {opt.num_inference_steps} steps)"
    stage(0.1, f"Running {geolocator}{work}")
    res = _run(store.key, image, geolocator, opt)
    stage(0.7, "Merging nearby guesses and naming the places")
    cands, scores, merged = distinct_places(res["candidates"], res["scores"], radius_km=DISTINCT_RADIUS_KM,
                                            combine=COMBINE[geolocator], top_k=opt.top_k)  # fmt: skip
    if geolocator == "LocDiff":  # its ranking score is ~1 for every place of a tight cloud: split the cloud instead
        scores = nearest_shares(cands, res["samples"], radius_km=SHARE_RADIUS_KM)
        order = np.argsort(-scores, kind="stable")
        cands, scores, merged = cands[order], scores[order], merged[order]
    places = place_names(cands)  # the best guess is the top place (what the globe draws): the model's own point
    # estimate, or better when merging near-duplicates gathered more mass elsewhere (GeoCLIP's split gallery points)
    label = SCORE_LABELS[geolocator]
    table = pd.DataFrame({"rank": np.arange(1, len(cands) + 1), "place": places,
                          "coordinates": [format_latlon(a, b) for a, b in cands],
                          SCORE_COLUMNS[geolocator]: scores.round(4)})  # fmt: skip
    records = [
        {"rank": i + 1, "latitude": float(c[0]), "longitude": float(c[1]), "score": float(sc), "place": p,
         "merged_guesses": int(m)}
        for i, (c, sc, p, m) in enumerate(zip(cands, scores, places, merged))
    ]  # fmt: skip
    result = {
        "geolocator": geolocator,
        "score": label,
        "latitude": float(cands[0, 0]),
        "longitude": float(cands[0, 1]),
        "place": places[0],
        "model_point_estimate": {"latitude": float(res["latlon"][0]), "longitude": float(res["latlon"][1])},
        "candidates": records,
        "true_location": None,
        "error_km": None,
        "starter_models": store.uses_starter(),
    }
    if "samples" in res:
        result["samples"] = res["samples"].round(4).tolist()
    if true_latlon is not None:
        true = torch.tensor(true_latlon, dtype=torch.float64)
        dist = haversine_km(torch.from_numpy(cands), true).numpy()
        table["km from photo GPS"] = dist.round(1)
        for rec, d in zip(records, dist):
            rec["distance_km"] = float(d)
        best = torch.tensor([result["latitude"], result["longitude"]], dtype=torch.float64)
        result["true_location"] = {"latitude": float(true_latlon[0]), "longitude": float(true_latlon[1])}
        result["error_km"] = float(haversine_km(best, true))
    labels = [f"#{r['rank']} {r['place']}<br>{label}: {r['score']:.4g}" for r in records]
    drawn = dict(candidates=cands, candidate_labels=labels, samples=res.get("samples"), true_latlon=true_latlon,
                 heat=res.get("heat"))  # fmt: skip
    stage(0.85, "Drawing the maps")
    figures = {view: map_figure(**drawn, view=view) for view in ("world", "region")}
    return figures, table, result


@gpu(duration=60)
@torch.no_grad()
def _text_heatmap(store_key: int, text: str, resolution_deg: float, top_k: int):
    return ModelStore.by_key(store_key).get("geoclip").text_query([text], resolution_deg=resolution_deg, top_k=top_k)


def text_query(
    store: ModelStore, text: str, *, resolution_deg: float = 5.0, top_k: int = 5
) -> tuple[object, pd.DataFrame, dict]:
    """Where does a text belong? GeoCLIP's text tower over a lat/lon grid -> (globe heatmap, table, JSON)."""
    reason = unavailable(store, "GeoCLIP")
    if reason:
        raise ValueError(f"text queries need GeoCLIP: {reason}")
    top_k = check_int(top_k, "top_k", 1, MAX_TOP_K)
    resolution_deg = check_number(resolution_deg, "resolution_deg", *TEXT_RESOLUTION_DEG)
    out = _text_heatmap(store.key, text, resolution_deg, top_k)
    cands, scores = out.candidates[0].double().numpy(), out.scores[0].double().numpy()
    places = place_names(cands)
    table = pd.DataFrame({"rank": np.arange(1, len(cands) + 1), "place": places,
                          "coordinates": [format_latlon(a, b) for a, b in cands],
                          "probability": scores.round(5)})  # fmt: skip
    records = [
        {"rank": i + 1, "latitude": float(c[0]), "longitude": float(c[1]), "score": float(sc), "place": p}
        for i, (c, sc, p) in enumerate(zip(cands, scores, places))
    ]
    heat = {"values": out.heatmap[0].numpy(), "title": "similarity", "colorscale": "Viridis"}
    labels = [f"#{r['rank']} {r['place']}<br>probability: {r['score']:.4g}" for r in records]
    fig = map_figure(candidates=cands, candidate_labels=labels, heat=heat)
    result = {"text": text, "score": "probability over the grid", "resolution_deg": float(resolution_deg),
              "candidates": records, "starter_models": store.uses_starter()}  # fmt: skip
    return fig, table, result
