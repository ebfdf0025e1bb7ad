"""Score distillation from the angle-to-image model (paper sec. 3.2 eq. 7 and 10, sec. 4.1): the loss's gradient is
w(t) (eps_hat - eps) recomputed by hand, the UNet is never differentiated while a rendered NeRF is, the angle tokens
and the guidance scale act as eq. 7 says, the annealed timestep interval, v-prediction, determinism, input checks."""

import pytest
import torch

from geo_models.sds import AngleSDSGuidance, CameraSampler, NeRFField, anneal_timestep_interval, render_image
from geo_models.testing.tiny import tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline

PROMPT = "A photo of the Eiffel Tower"
SMALL_FIELD = {"num_levels": 2, "base_resolution": 8, "max_resolution": 16, "features_per_level": 2, "hidden_dim": 16}
ATOL = 1e-5  # batched (2B) vs separate UNet calls: float32 rounding only


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    return tiny_angle_to_image_pipeline()


def latents_like(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=gen(seed)).requires_grad_()


def by_hand(pipe, latents, azimuth, seed, t_range, scale):
    """The documented draws (t, then the noise, from a CPU generator) and eq. 7 / 10 with separate UNet calls."""
    g = gen(seed)
    t = torch.randint(t_range[0], t_range[1] + 1, (latents.shape[0],), generator=g)
    noise = torch.randn(latents.shape, generator=g)
    alpha_bar = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents.detach() + (1 - alpha_bar).sqrt() * noise
    with torch.no_grad():
        text = pipe._encode_text([PROMPT] * latents.shape[0])
        context = torch.cat([text, pipe.angle_embedder(torch.tensor(azimuth, dtype=torch.float32))], dim=1)
        cond = pipe.unet(noisy, t, encoder_hidden_states=context).sample
        uncond = pipe.unet(noisy, t, encoder_hidden_states=torch.zeros_like(context)).sample
    eps_hat = uncond + scale * (cond - uncond)
    return t, (1 - alpha_bar) * (eps_hat - noise), cond, uncond


def test_gradient_is_weighted_guided_residual(pipe):
    guidance = AngleSDSGuidance(pipe, PROMPT)  # guidance_scale 100
    latents = latents_like()
    loss, info = guidance.latent_loss(latents, [0.0, 90.0], gen(0), step=5, max_steps=10)
    (grad,) = torch.autograd.grad(loss, latents)
    assert info["interval"] == pytest.approx((0.5, 0.74)) and info["timestep_range"] == (500, 740)
    t, expected, _, _ = by_hand(pipe, latents, [0.0, 90.0], 0, (500, 740), 100.0)
    assert torch.equal(info["t"], t) and bool(((t >= 500) & (t <= 740)).all())
    torch.testing.assert_close(info["weight"], 1 - pipe.scheduler.alphas_cumprod[t])
    scale = float(expected.abs().max())
    torch.testing.assert_close(grad, expected / 2, rtol=1e-4, atol=1e-5 * scale)  # reduction="mean": / B
    torch.testing.assert_close(loss, 0.5 * expected.pow(2).sum() / 2, rtol=1e-4, atol=0)
    assert info["grad_norm"] == pytest.approx(float(expected.norm()), rel=1e-4)

    summed = AngleSDSGuidance(pipe, PROMPT, reduction="sum")
    loss_sum, _ = summed.latent_loss(latents, [0.0, 90.0], gen(0), step=5, max_steps=10)
    (grad_sum,) = torch.autograd.grad(loss_sum, latents)
    torch.testing.assert_close(grad_sum, expected, rtol=1e-4, atol=1e-5 * scale)


