"""Score distillation from the angle-to-image diffusion model ("GPS as a Control Signal for Image Generation", sec.
3.2 "GPS-guided score distillation sampling", eq. 7 and 10, sec. 4.1 "3D reconstruction", A.2.2; DreamFusion, Poole
et al. 2022, sec. 3).

A render ``x = h_theta(q)`` of the NeRF from a virtual camera at azimuth ``alpha`` is encoded by the pipeline's VAE to
latents ``z``; noise ``eps`` at a random timestep ``t`` gives ``z_t``; the frozen UNet predicts the noise with the
prompt and the camera's angle tokens ``g'`` and without both, combined by classifier-free guidance (eq. 7):

    eps_hat = eps(z_t; emptyset, emptyset, t) + s (eps(z_t; p, g', t) - eps(z_t; emptyset, emptyset, t))

(``s = 1 + w`` in the paper's notation, diffusers' ``guidance_scale``; text and angle tokens are zeroed together for
the unconditional prediction, as :class:`~geo_models.generation.AngleToImagePipeline` samples and its trainer drops
them). The SDS gradient of eq. 10 (DreamFusion's eq. 3), taken w.r.t. the latents and back-propagated through the
VAE encoder and the renderer to the NeRF, skipping the UNet's Jacobian:

    grad_z L_SDS = w(t) (eps_hat - eps),   w(t) = sigma_t^2 = 1 - alpha_bar_t

``t`` is drawn uniformly from an interval that is annealed during the optimisation (sec. 4.1: "The time step sampling
interval is gradually reduced from [0.98, 0.98] to [0.02, 0.50]", as fractions of the training timesteps).

``conditioning="text_view"`` is the paper's baseline (sec. 4.5, Table 3), DreamFusion with view-dependent prompts:
the condition is the prompt with ", {front|side|back} view" from the camera's azimuth (:mod:`geo_models.sds.views`)
and the angle tokens are zero, for a model trained that way (``train/train_angle_to_image.py --view_prompts``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geo_models.checks import MAX_GUIDANCE_SCALE, MAX_IMAGE_SIDE, check_generator, check_int, check_number
from geo_models.sds.views import DEFAULT_FRONT_AZIMUTH_DEG, VIEW_WORDS, view_prompt, view_words

__all__ = [
    "DEFAULT_SDS_GUIDANCE_SCALE",
    "DEFAULT_MAX_STEP_PERCENT",
    "DEFAULT_MIN_STEP_PERCENT",
    "SDS_LATENT_MODES",
    "SDS_REDUCTIONS",
    "SDS_WEIGHTINGS",
    "SDS_CONDITIONINGS",
    "AngleSDSGuidance",
    "anneal_timestep_interval",
]

# The paper applies "different guidance weights of CFG in Eq. (7) for score distillation sampling for each landmark"
# (sec. 4.1) without giving them; DreamFusion's value for its (Imagen) guidance, the usual default of its Stable
# Diffusion reimplementations (stable-dreamfusion, threestudio), is 100.
DEFAULT_SDS_GUIDANCE_SCALE = 100.0
# (start, end) of the bounds of the timestep interval, fractions of num_train_timesteps (sec. 4.1).
DEFAULT_MIN_STEP_PERCENT = (0.98, 0.02)
DEFAULT_MAX_STEP_PERCENT = (0.98, 0.50)
SDS_WEIGHTINGS = ("sigma_squared", "uniform")
SDS_LATENT_MODES = ("mean", "sample")
SDS_REDUCTIONS = ("mean", "sum")
SDS_CONDITIONINGS = ("angle", "text_view")
PREDICTION_TYPES = ("epsilon", "v_prediction")
RANGE_TOLERANCE = 1e-3  # images may leave [0, 1] by rounding only


def _percent_pair(value, name: str) -> tuple[float, float]:
    """A fraction in [0, 1] (constant) or a ``(start, end)`` pair of them -> ``(start, end)``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a fraction in [0, 1] or a (start, end) pair of them, got {value!r}")
    return tuple(check_number(v, name, 0.0, 1.0) for v in value)


