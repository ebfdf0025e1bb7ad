import math

import numpy as np
import pytest
import torch

from geo_models.generation import GeoImagePipelineOutput, GPSToImagePipeline
from geo_models.testing import IMAGE_ATOL, tiny_gps_to_image_pipeline

PROMPT = "a building"
EMPIRE_STATE = (40.7484, -73.9857)
STEPS = 2


@pytest.fixture(scope="module")
def pipe():
    return tiny_gps_to_image_pipeline()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def noise(pipe, seed=0, batch=1):
    return torch.randn(batch, 4, 8, 8, generator=gen(seed))


class UNetSpy:
    """Records the batch size and context length of every UNet call."""

    def __init__(self, unet):
        self.forward, self.calls = unet.forward, []

    def __call__(self, sample, timestep, encoder_hidden_states=None, **kwargs):
        self.calls.append((sample.shape[0], encoder_hidden_states.shape[1]))
        return self.forward(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)


@torch.no_grad()
def reference_latents(pipe, latents, points, wp, wg, steps=STEPS):
    """Eq. 4 (one point) / eq. 8 (M points) with one separate UNet call per condition, for one prompt."""
    text = pipe.text_encoder(pipe.tokenizer([PROMPT], padding="max_length", return_tensors="pt").input_ids)[0]
    null = pipe.text_encoder(pipe.tokenizer([""], padding="max_length", return_tensors="pt").input_ids)[0]
    gps = pipe.gps_embedder(torch.tensor(points))  # (M, 2, D)
    zero = torch.zeros(1, 2, text.shape[-1])

    def eps(z, t, ctx):
        return pipe.unet(z, t, encoder_hidden_states=ctx).sample

    pipe.scheduler.set_timesteps(steps)
    z = latents * pipe.scheduler.init_noise_sigma
    for t in pipe.scheduler.timesteps:
        e_null = eps(z, t, torch.cat([null, zero], 1))  # e(z; ∅, ∅)
        e_text = eps(z, t, torch.cat([text, zero], 1))  # e(z; p, ∅)
        e_gps = sum(eps(z, t, torch.cat([text, g[None]], 1)) for g in gps) / len(gps)  # e(z; p, g), mean over M
        z = pipe.scheduler.step(e_null + wp * (e_text - e_null) + wg * (e_gps - e_text), t, z).prev_sample
    return z


def test_shapes_determinism_and_slice(pipe):
    out = pipe(PROMPT, *EMPIRE_STATE, num_inference_steps=STEPS, generator=gen(0), output_type="np")
    assert isinstance(out, GeoImagePipelineOutput) and out.images.shape == (1, 32, 32, 3)
    again = pipe(PROMPT, *EMPIRE_STATE, num_inference_steps=STEPS, generator=gen(0), output_type="np").images
    assert np.array_equal(out.images, again)
    expected = np.array([[0.6252, 0.7056, 0.5875], [0.4865, 0.6204, 0.5311], [0.5349, 0.6152, 0.5538]])
    assert np.abs(out.images[0, -3:, -3:, -1] - expected).max() < 1e-3
    other = pipe(PROMPT, 40.80, -73.95, num_inference_steps=STEPS, generator=gen(0), output_type="np").images
    assert not np.allclose(other, out.images)  # the GPS tag matters
    pil = pipe(PROMPT, *EMPIRE_STATE, num_inference_steps=STEPS, generator=gen(0), return_dict=False)[0]
    assert pil[0].size == (32, 32)
    batch = pipe(PROMPT, [40.75, 40.80], [-73.98, -73.95], num_inference_steps=STEPS, output_type="pt").images
    assert batch.shape == (2, 3, 32, 32)


