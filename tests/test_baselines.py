import pytest
import torch

from geo_models import GeoPrediction
from geo_models.baselines import KNNGeolocator, medoid
from geo_models.hub import load_model, read_config
from geo_models.sphere import haversine_km
from geo_models.testing.tolerances import assert_same_ranking

LATLON = torch.tensor([[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21], [35.68, 139.69], [-22.91, -43.17]])


def fitted(n: int = 5, d: int = 8, seed: int = 0) -> tuple[KNNGeolocator, torch.Tensor]:
    emb = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return KNNGeolocator(embedding_dim=d).fit(emb, LATLON[:n]), emb


def test_query_equal_to_training_embedding_returns_its_location():
    knn, emb = fitted()
    pred = knn.predict(image_embeddings=emb * 3.0, top_k=3)  # any norm: cosine similarity
    assert isinstance(pred, GeoPrediction)
    assert pred.latlon.shape == (5, 2) and pred.candidates.shape == (5, 3, 2) and pred.scores.shape == (5, 3)
    assert torch.equal(pred.latlon, LATLON)
    assert torch.equal(pred.candidates[:, 0], LATLON)
    assert torch.equal(pred.extras["indices"][:, 0], torch.arange(5))
    torch.testing.assert_close(pred.extras["similarities"][:, 0], torch.ones(5))
    # scores: softmax of similarity / temperature over the top_k candidates, best first
    torch.testing.assert_close(pred.scores.sum(-1), torch.ones(5))
    assert (pred.scores[:, :-1] >= pred.scores[:, 1:]).all()
    torch.testing.assert_close(pred.scores, (pred.extras["similarities"] / knn.temperature).softmax(-1))


def test_hand_made_neighbours_and_batching():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    knn = KNNGeolocator(embedding_dim=2).fit(emb, LATLON[:3])
    query = torch.tensor([[0.9, 0.2], [0.1, 1.0], [-1.0, -0.1], [0.6, 0.8]])
    one = knn.predict(image_embeddings=query, top_k=2, batch_size=1)
    assert torch.equal(one.extras["indices"], torch.tensor([[0, 1], [1, 0], [2, 1], [1, 0]]))
    full = knn.predict(image_embeddings=query, top_k=2)
    assert torch.equal(one.candidates, full.candidates) and torch.allclose(one.scores, full.scores)


def test_medoid_aggregation():
    # five neighbours: the nearest is an outlier in Sydney, the next four cluster in Europe
    memory = torch.tensor([[-33.87, 151.21], [48.85, 2.35], [50.85, 4.35], [52.37, 4.90], [51.51, -0.13]])
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    knn = KNNGeolocator(embedding_dim=2).fit(emb, memory)
    query = torch.tensor([[1.0, 0.0]])
    assert torch.equal(knn.predict(image_embeddings=query, top_k=5).latlon, memory[:1])  # default: top-1
    med = knn.predict(image_embeddings=query, top_k=5, aggregate="medoid")  # k defaults to top_k
    d = haversine_km(memory[:, None], memory[None]).sum(-1)
    assert torch.equal(med.latlon, memory[d.argmin()][None]) and not torch.equal(med.latlon, memory[:1])
    assert torch.equal(med.candidates[0], memory)  # candidates do not depend on the aggregation
    # k neighbours of the medoid can differ from top_k candidates; medoid of two points: the nearer one (tie)
    assert torch.equal(knn.predict(image_embeddings=query, top_k=1, aggregate="medoid", k=2).latlon, memory[:1])
    assert knn.predict(image_embeddings=query, top_k=1, aggregate="medoid", k=4).candidates.shape == (1, 1, 2)
    # config k > 1 makes the medoid the default
    knn5 = KNNGeolocator(embedding_dim=2, k=5).fit(emb, memory)
    assert torch.equal(knn5.predict(image_embeddings=query, top_k=2).latlon, med.latlon)
    assert torch.equal(knn5.predict(image_embeddings=query, top_k=2, aggregate="top1").latlon, memory[:1])
    pts = torch.tensor([[[0.0, 0.0], [0.0, 10.0], [0.0, 11.0]]])
    assert torch.equal(medoid(pts), torch.tensor([[0.0, 10.0]]))