def anneal_timestep_interval(step: int, max_steps: int, min_step_percent, max_step_percent) -> tuple[float, float]:
    """The SDS timestep interval at optimisation step ``step`` of ``max_steps`` (sec. 4.1), as fractions.

    Both bounds move linearly from their start to their end value: with ``f = min(step / max_steps, 1)``,
    ``bound = start + f (end - start)``. Step 0 gives the start interval, steps ``>= max_steps`` the end interval.

    Args:
        step: the optimisation step, ``>= 0`` (0-based: the number of steps already taken).
        max_steps: length of the annealing, ``>= 1`` (the run's number of steps).
        min_step_percent: ``(start, end)`` of the interval's lower bound (a number: constant).
        max_step_percent: ``(start, end)`` of its upper bound.

    Returns:
        ``(low, high)`` fractions of the training timesteps, ``0 <= low <= high <= 1``.
    """
    step = check_int(step, "step", 0)
    max_steps = check_int(max_steps, "max_steps", 1)
    lows, highs = (
        _percent_pair(min_step_percent, "min_step_percent"),
        _percent_pair(max_step_percent, "max_step_percent"),
    )
    if lows[0] > highs[0] or lows[1] > highs[1]:
        raise ValueError(f"min_step_percent {lows} must not exceed max_step_percent {highs} (start and end)")
    f = min(step / max_steps, 1.0)
    low, high = lows[0] + f * (lows[1] - lows[0]), highs[0] + f * (highs[1] - highs[0])
    return low, max(low, high)


class _SDSLoss(torch.autograd.Function):
    """``0.5 * scale * |grad|^2`` as the value, ``scale * grad`` as its gradient w.r.t. ``latents`` (exactly: no
    ``latents - (latents - grad)`` rounding)."""

    @staticmethod
    def forward(ctx, latents, grad, scale):
        ctx.save_for_backward(grad)
        ctx.scale, ctx.dtype = scale, latents.dtype
        return 0.5 * scale * grad.pow(2).sum()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad_output * ctx.scale * grad).to(ctx.dtype), None, None


