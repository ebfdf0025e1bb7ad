"""The geolocation app's pure functions on tiny untrained models: figure, table and JSON for every geolocator."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from apps.geolocate.inference import GEOLOCATORS, GeolocateOptions, geolocate, text_query


@pytest.mark.parametrize("geolocator", list(GEOLOCATORS))
def test_geolocate_every_geolocator(store, photo_path, geolocator):
    opts = GeolocateOptions(top_k=3, num_samples=8, num_inference_steps=4, density_resolution_deg=20.0)
    maps, table, result = geolocate(store, Image.open(photo_path).convert("RGB"), geolocator, opts,
                                    true_latlon=(48.8566, 2.3522))  # fmt: skip
    fig = maps["world"]
    assert len(table) == 3 and list(table.columns[:3]) == ["rank", "place", "coordinates"]
    assert all(t.endswith((" E", " W")) and ("° N" in t or "° S" in t) for t in table["coordinates"])  # hemispheres
    assert "km from photo GPS" in table.columns
    json.dumps(result)
    assert result["geolocator"] == geolocator and len(result["candidates"]) == 3 and result["error_km"] >= 0
    assert all(isinstance(c["place"], str) and c["place"] for c in result["candidates"])
    names = {t.name for t in fig.data}
    assert {"coastlines", "candidates", "best guess", "photo GPS"} <= names
    assert ("samples" in names) == (geolocator != "GeoCLIP") == ("samples" in result)
    assert fig.data[0].type == "heatmap"  # every density as a heatmap (issue 18): kernels at 3 degrees
    assert fig.data[0].dx == (20.0 if geolocator == "Sphere flow" else 3.0)
    assert len(fig.to_json()) + len(maps["region"].to_json()) < 300_000  # both maps: light (the globe was 1.16 MB)
    lat0, lat1 = maps["region"].layout.yaxis.range  # the regional view holds the best guess and the truth
    assert lat0 <= result["latitude"] <= lat1 and lat0 <= 48.8566 <= lat1


def test_geolocate_without_gps_and_bad_options(store):
    image = Image.new("RGB", (40, 30), "green")
    _, table, result = geolocate(store, image, "GeoCLIP")
    assert result["true_location"] is None and "km from photo GPS" not in table.columns
    with pytest.raises(ValueError, match="top_k"):
        geolocate(store, image, "GeoCLIP", GeolocateOptions(top_k=0))
    with pytest.raises(ValueError, match="unknown geolocator"):
        geolocate(store, image, "Magic")


def test_text_query_heatmap(store):
    fig, table, result = text_query(store, "a sandy beach", resolution_deg=10, top_k=4)
    assert len(table) == 4 and len(result["candidates"]) == 4
    assert fig.data[0].type == "heatmap" and fig.data[0].showscale
    assert sum(c["score"] for c in result["candidates"]) <= 1.0
    with pytest.raises(ValueError, match="resolution_deg"):
        text_query(store, "x", resolution_deg=0.1)


@pytest.mark.parametrize("geolocator", list(GEOLOCATORS))
def test_candidate_rows_are_distinct_places(store, photo_path, geolocator):
    """No two candidate rows within 25 km (issue 17): near-duplicate guesses are merged, with merged_guesses."""
    import torch

    from geo_models.sphere import haversine_km

    opts = GeolocateOptions(top_k=5, num_samples=32, num_inference_steps=4, density_resolution_deg=20.0)
    _, table, result = geolocate(store, Image.open(photo_path).convert("RGB"), geolocator, opts)
    latlon = torch.tensor([[c["latitude"], c["longitude"]] for c in result["candidates"]], dtype=torch.float64)
    d = haversine_km(latlon[:, None], latlon[None])
    assert bool((d[~torch.eye(len(latlon), dtype=torch.bool)] > 25.0).all())
    assert 1 <= len(table) <= 5 and all(c["merged_guesses"] >= 1 for c in result["candidates"])


def test_locdiff_scores_are_shares_that_tell_places_apart(store, photo_path):
    """LocDiff's rows show the share of its samples nearest each place: ranked, summing to <= 1, never all 1.0."""
    opts = GeolocateOptions(top_k=5, num_samples=64, num_inference_steps=4, density_resolution_deg=20.0)
    stages = []
    _, table, result = geolocate(store, Image.open(photo_path).convert("RGB"), "LocDiff", opts,
                                 on_stage=lambda f, d: stages.append((f, d)))  # fmt: skip
    scores = [c["score"] for c in result["candidates"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
    assert len(scores) == 1 or scores[-1] < 1.0
    assert "share of guesses" in table.columns
    assert [f for f, _ in stages] == sorted(f for f, _ in stages) and len(stages) == 3  # real stages, in order
    assert stages[0][1].startswith("Running LocDiff (64 samples x 4 steps)")


def test_compare_runs_every_geolocator_with_its_region(store, photo_path):
    """Compare mode (issue 18): one row per geolocator with a positive 90% region, and on the map an outline and a
    best-guess marker for each."""
    from apps.geolocate.compare import compare

    opts = GeolocateOptions(top_k=3, num_samples=8, num_inference_steps=4, density_resolution_deg=20.0)
    fig, table, result = compare(store, Image.open(photo_path).convert("RGB"), opts, true_latlon=(48.8566, 2.3522))
    assert list(table["geolocator"]) == list(GEOLOCATORS) and len(result["compare"]) == 4
    assert all(r["region_90_km2"] > 0 and r["error_km"] >= 0 for r in result["compare"])
    names = {t.name for t in fig.data}
    assert all(f"{g}: 90% region" in names and f"{g}: best guess" in names for g in GEOLOCATORS)
    json.dumps(result)
    assert len(fig.to_json()) < 300_000


def test_flow_heatmap_is_solved_near_the_samples_only(store):
    """The flow's heatmap solves the cells within 1,500 km of its samples (and of its own unguided samples; the rest
    NaN, not drawn), with the values of the full grid there (issue 18: a full 3-degree grid is 7,200 solves)."""
    import torch

    from apps.geolocate.inference import FLOW_HEAT_RADIUS_KM, flow_heat_grid
    from geo_models.sphere import haversine_km
    from geo_models.sphere.density import density_grid_points

    flow = store.get("sphere_flow")
    feats = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    samples = torch.tensor([[[48.85, 2.35], [45.76, 4.84]]])
    grid = flow_heat_grid(flow, feats, samples, 10.0)
    solved = ~torch.isnan(grid.log_density[0].flatten())
    _, _, pts = density_grid_points(10.0)
    near = haversine_km(pts[:, None].double(), samples[0][None].double()).min(dim=1).values <= FLOW_HEAT_RADIUS_KM
    assert bool((solved | ~near).all()) and 0 < int(solved.sum()) < len(pts)
    full = flow.density_grid(image_embeddings=feats, resolution_deg=10.0, atol=1e-3, rtol=1e-3).log_density[0]
    diff = (grid.log_density[0].flatten()[solved] - full.flatten()[solved]).abs()
    assert float(diff.max()) < 0.3  # tolerance-1e-3 solves; an adaptive batch takes the steps of its hardest row
