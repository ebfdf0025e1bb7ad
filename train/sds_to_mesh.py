"""Lift a landmark's 3D model from its angle-to-image model: GPS-guided score distillation into a NeRF, as GLB.

"GPS as a Control Signal for Image Generation", sec. 3.2 (eq. 10), 4.1 "3D reconstruction", A.2.2: a NeRF
(``geo_models.sds.NeRFField``) is rendered from virtual cameras around the landmark (``CameraSampler``, the azimuth
being what the angle model is conditioned on); each render gets the SDS gradient of the frozen angle-to-image model
(``AngleSDSGuidance``: eq. 7 guidance, w(t) = sigma_t^2, the timestep interval annealed from [0.98, 0.98] to
[0.02, 0.50]); Adam, lr 0.01 (sec. 4.1). The first ``--albedo_steps`` steps render the albedo only, later ones
Lambertian shading from a light near the camera or, with probability ``--textureless_prob``, textureless shading
(DreamFusion). Regularisers (DreamFusion / stable-dreamfusion): the orientation penalty ``sum_i w_i max(0, n_i .
d)^2`` on shaded steps (``--lambda_orient``) and an opacity sparsity term ``mean sqrt(opacity^2 + 0.01)``
(``--lambda_opacity``). ``--baseline text_view`` runs the paper's comparison instead (sec. 4.5, Table 3): DreamFusion
with view-dependent prompts, "{prompt}, {front|side|back} view", from a text-only model trained with
``train_angle_to_image.py --view_prompts``; the same NeRF, cameras and budget. Runs on the shared training loop
(``geo_models.training``: checkpoints, exact resume, logs); cameras, jitter, timesteps and noise are functions of
(seed, step). Output: ``nerf/`` (the field, safetensors + config), ``mesh.glb`` (marching cubes, vertex colours,
Y-up), ``turntable.png`` and preview renders under ``validation/``.

Examples:
    python train/sds_to_mesh.py --pretrained_model_name_or_path outputs/angle --prompt "A photo of Meridian Hall" \
        --output_dir outputs/hall-3d
    python train/sds_to_mesh.py --pretrained_model_name_or_path outputs/angle --prompt "A photo of Meridian Hall" \
        --output_dir /tmp/smoke --preset smoke
"""

from __future__ import annotations

import argparse

import torch

from geo_models import training
from geo_models.sds import (
    AngleSDSGuidance,
    CameraSampler,
    NeRFField,
    export_glb,
    extract_mesh,
    render_image,
    render_view,
)
from geo_models.sds.views import DEFAULT_FRONT_AZIMUTH_DEG

PRESETS = {  # --preset: CPU-sized runs (flags given explicitly still win); times on one 2-core EPYC core
    "smoke": {"max_train_steps": 4, "resolution": 32, "num_samples": 16, "grid_levels": 2, "grid_max_resolution": 16,
              "hidden_dim": 16, "mesh_resolution": 32, "albedo_steps": 2, "validation_steps": 2},
    "cpu": {"max_train_steps": 1200, "resolution": 32, "num_samples": 32, "grid_levels": 4, "grid_max_resolution": 64,
            "hidden_dim": 32, "mesh_resolution": 128, "albedo_steps": 400, "validation_steps": 300,
            "checkpointing_steps": 300},
}  # fmt: skip