def test_unet_never_differentiated_nerf_gets_gradients(pipe):
    guidance = AngleSDSGuidance(pipe, PROMPT)
    field = NeRFField(**SMALL_FIELD)
    cameras = CameraSampler(resolution=16).sample(2, generator=gen(0))
    images = torch.stack([render_image(field, c, num_samples=8, generator=gen(i)) for i, c in enumerate(cameras)])
    assert images.shape == (2, 16, 16, 3) and images.requires_grad
    loss, info = guidance.loss(images, [camera.azimuth_deg for camera in cameras], gen(0))  # 16 px -> 32 px
    loss.backward()
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert all(p.grad is None for p in pipe.vae.parameters())
    grads = [p.grad for p in field.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert info["grad_norm"] > 0 and loss.item() > 0


def test_angle_tokens_condition_the_prediction(pipe):
    guidance = AngleSDSGuidance(pipe, PROMPT)
    noisy = torch.randn(1, 4, 8, 8, generator=gen(3))
    t = torch.tensor([600])
    uncond_north, cond_north = guidance.predict_noise(noisy, t, [0.0])
    uncond_east, cond_east = guidance.predict_noise(noisy, t, [90.0])
    torch.testing.assert_close(uncond_north, uncond_east, rtol=0, atol=1e-6)  # eq. 7: the angle zeroed too
    assert float((cond_north - cond_east).abs().max()) > 1e-4
    latents = latents_like(batch=1)
    north = torch.autograd.grad(guidance.latent_loss(latents, [0.0], gen(0))[0], latents)[0]
    east = torch.autograd.grad(guidance.latent_loss(latents, [90.0], gen(0))[0], latents)[0]
    assert float((north - east).abs().max()) > 1e-3


def test_guidance_scale_zero_and_one(pipe):
    latents = latents_like()
    grads = {}
    for s in (0.0, 1.0, 7.5):
        guidance = AngleSDSGuidance(pipe, PROMPT, guidance_scale=s, reduction="sum")
        grads[s] = torch.autograd.grad(guidance.latent_loss(latents, [10.0, 200.0], gen(4))[0], latents)[0]
    t, _, cond, uncond = by_hand(pipe, latents, [10.0, 200.0], 4, (20, 500), 1.0)
    g = torch.Generator().manual_seed(4)
    torch.randint(20, 501, (2,), generator=g)
    noise = torch.randn(latents.shape, generator=g)
    weight = (1 - pipe.scheduler.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(grads[1.0], weight * (cond - noise), rtol=1e-4, atol=ATOL)  # s = 1: eps_cond
    torch.testing.assert_close(grads[0.0], weight * (uncond - noise), rtol=1e-4, atol=ATOL)  # s = 0: eps_uncond
    torch.testing.assert_close(grads[7.5], grads[0.0] + 7.5 * (grads[1.0] - grads[0.0]), rtol=1e-4, atol=1e-4)


def test_timestep_interval_annealing(pipe):
    guidance = AngleSDSGuidance(pipe, PROMPT)
    assert guidance.timestep_interval(0, 100) == pytest.approx((0.98, 0.98))
    assert guidance.timestep_interval(100, 100) == pytest.approx((0.02, 0.50))
    assert guidance.timestep_interval(250, 100) == pytest.approx((0.02, 0.50))  # after the run: the end
    assert guidance.timestep_interval() == pytest.approx((0.02, 0.50))  # no step given: the end interval
    assert guidance.timestep_interval(50, 100) == pytest.approx((0.50, 0.74))  # linear in both bounds
    assert guidance.timestep_range(0, 100) == (980, 980) and guidance.timestep_range(100, 100) == (20, 500)
    intervals = [guidance.timestep_interval(s, 20) for s in range(21)]
    assert all(a[0] >= b[0] and a[1] >= b[1] and b[0] <= b[1] for a, b in zip(intervals, intervals[1:]))
    _, info = guidance.latent_loss(latents_like(), [0.0, 1.0], gen(0), step=0, max_steps=100)
    assert info["t"].tolist() == [980, 980]
    assert anneal_timestep_interval(3, 4, 0.1, (0.9, 0.5)) == pytest.approx((0.1, 0.6))
    constant = AngleSDSGuidance(pipe, PROMPT, min_step_percent=0.02, max_step_percent=0.98)
    assert constant.timestep_interval(0, 10) == constant.timestep_interval(10, 10) == pytest.approx((0.02, 0.98))


def test_v_prediction_converted_to_noise(pipe):
    from diffusers import DDIMScheduler

    v_pipe = tiny_angle_to_image_pipeline()  # same seed: the same weights as `pipe`
    v_pipe.scheduler = DDIMScheduler.from_config(v_pipe.scheduler.config, prediction_type="v_prediction")
    eps_model, v_model = AngleSDSGuidance(pipe, PROMPT), AngleSDSGuidance(v_pipe, PROMPT)
    assert v_model.prediction_type == "v_prediction"
    noisy, t = torch.randn(2, 4, 8, 8, generator=gen(5)), torch.tensor([100, 900])
    alpha_bar = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    for raw, converted in zip(eps_model.predict_noise(noisy, t, [0, 45]), v_model.predict_noise(noisy, t, [0, 45])):
        torch.testing.assert_close(converted, alpha_bar.sqrt() * raw + (1 - alpha_bar).sqrt() * noisy)


def test_deterministic_layouts_and_latent_sampling(pipe):
    images = torch.rand(2, 20, 20, 3, generator=gen(6)).requires_grad_()  # odd size: resized to 32
    guidance = AngleSDSGuidance(pipe, PROMPT, guidance_scale=7.5)

    def run(x, seed, g=guidance):
        loss, info = g.loss(x, torch.tensor([30.0, 300.0]), gen(seed), step=2, max_steps=10)
        return loss, info, torch.autograd.grad(loss, images)[0]

    loss, info, grad = run(images, 0)
    again, info_again, grad_again = run(images, 0)
    torch.testing.assert_close(again, loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_again, grad, rtol=1e-5, atol=1e-9)
    assert torch.equal(info["t"], info_again["t"])
    channels_first, _, grad_cf = run(images.permute(0, 3, 1, 2), 0)
    torch.testing.assert_close(channels_first, loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_cf, grad, rtol=1e-4, atol=1e-8)
    other, _, _ = run(images, 1)
    assert other.item() != loss.item()

    sampled = AngleSDSGuidance(pipe, PROMPT, guidance_scale=7.5, latent_mode="sample")
    first, _, _ = run(images, 0, sampled)
    second, _, _ = run(images, 0, sampled)
    torch.testing.assert_close(first, second, rtol=1e-6, atol=0)
    assert first.item() != loss.item()


def test_bad_inputs_name_the_argument(pipe):
    with pytest.raises(ValueError, match="pipeline must be an AngleToImagePipeline.*GPSToImagePipeline"):
        AngleSDSGuidance(tiny_gps_to_image_pipeline(), PROMPT)
    with pytest.raises(ValueError, match="pipeline"):
        AngleSDSGuidance(object(), PROMPT)
    for prompt in ("", "   ", None, ["a"]):
        with pytest.raises(ValueError, match="prompt"):
            AngleSDSGuidance(pipe, prompt)
    for resolution in (30, 0, 4096, 2.5):
        with pytest.raises(ValueError, match="resolution"):
            AngleSDSGuidance(pipe, PROMPT, resolution=resolution)
    assert AngleSDSGuidance(pipe, PROMPT, resolution=64).resolution == 64  # multiples of the VAE factor 4
    for kwargs, name in (
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"min_step_percent": (0.98, 0.6)}, "min_step_percent"),
        ({"max_step_percent": 1.5}, "max_step_percent"),
        ({"weighting": "fantasia"}, "weighting"),
        ({"latent_mode": "mode"}, "latent_mode"),
        ({"reduction": "none"}, "reduction"),
    ):
        with pytest.raises(ValueError, match=name):
            AngleSDSGuidance(pipe, PROMPT, **kwargs)

    guidance = AngleSDSGuidance(pipe, PROMPT)
    images = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="azimuth_deg"):
        guidance.loss(images, [0.0, 90.0, 180.0])
    with pytest.raises(ValueError, match="azimuth_deg"):
        guidance.loss(images, [0.0, float("nan")])
    for bad in (images[0], torch.rand(2, 16, 16, 4), images * 255, images.double() * float("nan"), images.long()):
        with pytest.raises(ValueError, match="images"):
            guidance.loss(bad, [0.0, 90.0])
    with pytest.raises(ValueError, match="max_steps"):
        guidance.loss(images, [0.0, 90.0], step=3)
    with pytest.raises(ValueError, match="max_steps"):
        guidance.timestep_interval(0, 0)
    with pytest.raises(ValueError, match="step"):
        guidance.timestep_interval(-1, 10)
    with pytest.raises(ValueError, match="generator"):
        guidance.loss(images, [0.0, 90.0], 0)