def test_save_load_round_trip(tmp_path):
    knn, emb = fitted(seed=1)
    knn.save_pretrained(tmp_path)
    assert read_config(tmp_path) == {"embedding_dim": 8, "k": 1, "temperature": 0.07, "density_kernel": None,
                                     "model_type": "knn"}  # fmt: skip
    loaded = load_model(tmp_path)
    assert isinstance(loaded, KNNGeolocator) and len(loaded) == 5
    assert torch.equal(loaded.memory_latlon, knn.memory_latlon)
    assert torch.equal(loaded.memory_embeddings, knn.memory_embeddings)
    a, b = knn.predict(image_embeddings=emb, top_k=4), loaded.predict(image_embeddings=emb, top_k=4)
    # the loaded memory may run other MKL kernels: softmax scores equal up to float32 rounding (/ temperature 0.07)
    assert_same_ranking(a, b, score_atol=1e-5)
    # an unfitted model round-trips too (empty memory), and refuses to predict
    KNNGeolocator(embedding_dim=8, k=3).save_pretrained(tmp_path / "empty")
    empty = load_model(tmp_path / "empty")
    assert len(empty) == 0 and empty.k == 3
    with pytest.raises(ValueError, match="fit"):
        empty.predict(image_embeddings=emb)


def test_load_rejects_mismatching_weights():
    knn = KNNGeolocator(embedding_dim=4)
    with pytest.raises(RuntimeError, match="memory_latlon"):
        knn.load_hub_state_dict({"memory_embeddings": torch.zeros(3, 4)})
    with pytest.raises(RuntimeError, match=r"\(M, 4\)"):
        knn.load_hub_state_dict({"memory_embeddings": torch.zeros(3, 5), "memory_latlon": torch.zeros(3, 2)})


def test_validation_errors():
    knn, emb = fitted()
    with pytest.raises(ValueError, match="embedding_dim"):
        KNNGeolocator(embedding_dim=0)
    with pytest.raises(ValueError, match="k must"):
        KNNGeolocator(k=0)
    with pytest.raises(ValueError, match="temperature"):
        KNNGeolocator(temperature=0.0)
    with pytest.raises(ValueError, match="images.*embed"):
        knn.predict(images=[object()])
    with pytest.raises(ValueError, match="image_embeddings"):
        knn.predict()
    with pytest.raises(ValueError, match=r"image_embeddings must have shape \(N >= 1, 8\)"):
        knn.predict(image_embeddings=torch.randn(2, 7))
    with pytest.raises(ValueError, match="image_embeddings must have shape"):
        knn.predict(image_embeddings=torch.zeros(0, 8))
    with pytest.raises(ValueError, match="image_embeddings must be finite"):
        knn.predict(image_embeddings=torch.full((1, 8), float("nan")))
    with pytest.raises(ValueError, match="image_embeddings: row 1 is all zeros"):
        knn.predict(image_embeddings=torch.cat([emb[:1], torch.zeros(1, 8)]))
    with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 5\]"):
        knn.predict(image_embeddings=emb, top_k=6)
    with pytest.raises(ValueError, match="aggregate"):
        knn.predict(image_embeddings=emb, aggregate="mean")
    with pytest.raises(ValueError, match="k must be"):
        knn.predict(image_embeddings=emb, aggregate="medoid", k=0)
    with pytest.raises(ValueError, match="batch_size"):
        knn.predict(image_embeddings=emb, batch_size=0)
    # fit
    with pytest.raises(ValueError, match="embeddings must have shape"):
        KNNGeolocator(embedding_dim=8).fit(torch.randn(5, 3), LATLON)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        KNNGeolocator(embedding_dim=8).fit(torch.full((5, 8), float("inf")), LATLON)
    with pytest.raises(ValueError, match=r"latlon must have shape \(5, 2\)"):
        KNNGeolocator(embedding_dim=8).fit(emb, LATLON[:4])
    with pytest.raises(ValueError, match=r"latlon: latitude must be in \[-90, 90\]"):
        KNNGeolocator(embedding_dim=8).fit(emb, LATLON + torch.tensor([60.0, 0.0]))
    with pytest.raises(ValueError, match="latlon must be finite"):
        KNNGeolocator(embedding_dim=8).fit(emb, torch.full((5, 2), float("nan")))