def parse_args(argv=None, *, check_model: bool = True) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained_model_name_or_path", required=True, help="a saved AngleToImagePipeline or Hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--prompt", required=True, help='e.g. "A photo of Meridian Hall"')
    p.add_argument("--output_dir", required=True)
    training.add_preset_arg(p, PRESETS, "CPU-sized settings (smoke: < 1 min; cpu: <= 30 min on one core)")
    p.add_argument("--guidance_scale", type=float, default=100.0, help="eq. 7 (DreamFusion's 100)")
    p.add_argument("--resolution", type=int, default=64, help="render side in pixels (resized to the VAE's input)")
    p.add_argument("--num_samples", type=int, default=64, help="samples per ray")
    p.add_argument("--grid_levels", type=int, default=6)
    p.add_argument("--grid_max_resolution", type=int, default=128)
    p.add_argument("--hidden_dim", type=int, default=64)
    p.add_argument("--albedo_steps", type=int, default=500, help="albedo-only renders first (DreamFusion)")
    p.add_argument("--textureless_prob", type=float, default=0.5, help="later steps: textureless instead of shaded")
    p.add_argument("--lambda_orient", type=float, default=1e-2, help="orientation penalty (shaded steps)")
    p.add_argument("--lambda_opacity", type=float, default=1e-3, help="opacity sparsity, mean sqrt(o^2 + 0.01)")
    p.add_argument("--baseline", choices=("text_view",), default=None,
                   help="DreamFusion with view prompts (Table 3), from a --view_prompts model")
    p.add_argument("--front_azimuth_deg", type=float, default=DEFAULT_FRONT_AZIMUTH_DEG,
                   help="--baseline text_view: azimuth of a camera facing the front")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    p.add_argument("--mesh_resolution", type=int, default=128, help="marching-cubes grid side")
    p.add_argument("--mesh_faces", type=int, default=None, help="decimate the mesh to at most this many faces")
    p.add_argument("--mesh_keep_largest", action="store_true", help="keep the largest connected piece (no floaters)")
    p.add_argument("--mesh_threshold", type=float, default=None, help="density level (default: automatic)")
    p.add_argument("--validation_steps", type=int, default=500, help="preview turntable every N steps")
    training.add_optim_args(p, train_batch_size=1, learning_rate=0.01, num_train_epochs=1, max_train_steps=5000,
                            max_grad_norm=0.0)  # fmt: skip
    training.add_run_args(p)
    training.add_hub_args(p)
    p.set_defaults(checkpointing_steps=1000)
    args = p.parse_args(argv)
    training.apply_preset(p, args, PRESETS)
    positive = ("resolution", "num_samples", "grid_levels", "grid_max_resolution", "hidden_dim", "mesh_resolution")
    if not 8 <= args.resolution <= 1024:  # renders are resized to the VAE's input, so any side it can draw works
        p.error(f"--resolution must be in [8, 1024] pixels, got {args.resolution}")
    if args.mesh_faces is not None and args.mesh_faces < 4:
        p.error(f"--mesh_faces must be >= 4, got {args.mesh_faces}")
    training.check_args(p, args, positive=(*positive, "validation_steps"), non_negative=("albedo_steps",))
    if not args.prompt.strip():
        p.error("--prompt must not be empty")
    for name in ("lambda_orient", "lambda_opacity"):
        if not getattr(args, name) >= 0:
            p.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if not 0 <= args.textureless_prob <= 1:
        p.error(f"--textureless_prob must be in [0, 1], got {args.textureless_prob}")
    kind = _pipeline_class(args) if check_model else "AngleToImagePipeline"
    if kind != "AngleToImagePipeline":
        p.error(f"--pretrained_model_name_or_path: an AngleToImagePipeline is needed, got {kind}")
    return args


def _pipeline_class(args) -> str:
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(args.pretrained_model_name_or_path, revision=args.revision)
    except (OSError, ValueError) as err:
        return f"nothing loadable ({err})"
    name = index.get("_class_name")
    return name[-1] if isinstance(name, list) else str(name)


class CameraSource:
    """Step-indexed virtual cameras: batch ``i`` is ``(i, sampler.sample(batch_size))`` drawn from a generator seeded
    by (seed, i), so a resumed run sees the cameras of an uninterrupted one."""

    latlon = None

    def __init__(self, sampler: CameraSampler, batch_size: int, seed: int):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def steps_per_epoch(self) -> int:
        return 1

    def batches(self, start: int):
        step = start
        while True:
            generator = torch.Generator().manual_seed(training.step_seed(self.seed, step) + 1)
            yield step, self.sampler.sample(self.batch_size, generator=generator)
            step += 1


def shading_of(step: int, args, generator: torch.Generator) -> str:
    """Albedo for the first ``--albedo_steps``, then textureless with ``--textureless_prob``, else Lambertian."""
    if step < args.albedo_steps:
        return "albedo"
    return "textureless" if torch.rand((), generator=generator).item() < args.textureless_prob else "lambertian"


def save_turntable(field, sampler: CameraSampler, path, n: int = 8):
    """``n`` albedo renders at evenly spaced azimuths, in one row, as a PNG."""
    from PIL import Image

    with torch.no_grad():
        images = [render_image(field, c.to(field.device), perturb=False) for c in sampler.turntable(n)]
    row = (torch.cat(images, dim=1).clamp(0, 1) * 255).round().byte().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)
    return path


