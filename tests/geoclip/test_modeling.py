"""GeoCLIP behaviour on tiny configs: predict inputs and outputs, galleries, cache, prior search, ten-crop, text
queries, input validation, save/load/push, official weights and the official release format."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file, save_file

from geo_models.geoclip import GeoCLIP, fibonacci_gallery, official_gallery
from geo_models.hub import load_model
from geo_models.sphere import haversine_km
from geo_models.testing.tolerances import assert_same_ranking

TINY = dict(embedding_dim=32, projection_dim=16, num_features=16, hidden_dim=32, num_layers=2, backbone="tiny-vit")
GALLERY = torch.tensor(
    [[0.0, 0.0], [48.85, 2.35], [-33.87, 151.21], [40.71, -74.0], [35.68, 139.69], [-22.9, -43.2], [64.1, -21.9]]
)
POINTS = torch.tensor([[0.0, 0.0], [48.85, 2.35], [90.0, 180.0], [-90.0, -180.0], [12.3, -45.6]])


def tiny(**overrides) -> GeoCLIP:
    """A tiny GeoCLIP with non-default weights (so a silent re-initialisation cannot pass a round trip)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GeoCLIP(**{**TINY, **overrides})
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("backbone."):
                    p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def embeddings(n: int, seed: int = 0, dim: int = 32) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def pil_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)) for i in range(n)]


def assert_same_prediction(a, b):
    """The same model object: the same candidates, probabilities within 1e-6."""
    assert torch.equal(a.candidates, b.candidates)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)


def assert_same_loaded_prediction(a, b):
    """A loaded model against the original: loaded weights may run other MKL kernels (geo_models.testing.tolerances),
    so probabilities within 1e-5 and the same candidates but for near-ties."""
    assert_same_ranking(a, b, score_atol=1e-5)


def assert_same_as_top_k(pred, top, gallery):
    """``predict`` (cached gallery embeddings) against a fresh forward + ``topk``: another code path, equal up to
    float32 rounding, so probabilities within 1e-5 and the same candidates but for near-ties."""
    assert_same_ranking(pred, SimpleNamespace(candidates=gallery[top.indices], scores=top.values), score_atol=1e-5)