def test_text_view_baseline_uses_view_prompts_and_no_angle_tokens(pipe):
    """DreamFusion's baseline (Table 3): the conditional branch sees "{prompt}, {view} view" and zero angle tokens."""
    guidance = AngleSDSGuidance(pipe, PROMPT, guidance_scale=7.5, conditioning="text_view")
    latents = latents_like(batch=3)
    azimuths = [180.0, 90.0, 10.0]  # front, side, back of a southern front
    loss, info = guidance.latent_loss(latents, azimuths, gen(3))
    (grad,) = torch.autograd.grad(loss, latents)
    g = gen(3)
    lo, hi = info["timestep_range"]
    t = torch.randint(lo, hi + 1, (3,), generator=g)
    noise = torch.randn(latents.shape, generator=g)
    noisy = pipe.scheduler.add_noise(latents.detach(), noise, t)
    with torch.no_grad():
        views = [f"{PROMPT}, {v} view" for v in ("front", "side", "back")]
        text = pipe._encode_text(views)
        context = torch.cat([text, torch.zeros_like(pipe.angle_embedder(torch.tensor(azimuths)))], dim=1)
        cond = pipe.unet(noisy, t, encoder_hidden_states=context).sample
        uncond = pipe.unet(noisy, t, encoder_hidden_states=torch.zeros_like(context)).sample
    alpha_bar = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = (1 - alpha_bar) * (uncond + 7.5 * (cond - uncond) - noise) / 3
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    angle = AngleSDSGuidance(pipe, PROMPT, guidance_scale=7.5)  # the method: same draws, another gradient
    (grad_angle,) = torch.autograd.grad(angle.latent_loss(latents, azimuths, gen(3))[0], latents)
    assert not torch.allclose(grad, grad_angle)
    with pytest.raises(ValueError, match="conditioning"):
        AngleSDSGuidance(pipe, PROMPT, conditioning="text")