def test_guidance_is_eq4_in_one_batched_unet_call_per_step(pipe, monkeypatch):
    latents = noise(pipe)
    spy = UNetSpy(pipe.unet)
    monkeypatch.setattr(pipe.unet, "forward", spy)
    out = pipe(PROMPT, *EMPIRE_STATE, num_inference_steps=STEPS, latents=latents, output_type="latent").images
    assert spy.calls == [(3, 77 + 2)] * STEPS  # (∅, ∅), (p, ∅), (p, g) in one batch of 3
    monkeypatch.undo()
    ref = reference_latents(pipe, latents, [EMPIRE_STATE], wp=3.5, wg=7.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_guidance_scales_are_used(pipe):
    latents = noise(pipe)
    out = pipe(
        PROMPT,
        *EMPIRE_STATE,
        text_guidance_scale=1.0,
        gps_guidance_scale=2.0,
        num_inference_steps=STEPS,
        latents=latents,
        output_type="latent",
    ).images
    torch.testing.assert_close(
        out, reference_latents(pipe, latents, [EMPIRE_STATE], wp=1.0, wg=2.0), atol=1e-5, rtol=1e-5
    )


def test_average_image_is_eq8_and_chunk_size_does_not_matter(pipe, monkeypatch):
    points = [(40.75, -73.99), (40.76, -73.98), (40.74, -73.97), (40.80, -73.95), (40.72, -74.00)]
    latents = noise(pipe, seed=1)
    results = {}
    for chunk in (1, 2, 5, 16):
        spy = UNetSpy(pipe.unet)
        monkeypatch.setattr(pipe.unet, "forward", spy)
        results[chunk] = pipe(
            PROMPT,
            gps_points=points,
            gps_chunk_size=chunk,
            num_inference_steps=STEPS,
            latents=latents,
            output_type="latent",
        ).images
        monkeypatch.undo()
        calls_per_step = math.ceil(len(points) / chunk)
        assert len(spy.calls) == STEPS * calls_per_step
        assert max(batch for batch, _ in spy.calls) == min(chunk, len(points)) + 2  # memory bounded by the chunk
    for chunk in (2, 5, 16):
        torch.testing.assert_close(results[chunk], results[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1], reference_latents(pipe, latents, points, 3.5, 7.5), atol=1e-5, rtol=1e-5)


def test_average_of_identical_points_is_the_single_point_image(pipe):
    latents = noise(pipe, seed=2)
    single = pipe(PROMPT, *EMPIRE_STATE, num_inference_steps=STEPS, latents=latents, output_type="latent").images
    average = pipe(
        PROMPT, gps_points=[EMPIRE_STATE] * 3, num_inference_steps=STEPS, latents=latents, output_type="latent"
    ).images
    torch.testing.assert_close(average, single, atol=1e-5, rtol=1e-5)


def test_average_over_an_area_is_seeded(pipe):
    kwargs = {"gps_area": (40.74, 40.76, -74.0, -73.97), "num_gps_samples": 4, "num_inference_steps": STEPS}
    a = pipe(PROMPT, generator=gen(3), output_type="np", **kwargs).images
    b = pipe(PROMPT, generator=gen(3), output_type="np", **kwargs).images
    assert a.shape == (1, 32, 32, 3) and np.array_equal(a, b)


def test_empty_prompt_is_allowed(pipe):
    assert pipe("", *EMPIRE_STATE, num_inference_steps=STEPS, output_type="np").images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latitude": 1000.0}, "latitude"),
        ({"latitude": float("nan")}, "latitude"),
        ({"longitude": -181.0}, "longitude"),
        ({"latitude": None, "longitude": None}, "latitude is required"),
        ({"num_inference_steps": -1}, "num_inference_steps"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ["a", "b", "c"], "latitude": [40.7, 40.8], "longitude": [-74.0, -73.95]}, "prompts"),
        ({"height": 30}, "height"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"text_guidance_scale": float("nan")}, "text_guidance_scale"),
        ({"gps_points": [(40.75, -73.98)]}, "one of"),
        ({"latitude": None, "longitude": None, "gps_points": []}, "gps_points"),
        ({"latitude": None, "longitude": None, "gps_points": [(95.0, 0.0)]}, "latitude"),
        ({"latitude": None, "longitude": None, "gps_area": (40.8, 40.7, -74.0, -73.9)}, "gps_area"),
        (
            {"latitude": None, "longitude": None, "gps_area": (40.7, 40.8, -74.0, -73.9), "gps_chunk_size": 0},
            "gps_chunk_size",
        ),
        ({"latents": torch.zeros(1, 4, 4, 4)}, "latents"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(pipe, kwargs, match):
    call = {"prompt": PROMPT, "latitude": EMPIRE_STATE[0], "longitude": EMPIRE_STATE[1], "num_inference_steps": 1}
    with pytest.raises(ValueError, match=match):
        pipe(**{**call, **kwargs})


def test_outside_the_training_area_warns(pipe):
    with pytest.warns(UserWarning, match="outside the training area"):
        pipe(PROMPT, 48.85, 2.35, num_inference_steps=1, output_type="latent")


def test_save_and_from_pretrained_in_process(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    same = GPSToImagePipeline.from_pretrained(tmp_path)
    same.set_progress_bar_config(disable=True)
    assert same.gps_embedder.lat_range == pipe.gps_embedder.lat_range  # the training area is in the config
    kwargs = {"num_inference_steps": STEPS, "output_type": "np"}
    a = pipe(PROMPT, *EMPIRE_STATE, generator=gen(0), **kwargs).images
    b = same(PROMPT, *EMPIRE_STATE, generator=gen(0), **kwargs).images
    # loaded weights may run other MKL kernels: images equal up to float32 rounding (testing.tolerances)
    np.testing.assert_allclose(a, b, rtol=0, atol=IMAGE_ATOL)