def assert_same_location_embeddings(a, b):
    """Location embeddings of equal weights, one copy loaded: equal up to float32 rounding (other MKL kernels)."""
    with torch.no_grad():
        torch.testing.assert_close(a.location_encoder(POINTS), b.location_encoder(POINTS), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    return tiny()


# ----------------------------------------------------------------------------------------------------- predict
def test_predict_embeddings_shapes_and_probabilities(model):
    emb = embeddings(3)
    pred = model.predict(image_embeddings=emb, top_k=3, gallery=GALLERY)
    assert pred.latlon.shape == (3, 2) and pred.candidates.shape == (3, 3, 2) and pred.scores.shape == (3, 3)
    assert torch.equal(pred.latlon, pred.candidates[:, 0])
    assert (pred.scores[:, :-1] >= pred.scores[:, 1:]).all()
    # Scores are probabilities over the whole gallery: with top_k = gallery size they sum to one.
    full = model.predict(image_embeddings=emb, top_k=len(GALLERY), gallery=GALLERY)
    torch.testing.assert_close(full.scores.sum(dim=1), torch.ones(3))
    assert torch.equal(full.candidates[:, :3], pred.candidates)
    # ... and they are the softmax of the model's logits.
    with torch.no_grad():
        probs = model(emb, GALLERY).softmax(dim=-1)
    assert_same_as_top_k(pred, probs.topk(3, dim=-1), GALLERY)


def test_predict_from_pil_paths_and_tensor(model, tmp_path):
    images = pil_images(2)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        img.save(paths[-1])
    expected = model.predict(image_embeddings=model.embed_images(images), top_k=2, gallery=GALLERY)
    assert expected.candidates.shape == (2, 2, 2)
    assert_same_prediction(model.predict(images=images, top_k=2, gallery=GALLERY), expected)
    assert_same_prediction(model.predict(images=[str(p) for p in paths], top_k=2, gallery=GALLERY), expected)
    pixels = model.backbone.preprocess_images(images)
    assert pixels.shape == (2, 3, 32, 32)
    assert_same_prediction(model.predict(images=pixels, top_k=2, gallery=GALLERY), expected)
    single = model.predict(images=paths[0], top_k=2, gallery=GALLERY)  # one path, not a list
    assert single.candidates.shape == (1, 2, 2)
    assert torch.equal(single.candidates[0], expected.candidates[0])


# ----------------------------------------------------------------------------------------------------- galleries
def test_gallery_int_is_fibonacci_grid(model):
    pred = model.predict(image_embeddings=embeddings(2), top_k=500, gallery=500)
    grid = fibonacci_gallery(500)
    assert (pred.candidates[..., None, :] == grid).all(-1).any(-1).all()
    torch.testing.assert_close(pred.scores.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("columns", [("lat", "lon"), ("latitude", "longitude"), ("LAT", "LON")])
def test_gallery_csv(model, tmp_path, columns):
    path = tmp_path / "gallery.csv"
    lines = [",".join(("id",) + columns)] + [f"{i},{lat},{lon}" for i, (lat, lon) in enumerate(GALLERY.tolist())]
    path.write_text("\n".join(lines) + "\n")
    emb = embeddings(2)
    assert_same_prediction(
        model.predict(image_embeddings=emb, top_k=4, gallery=path),
        model.predict(image_embeddings=emb, top_k=4, gallery=GALLERY),
    )


def test_gallery_official_and_default(model):
    emb = embeddings(2)
    pred = model.predict(image_embeddings=emb, top_k=3, gallery="official")
    official = official_gallery()
    assert official.shape == (100_000, 2)
    assert (pred.candidates[..., None, :] == official).all(-1).any(-1).all()
    # No gallery saved with the model: the default is the official one.
    assert len(model.gallery) == 0
    assert_same_prediction(model.predict(image_embeddings=emb, top_k=3), pred)


def test_saved_gallery_is_default_and_survives_round_trip(tmp_path):
    model = tiny()
    model.gallery = GALLERY.clone()
    emb = embeddings(3)
    pred = model.predict(image_embeddings=emb, top_k=4)
    assert_same_prediction(pred, model.predict(image_embeddings=emb, top_k=4, gallery=GALLERY))
    model.save_pretrained(tmp_path / "saved")
    loaded = GeoCLIP.from_pretrained(tmp_path / "saved")
    assert torch.equal(loaded.gallery, GALLERY)
    assert_same_loaded_prediction(loaded.predict(image_embeddings=emb, top_k=4), pred)


# ----------------------------------------------------------------------------------------------------- cache
def test_gallery_embeddings_cached_and_invalidated_by_weight_change(monkeypatch):
    model = tiny()
    encoder = model.location_encoder
    calls = []
    forward = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda latlon: calls.append(len(latlon)) or forward(latlon))
    emb = embeddings(2)
    first = model.predict(image_embeddings=emb, top_k=3, gallery=GALLERY)
    assert sum(calls) == len(GALLERY)
    model.predict(image_embeddings=embeddings(4, seed=1), top_k=3, gallery=GALLERY.clone())  # same coordinates
    assert sum(calls) == len(GALLERY)  # not re-encoded

    with torch.no_grad():
        encoder.branches[0].head.bias.add_(1.0)
    changed = model.predict(image_embeddings=emb, top_k=3, gallery=GALLERY)
    assert sum(calls) == 2 * len(GALLERY)  # re-encoded after the in-place change
    assert not torch.allclose(changed.scores, first.scores)
    with torch.no_grad():
        top = model(emb, GALLERY).softmax(dim=-1).topk(3, dim=-1)  # fresh computation, no cache
    assert_same_as_top_k(changed, top, GALLERY)


# ----------------------------------------------------------------------------------------------------- prior search
def test_prior_search_stays_within_radius(model):
    prior, emb = torch.tensor([48.85, 2.35]), embeddings(3)
    pred = model.predict(image_embeddings=emb, top_k=5, gallery=2000, prior_latlon=prior, prior_radius_km=1500)
    assert (haversine_km(pred.candidates, prior) <= 1500).all()
    # The best points of the gallery inside the radius, with probabilities over those points.
    gallery = fibonacci_gallery(2000)
    inside = gallery[haversine_km(gallery, prior) <= 1500]
    with torch.no_grad():
        top = model(emb, inside).softmax(dim=-1).topk(5, dim=-1)
    assert_same_as_top_k(pred, top, inside)


def test_prior_search_per_image_priors(model):
    priors, emb = torch.tensor([[48.85, 2.35], [-33.87, 151.21]]), embeddings(2)
    pred = model.predict(image_embeddings=emb, top_k=3, gallery=2000, prior_latlon=priors, prior_radius_km=800)
    assert (haversine_km(pred.candidates, priors[:, None]) <= 800).all()


def test_prior_radius_without_gallery_point(model):
    with pytest.raises(ValueError, match="prior_radius_km"):
        model.predict(
            image_embeddings=embeddings(1), gallery=GALLERY, top_k=1, prior_latlon=[10.0, 10.0], prior_radius_km=5
        )


# ----------------------------------------------------------------------------------------------------- ten crop
def test_ten_crop(model):
    images = pil_images(2)
    crops = model.predict(images=images, top_k=3, gallery=GALLERY, ten_crop=True)
    single = model.predict(images=images, top_k=3, gallery=GALLERY)
    assert crops.candidates.shape == (2, 3, 2) and crops.scores.shape == (2, 3)
    assert not torch.allclose(crops.scores, single.scores)
    with pytest.raises(ValueError, match="ten_crop"):
        model.predict(image_embeddings=embeddings(1), gallery=GALLERY, ten_crop=True)


# ----------------------------------------------------------------------------------------------------- text query
def test_text_query(model):
    result = model.text_query(["a sandy beach", "snowy mountains", "a busy city"], resolution_deg=10, top_k=4)
    assert result.heatmap.shape == (3, 18, 36)
    assert result.latitudes.shape == (18,) and result.longitudes.shape == (36,)
    assert result.candidates.shape == (3, 4, 2) and result.scores.shape == (3, 4)
    assert (result.candidates[..., 0].abs() <= 90).all() and (result.candidates[..., 1].abs() <= 180).all()
    assert (result.scores.sum(dim=1) <= 1 + 1e-6).all()
    # The best candidate is the hottest cell of the heatmap.
    best = result.heatmap.flatten(1).argmax(dim=1)
    cells = torch.stack([result.latitudes[best // 36], result.longitudes[best % 36]], dim=-1)
    torch.testing.assert_close(result.candidates[:, 0], cells)


# ----------------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_error(model, tmp_path):
    bad_file = tmp_path / "not_an_image.jpg"
    bad_file.write_bytes(b"these bytes are not an image")
    emb = embeddings(2)
    cases = [
        (dict(image_embeddings=emb, gallery=torch.tensor([[100.0, 0.0], [0.0, 0.0]])), "latitude"),
        (dict(image_embeddings=emb, gallery=GALLERY, prior_latlon=[100.0, 0.0], prior_radius_km=100), "prior_latlon"),
        (dict(image_embeddings=torch.full((2, 32), float("nan"))), "image_embeddings"),
        (dict(image_embeddings=torch.zeros(0, 32)), "image_embeddings"),
        (dict(image_embeddings=torch.zeros(2, 31)), "image_embeddings"),
        (dict(images=[str(bad_file)]), "cannot read image"),
        (dict(image_embeddings=emb, gallery=GALLERY, top_k=0), "top_k"),
        (dict(image_embeddings=emb, gallery=GALLERY, top_k=len(GALLERY) + 1), "top_k"),
        (dict(images=pil_images(1), image_embeddings=embeddings(1)), "exactly one"),
        (dict(), "exactly one"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model.predict(**{"gallery": GALLERY, **kwargs})


# ----------------------------------------------------------------------------------------------------- Hub
def test_save_load_with_backbone_leaves_rebuildable_backbone_out(tmp_path):
    model = tiny()
    images = pil_images(2)
    expected = model.predict(images=images, top_k=3, gallery=GALLERY)
    model.save_pretrained(tmp_path / "saved")
    keys = load_file(str(tmp_path / "saved" / "model.safetensors")).keys()
    assert "logit_scale" in keys and not any(k.startswith("backbone.") for k in keys)
    loaded = load_model(tmp_path / "saved")
    assert isinstance(loaded, GeoCLIP)
    assert_same_loaded_prediction(loaded.predict(images=images, top_k=3, gallery=GALLERY), expected)
    # A named open_clip tag is rebuilt from config too (tiny-vit has no tags: pose as ViT-L-14 "openai").
    model.backbone.model_name, model.backbone.pretrained = "ViT-L-14", "openai"
    assert model.backbone_is_rebuilt_from_config()
    assert not any(k.startswith("backbone.") for k in model.hub_state_dict())


def test_finetuned_backbone_is_saved(tmp_path):
    model = tiny()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.mark_backbone_finetuned()
    images = pil_images(2)
    expected = model.predict(images=images, top_k=3, gallery=GALLERY)
    model.save_pretrained(tmp_path / "saved")
    assert any(k.startswith("backbone.") for k in load_file(str(tmp_path / "saved" / "model.safetensors")))
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["backbone_finetuned"] is True
    loaded = GeoCLIP.from_pretrained(tmp_path / "saved")
    assert_same_loaded_prediction(loaded.predict(images=images, top_k=3, gallery=GALLERY), expected)


def test_backbone_from_local_file_is_saved_and_loads_without_the_file(tmp_path):
    weights = tmp_path / "tiny_vit.pt"
    source = tiny()
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(source.backbone.model.state_dict(), weights)
    model = tiny(backbone_pretrained=str(weights))
    images = pil_images(2)
    expected = model.predict(images=images, top_k=3, gallery=GALLERY)
    model.save_pretrained(tmp_path / "saved")
    assert any(k.startswith("backbone.") for k in load_file(str(tmp_path / "saved" / "model.safetensors")))
    weights.unlink()  # e.g. loaded on another machine
    loaded = GeoCLIP.from_pretrained(tmp_path / "saved")
    assert_same_loaded_prediction(loaded.predict(images=images, top_k=3, gallery=GALLERY), expected)


def test_push_to_hub_and_pull(local_hub):
    model = tiny()
    model.gallery = GALLERY.clone()
    model.push_to_hub("tester/tiny-geoclip")
    card = HfApi().model_info("tester/tiny-geoclip").card_data
    assert card["library_name"] == "geo_models" and "geoclip" in card["tags"]
    pulled = GeoCLIP.from_pretrained("tester/tiny-geoclip")
    images = pil_images(2)
    assert_same_loaded_prediction(pulled.predict(images=images, top_k=3), model.predict(images=images, top_k=3))
    assert_same_location_embeddings(pulled, model)


def test_official_weights_round_trip(tmp_path):
    model = GeoCLIP.from_official()
    assert model.backbone is None and model.embedding_dim == 768 and len(model.gallery) == 100_000
    model.save_pretrained(tmp_path / "official")
    loaded = load_model(tmp_path / "official")
    assert isinstance(loaded, GeoCLIP)
    assert torch.equal(loaded.gallery, official_gallery())
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the weights, bit for bit
    assert_same_location_embeddings(loaded, model)


def test_official_location_encoder_with_a_new_image_head_for_other_features():
    """``from_official(embedding_dim=128)``: the official location encoder, temperature and gallery, bit for bit, with
    a seeded new image head for 128-d features (what ``train_geoclip.py --init_from official`` trains on them)."""
    official, model = GeoCLIP.from_official(), GeoCLIP.from_official(embedding_dim=128, seed=3)
    assert model.embedding_dim == 128 and model.image_head[0].in_features == 128
    ours = model.state_dict()
    for key, value in official.state_dict().items():
        if not key.startswith("image_head."):
            assert torch.equal(ours[key], value), key
    again = GeoCLIP.from_official(embedding_dim=128, seed=3)
    assert torch.equal(again.image_head[0].weight, model.image_head[0].weight)
    assert model.predict(image_embeddings=torch.randn(2, 128), top_k=2).candidates.shape == (2, 2, 2)
    with pytest.raises(ValueError, match="embedding_dim"):
        GeoCLIP.from_official(backbone="tiny-vit", embedding_dim=128)


# ----------------------------------------------------------------------------------------------------- release format
def write_fake_release(folder, *, logit_scale=2.0, **config_overrides):
    """An official-format release: config.json + model.safetensors (official key names) + gallery CSV, with the
    package's location encoder, a random image head and a non-default logit scale."""
    from geo_models.geoclip.gallery import official_package_dir

    weights_dir = official_package_dir() / "weights"
    location = torch.load(weights_dir / "location_encoder_weights.pth", map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(3)
    head = {
        "0.weight": torch.randn(768, 768, generator=generator) * 0.03,
        "0.bias": torch.zeros(768),
        "2.weight": torch.randn(512, 768, generator=generator) * 0.03,
        "2.bias": torch.zeros(512),
    }
    state = {f"location_encoder.{k}": v for k, v in location.items()}
    state.update({f"image_encoder.mlp.{k}": v for k, v in head.items()})
    state["logit_scale"] = torch.tensor(logit_scale)
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "g.csv").write_text("LAT,LON\n" + "".join(f"{lat},{lon}\n" for lat, lon in GALLERY.tolist()))
    config = {"model_type": "geoclip-geolocation", "format_version": 1, "gallery_file": "g.csv", "sigma": [1, 16, 256]}
    config.update(config_overrides)
    (folder / "config.json").write_text(json.dumps(config))
    return head


def test_from_official_release_folder(tmp_path):
    head = write_fake_release(tmp_path / "release")
    model = GeoCLIP.from_official(tmp_path / "release")
    assert torch.equal(model.gallery, GALLERY)
    assert model.logit_scale.item() == 2.0
    assert torch.equal(model.image_head[0].weight, head["0.weight"])
    assert torch.equal(model.image_head[2].weight, head["2.weight"])
    assert_same_location_embeddings(model, GeoCLIP.from_official())  # the package's location encoder weights
    pred = model.predict(image_embeddings=embeddings(2, dim=768), top_k=3)  # default gallery: the release's CSV
    assert (pred.candidates[..., None, :] == GALLERY).all(-1).any(-1).all()


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(model_type="geoclip-location-encoder"), "geoclip-geolocation"),
        (dict(format_version=2), "format_version"),
        (dict(gallery_file="../g.csv"), "gallery_file"),
    ],
)
def test_from_official_rejects_other_releases(tmp_path, config, message):
    write_fake_release(tmp_path / "release", **config)
    with pytest.raises(ValueError, match=message):
        GeoCLIP.from_official(tmp_path / "release")


def test_coarse_to_fine_point_estimate_is_an_option_and_the_saved_default(model, tmp_path):
    x = torch.randn(3, model.embedding_dim)
    pred = model.predict(image_embeddings=x, top_k=2, point_estimate="coarse_to_fine")
    assert pred.candidates.shape == (3, 2, 2) and pred.latlon.shape == (3, 2)
    gallery = model.resolve_gallery(None)
    assert all(bool((gallery == p).all(dim=1).any()) for p in pred.latlon)  # a gallery point
    model.set_point_estimate("coarse_to_fine")
    try:
        model.save_pretrained(tmp_path / "m")
        loaded = GeoCLIP.from_pretrained(tmp_path / "m")
        assert loaded.point_estimate == "coarse_to_fine"
        assert torch.equal(loaded.predict(image_embeddings=x, top_k=2).latlon, pred.latlon)
    finally:
        model.set_point_estimate("argmax")
    with pytest.raises(ValueError, match="point_estimate"):
        model.set_point_estimate("mean")