class AngleSDSGuidance:
    r"""GPS-guided score distillation from an :class:`~geo_models.generation.AngleToImagePipeline` (paper sec. 3.2,
    eq. 7 and 10; sec. 4.1; A.2.2).

    A plain helper, not a module to train: it freezes the pipeline's VAE and UNet (``requires_grad_(False)``, so
    back-propagating to the renders leaves no gradients in them) and never differentiates the UNet. The prompt's
    CLIP tokens are computed once here (the pipeline's own text encoding); the unconditional context is all zeros
    (text and angle tokens zeroed together, eq. 7, as the pipeline samples). The angle tokens come from the
    pipeline's ``angle_embedder`` per call.

    Timesteps and the forward process are the training ones: a ``DDPMScheduler`` built from the pipeline's scheduler
    config (its ``num_train_timesteps``, betas and ``prediction_type``; ``v_prediction`` outputs are converted to
    noise, ``eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) z_t``).

    Args:
        pipeline: an :class:`~geo_models.generation.AngleToImagePipeline` (a GPS-to-image or any other pipeline
            raises ``ValueError``).
        prompt: the text prompt, a non-empty string (paper: ``"A photo of {landmark name}"``).
        guidance_scale: classifier-free guidance scale ``s`` of eq. 7 (``s = 1 + w``; 1: the conditional
            prediction alone, 0: the unconditional one), ``|s| <= 1000``. The paper tunes it per landmark without
            stating values; the default 100 is DreamFusion's.
        min_step_percent: lower bound of the timestep interval as a fraction of the training timesteps: ``(start,
            end)`` annealed linearly over the run (see :meth:`timestep_interval`) or a constant. Default (0.98,
            0.02), paper sec. 4.1.
        max_step_percent: upper bound, likewise. Default (0.98, 0.50), paper sec. 4.1.
        weighting: ``"sigma_squared"`` (``w(t) = sigma_t^2 = 1 - alpha_bar_t``, eq. 10 / DreamFusion) or
            ``"uniform"`` (``w(t) = 1``).
        resolution: side in pixels of the square image the VAE encodes (renders are resized to it); default the
            pipeline's own, ``unet.config.sample_size * vae_scale_factor`` (512 for SD 1.x, 32 for the tiny test
            pipeline). Must be a multiple of the VAE's downsampling factor.
        latent_mode: ``"mean"`` (the VAE posterior's mean, deterministic) or ``"sample"`` (a draw from it, from the
            generator, as stable-dreamfusion / threestudio do).
        reduction: ``"mean"`` (the loss is the batch mean of per-image SDS losses: ``d loss / d z_i = w(t_i)
            (eps_hat_i - eps_i) / B``, threestudio's convention, so the learning rate does not depend on ``B``) or
            ``"sum"`` (``d loss / d z_i = w(t_i) (eps_hat_i - eps_i)`` exactly).
        conditioning: ``"angle"`` (the prompt and the camera's angle tokens, the paper's method) or ``"text_view"``
            (the DreamFusion baseline of Table 3: ``"{prompt}, {front|side|back} view"`` from the camera's azimuth,
            angle tokens zeroed; for a model trained with ``train_angle_to_image.py --view_prompts``).
        front_azimuth_deg: for ``"text_view"``: the azimuth of a camera facing the front (see
            :mod:`geo_models.sds.views`; 180 for the procedural landmark, whose porch faces south).

    Raises:
        ValueError: a bad argument; the message names it.
    """

    def __init__(
        self,
        pipeline,
        prompt: str,
        *,
        guidance_scale: float = DEFAULT_SDS_GUIDANCE_SCALE,
        min_step_percent=DEFAULT_MIN_STEP_PERCENT,
        max_step_percent=DEFAULT_MAX_STEP_PERCENT,
        weighting: str = "sigma_squared",
        resolution: int | None = None,
        latent_mode: str = "mean",
        reduction: str = "mean",
        conditioning: str = "angle",
        front_azimuth_deg: float = DEFAULT_FRONT_AZIMUTH_DEG,
    ):
        from diffusers import DDPMScheduler

        from geo_models.generation import AngleToImagePipeline  # lazy: `import geo_models.sds` stays light

        if not isinstance(pipeline, AngleToImagePipeline):
            raise ValueError(
                f"pipeline must be an AngleToImagePipeline (the angle-to-image model of sec. 3.2), got "
                f"{type(pipeline).__name__}"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"prompt must be a non-empty string (e.g. 'A photo of {{landmark name}}'), got {prompt!r}"
            )
        self.guidance_scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE)
        self.min_step_percent = _percent_pair(min_step_percent, "min_step_percent")
        self.max_step_percent = _percent_pair(max_step_percent, "max_step_percent")
        anneal_timestep_interval(0, 1, self.min_step_percent, self.max_step_percent)  # min <= max at start and end
        for value, name, allowed in (
            (weighting, "weighting", SDS_WEIGHTINGS),
            (latent_mode, "latent_mode", SDS_LATENT_MODES),
            (reduction, "reduction", SDS_REDUCTIONS),
            (conditioning, "conditioning", SDS_CONDITIONINGS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.weighting, self.latent_mode, self.reduction = weighting, latent_mode, reduction
        self.conditioning = conditioning
        self.front_azimuth_deg = check_number(front_azimuth_deg, "front_azimuth_deg")

        self.pipeline, self.prompt = pipeline, prompt
        self.vae_scale_factor = pipeline.vae_scale_factor
        sample_size = pipeline.unet.config.sample_size
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        default = int(sample_size) * self.vae_scale_factor
        self.resolution = default if resolution is None else self._check_resolution(resolution)

        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        kind = self.noise_scheduler.config.prediction_type
        if kind not in PREDICTION_TYPES:
            raise ValueError(f"pipeline.scheduler's prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")
        self.prediction_type = kind
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(torch.float32)

        pipeline.vae.requires_grad_(False)
        pipeline.unet.requires_grad_(False)
        self.text_embeddings = pipeline._encode_text([prompt]).detach()  # (1, L, D), once
        # text_view: one embedding per view word, (3, L, D), in VIEW_WORDS order
        views = [view_prompt(prompt, view) for view in VIEW_WORDS]
        self.view_text_embeddings = pipeline._encode_text(views).detach() if conditioning == "text_view" else None

    # ------------------------------------------------------------------------------------------ checks
    def _check_resolution(self, resolution) -> int:
        f = self.vae_scale_factor
        resolution = check_int(resolution, "resolution", 1, MAX_IMAGE_SIDE)
        if resolution % f:
            raise ValueError(
                f"resolution must be a multiple of the VAE's downsampling factor {f} (the VAE cannot encode it), got "
                f"{resolution}"
            )
        return resolution

    @staticmethod
    def _check_azimuths(azimuth_deg, batch_size: int) -> torch.Tensor:
        try:
            angles = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"azimuth_deg must be {batch_size} numbers (degrees), got {azimuth_deg!r}") from err
        if angles.numel() != batch_size:
            raise ValueError(f"azimuth_deg must hold one azimuth per image ({batch_size}), got {angles.numel()}")
        if not bool(torch.isfinite(angles).all()):
            raise ValueError("azimuth_deg must be finite degrees (no NaN or inf)")
        return angles

    def _check_images(self, images) -> torch.Tensor:
        """``(B, H, W, 3)`` or ``(B, 3, H, W)`` -> ``(B, 3, H, W)`` (a view, still differentiable)."""
        if not isinstance(images, torch.Tensor):
            raise ValueError(
                f"images must be a torch.Tensor (B, H, W, 3) or (B, 3, H, W), got {type(images).__name__}"
            )
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]) or images.shape[0] == 0:
            raise ValueError(f"images must have shape (B, H, W, 3) or (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[1] == 3 and images.shape[3] == 3:
            raise ValueError(f"images of shape {tuple(images.shape)} are ambiguous (channels first or last?)")
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating-point tensor in [0, 1], got {images.dtype}")
        with torch.no_grad():
            if not bool(torch.isfinite(images).all()):
                raise ValueError("images must be finite (no NaN or inf)")
            low, high = float(images.min()), float(images.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(f"images must be in [0, 1], got values in [{low:.4g}, {high:.4g}]")
        return images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)

    # ------------------------------------------------------------------------------------------ schedule
    def timestep_interval(self, step: int | None = None, max_steps: int | None = None) -> tuple[float, float]:
        """The timestep interval ``(low, high)`` (fractions of the training timesteps) at step ``step`` of
        ``max_steps`` (sec. 4.1): both bounds linear from ``(min_step_percent[0], max_step_percent[0])`` at step 0 to
        ``(min_step_percent[1], max_step_percent[1])`` at ``max_steps`` and after (see
        :func:`anneal_timestep_interval`); by default [0.98, 0.98] -> [0.02, 0.50]. Both ``None``: the end interval.
        """
        if step is None and max_steps is None:
            return self.min_step_percent[1], max(self.min_step_percent[1], self.max_step_percent[1])
        if step is None or max_steps is None:
            raise ValueError(f"{'step' if step is None else 'max_steps'} must be given with "
                             f"{'max_steps' if step is None else 'step'}")  # fmt: skip
        return anneal_timestep_interval(step, max_steps, self.min_step_percent, self.max_step_percent)

    def timestep_range(self, step: int | None = None, max_steps: int | None = None) -> tuple[int, int]:
        """The interval as integer timesteps ``(t_min, t_max)``, inclusive: ``round(fraction * T)`` clamped to
        ``[0, T - 1]`` (T = ``num_train_timesteps``, 1000 for SD: [0.98, 0.98] -> t = 980; [0.02, 0.50] -> 20..500)."""
        low, high = self.timestep_interval(step, max_steps)
        steps, last = self.num_train_timesteps, self.num_train_timesteps - 1
        return min(max(round(low * steps), 0), last), min(round(high * steps), last)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """``w(t)`` of eq. 10 at integer timesteps ``t (B,)``: ``sigma_t^2 = 1 - alpha_bar_t`` (DreamFusion), or 1."""
        if self.weighting == "uniform":
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        return 1 - self.alphas_cumprod.to(t.device)[t]

    # ------------------------------------------------------------------------------------------ model
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Renders -> VAE latents, differentiable w.r.t. ``images``.

        Args:
            images: ``(B, H, W, 3)`` (as :func:`~geo_models.sds.render.render_image` stacks) or ``(B, 3, H, W)`` RGB
                in [0, 1], any size: resized bilinearly (antialiased when shrinking) to ``resolution``, mapped to
                [-1, 1] and moved to the VAE's device and dtype.
            generator: for ``latent_mode="sample"``: the posterior draw.

        Returns:
            ``(B, C, resolution / f, resolution / f)`` latents ``* vae.config.scaling_factor``, in the VAE's dtype.
        """
        return self._encode(self._check_images(images), generator)

    def _encode(self, images: torch.Tensor, generator) -> torch.Tensor:
        """Checked ``(B, 3, H, W)`` images -> latents (see :meth:`encode_images`)."""
        vae = self.pipeline.vae
        size = (self.resolution, self.resolution)
        if tuple(images.shape[-2:]) != size:
            shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        pixels = (images * 2 - 1).to(device=vae.device, dtype=vae.dtype)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.mean if self.latent_mode == "mean" else posterior.sample(generator=generator)
        return latents * vae.config.scaling_factor

    @torch.no_grad()
    def predict_noise(self, noisy_latents: torch.Tensor, t: torch.Tensor, azimuth_deg) -> tuple[torch.Tensor, ...]:
        """The UNet's unconditional and conditional noise predictions (eq. 7), one batched call of ``2 B``, never
        differentiated.

        Args:
            noisy_latents: ``z_t (B, C, h, w)``.
            t: integer timesteps ``(B,)``.
            azimuth_deg: ``B`` camera azimuths, degrees clockwise from north (the angle model's condition).

        Returns:
            ``(eps_uncond, eps_cond)``, float32 ``(B, C, h, w)`` noise (converted from ``v`` for a ``v_prediction``
            model): ``eps_uncond`` with text and angle tokens zeroed, ``eps_cond`` with the prompt and angle tokens
            (``text_view``: the view prompt, angle tokens zeroed).
        """
        pipe, unet = self.pipeline, self.pipeline.unet
        b = noisy_latents.shape[0]
        angles = self._check_azimuths(azimuth_deg, b)
        device, dtype = unet.device, unet.dtype
        angle = pipe.angle_embedder(angles.to(device)).to(dtype)
        if self.conditioning == "text_view":  # DreamFusion's view prompts, no angle tokens (zeroed as in training)
            index = torch.tensor([VIEW_WORDS.index(v) for v in view_words(angles, self.front_azimuth_deg)])
            text = self.view_text_embeddings.to(device=device, dtype=dtype)[index.to(device)]
            angle = torch.zeros_like(angle)
        else:
            text = self.text_embeddings.to(device=device, dtype=dtype).expand(b, -1, -1)
        context = torch.cat([text, angle], dim=1)
        contexts = torch.cat([torch.zeros_like(context), context])  # eq. 7: text and angle zeroed together
        t = t.to(device=device, dtype=torch.long)
        z = noisy_latents.detach().to(device=device, dtype=dtype)
        out = unet(torch.cat([z, z]), torch.cat([t, t]), encoder_hidden_states=contexts).sample.float()
        predictions = out.chunk(2)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) z_0, z_t = sqrt(a) z_0 + ...
            alpha_bar = self.alphas_cumprod.to(device)[t].view(-1, 1, 1, 1)
            predictions = [alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * z.float() for v in predictions]
        eps_uncond, eps_cond = predictions
        return eps_uncond, eps_cond

    # ------------------------------------------------------------------------------------------ loss
    def latent_loss(
        self,
        latents: torch.Tensor,
        azimuth_deg,
        generator: torch.Generator | None = None,
        *,
        step: int | None = None,
        max_steps: int | None = None,
    ) -> tuple[torch.Tensor, dict]:
        r"""The SDS loss on latents ``z (B, C, h, w)`` (eq. 10): its gradient w.r.t. ``z`` is ``w(t) (eps_hat -
        eps)`` (divided by ``B`` with ``reduction="mean"``), exactly.

        Random draws, in this order, from ``generator`` on its device (``None``: the global CPU RNG): the timesteps
        ``t = torch.randint(t_min, t_max + 1, (B,))`` (one per image, uniform on the current interval, see
        :meth:`timestep_range`), then the noise ``eps = torch.randn(z.shape)`` (float32); both then move to ``z``'s
        device. ``z_t`` = the scheduler's ``add_noise(z, eps, t)``.

        Args:
            latents: ``z``, with grad (e.g. from :meth:`encode_images`).
            azimuth_deg: ``B`` camera azimuths, degrees (``[camera.azimuth_deg for camera in cameras]``).
            generator: a ``torch.Generator`` (same state -> same ``t`` and noise -> same loss and gradient).
            step, max_steps: the optimisation step and the run's length, for the annealed interval (both or
                neither; neither: the end interval, [0.02, 0.50] by default).

        Returns:
            ``(loss, info)``: the scalar loss, whose value is ``0.5 |grad|^2`` (``/ B`` for ``"mean"``), and
            ``info`` with ``t`` (B,) long, ``interval`` (fractions), ``timestep_range`` (ints), ``weight`` ``w(t)``
            (B,) and ``grad_norm`` (float: ``|w(t) (eps_hat - eps)|`` over the batch, before the ``1 / B``).
        """
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or not latents.is_floating_point():
            raise ValueError(
                f"latents must be a floating (B, C, h, w) tensor, got {getattr(latents, 'shape', latents)}"
            )
        generator = check_generator(generator)
        b = latents.shape[0]
        angles = self._check_azimuths(azimuth_deg, b)
        interval = self.timestep_interval(step, max_steps)
        t_min, t_max = self.timestep_range(step, max_steps)
        draw_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(t_min, t_max + 1, (b,), generator=generator, device=draw_device)
        noise = torch.randn(latents.shape, generator=generator, device=draw_device, dtype=torch.float32)
        t, noise = t.to(latents.device), noise.to(latents.device)

        with torch.no_grad():
            z = latents.detach().float()
            noisy = self.noise_scheduler.add_noise(z, noise, t)
            eps_uncond, eps_cond = self.predict_noise(noisy, t, angles)
            eps_hat = eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)
            weight = self.weight(t)
            grad = weight.view(-1, 1, 1, 1) * (eps_hat.to(z.device) - noise)
        scale = 1.0 / b if self.reduction == "mean" else 1.0
        loss = _SDSLoss.apply(latents, grad, scale)
        info = {
            "t": t,
            "interval": interval,
            "timestep_range": (t_min, t_max),
            "weight": weight,
            "grad_norm": float(grad.norm()),
        }
        return loss, info

    def loss(
        self,
        images: torch.Tensor,
        azimuth_deg,
        generator: torch.Generator | None = None,
        *,
        step: int | None = None,
        max_steps: int | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """The SDS loss of renders (paper sec. 3.2, eq. 10): :meth:`encode_images` then :meth:`latent_loss`.

        ``loss.backward()`` sends ``w(t) (eps_hat - eps)`` (``/ B`` with ``reduction="mean"``) into the latents and,
        through the VAE encoder (frozen) and the resize, into ``images`` and whatever rendered them; the UNet is
        never differentiated.

        Args:
            images: ``(B, H, W, 3)`` or ``(B, 3, H, W)`` renders in [0, 1], with grad.
            azimuth_deg: ``B`` camera azimuths, degrees clockwise from north, one per image.
            generator: ``torch.Generator`` of all draws (posterior sample with ``latent_mode="sample"``, then ``t``,
                then the noise).
            step, max_steps: see :meth:`latent_loss`.

        Returns:
            ``(loss, info)`` as :meth:`latent_loss`.

        Raises:
            ValueError: bad images (shape, dtype, range, non-finite), a count of azimuths other than ``B``, a bad
                generator or step; the message names the argument.
        """
        images = self._check_images(images)
        self._check_azimuths(azimuth_deg, images.shape[0])
        generator = check_generator(generator)
        latents = self._encode(images, generator)
        return self.latent_loss(latents, azimuth_deg, generator, step=step, max_steps=max_steps)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prompt={self.prompt!r}, guidance_scale={self.guidance_scale:g}, "
            f"min_step_percent={self.min_step_percent}, max_step_percent={self.max_step_percent}, "
            f"weighting={self.weighting!r}, resolution={self.resolution}, latent_mode={self.latent_mode!r}, "
            f"reduction={self.reduction!r}, conditioning={self.conditioning!r})"
        )