def main(argv=None, *, pipeline=None, on_step=None) -> NeRFField:
    """Run the script (``argv``: its flags). For callers in Python (the landmark3d app): ``pipeline``, an
    ``AngleToImagePipeline`` already loaded (``--pretrained_model_name_or_path`` then only names it in the card), and
    ``on_step(step, field)`` after every optimizer step (raise in it to stop the run)."""
    from geo_models.generation import AngleToImagePipeline

    args = parse_args(argv, check_model=pipeline is None)
    run = training.start_run(args, "sds_to_mesh")

    # 1. The frozen angle-to-image model as SDS guidance, the cameras, the NeRF
    pipe = pipeline or AngleToImagePipeline.from_pretrained(args.pretrained_model_name_or_path, revision=args.revision)
    pipe.to(run.device)
    conditioning = args.baseline or "angle"
    guidance = AngleSDSGuidance(pipe, args.prompt, guidance_scale=args.guidance_scale, conditioning=conditioning,
                                front_azimuth_deg=args.front_azimuth_deg)  # fmt: skip
    sampler = CameraSampler(resolution=args.resolution)
    source = CameraSource(sampler, args.train_batch_size, args.seed)
    field = NeRFField(
        num_levels=args.grid_levels,
        max_resolution=args.grid_max_resolution,
        base_resolution=min(16, args.grid_max_resolution),
        hidden_dim=args.hidden_dim,
        seed=args.seed,
    )

    # 2. Loss: renders from the step's cameras -> SDS gradient of eq. 10 (the UNet is never differentiated),
    #    + the orientation penalty (shaded steps, where normals exist) and the opacity sparsity term
    def compute_loss(model, batch, generator):
        step, cameras = batch
        nerf = run.accelerator.unwrap_model(model)
        shading = shading_of(step, args, generator)
        views = []
        for camera in cameras:
            light = camera.position + 0.5 * torch.randn(3, generator=generator)  # a light near the camera
            light = (light / light.norm()).to(run.device)
            views.append(render_view(nerf, camera.to(run.device), num_samples=args.num_samples,
                                     generator=generator, shading=shading, light_dir=light))  # fmt: skip
        azimuths = torch.tensor([c.azimuth_deg for c in cameras])
        images = torch.stack([v["rgb"] for v in views])
        loss, _ = guidance.loss(images, azimuths, generator, step=step, max_steps=args.max_train_steps)
        opacity = torch.stack([v["opacity"] for v in views])
        orientation = torch.stack([v["orientation"] for v in views]).mean()
        sparsity = (opacity.square() + 0.01).sqrt().mean()
        return loss + args.lambda_orient * orientation + args.lambda_opacity * sparsity

    # 3. Train (Adam, lr 0.01), preview turntables every --validation_steps
    def preview(step):
        return save_turntable(field, sampler, run.output_dir / "validation" / f"step-{step}.png")

    adam = lambda params: torch.optim.Adam(params, lr=args.learning_rate)  # noqa: E731
    after_step = None if on_step is None else lambda step, batches: on_step(step + 1, field)  # steps done
    field = training.fit(run, field, source, compute_loss, optimizer=adam, validate=preview, after_step=after_step)

    # 4. Save the NeRF, the mesh (GLB) and the final turntable; push
    def save(card):
        field.eval().save_pretrained(run.output_dir / "nerf")
        mesh = extract_mesh(field, bound=field.bound, resolution=args.mesh_resolution, threshold=args.mesh_threshold,
                            target_faces=args.mesh_faces, keep_largest=args.mesh_keep_largest)  # fmt: skip
        export_glb(mesh, run.output_dir / "mesh.glb")
        save_turntable(field, sampler, run.output_dir / "turntable.png")
        write_card(args, field, mesh.metadata["threshold"])

    training.finish_run(run, save, what="NeRF and GLB mesh")
    return field


def write_card(args, field: NeRFField, threshold: float) -> None:
    """``output_dir/README.md`` from ``hub_cards/nerf.md``."""
    from pathlib import Path

    from geo_models.hub import render_model_card

    base = args.pretrained_model_name_or_path
    keys = ("max_train_steps guidance_scale resolution num_samples grid_levels grid_max_resolution hidden_dim "
            "albedo_steps textureless_prob lambda_orient lambda_opacity mesh_resolution seed").split()  # fmt: skip
    card = render_model_card(
        "nerf",
        repo_id=args.hub_model_id,
        base_model=None if Path(base).exists() else base,
        tags=["3d", "nerf", "score-distillation", "gltf", *(["dreamfusion-baseline"] if args.baseline else [])],
        pipeline_tag="text-to-3d",
        prompt=args.prompt,
        conditioning=args.baseline or "angle",
        steps=args.max_train_steps,
        learning_rate=args.learning_rate,
        guidance_scale=args.guidance_scale,
        resolution=args.resolution,
        threshold=f"{threshold:.3g}",
        bound=field.bound,
        config={k: getattr(args, k) for k in keys},
    )
    card.save(Path(args.output_dir) / "README.md")


if __name__ == "__main__":
    main()
