"""Fine-tune Stable Diffusion into an angle-to-image model of one landmark ("GPS as a Control Signal for Image
Generation", sec. 3.2, 4.1, A.2.1).

Each photo's camera GPS becomes its azimuth around the landmark centre (``--landmark_centre`` or the data's
``landmark.json``), binned to 10 degrees and embedded by an :class:`AngleEmbedder` into 1 or 2 tokens appended to the
caption's CLIP tokens ("A photo of {name}"). The UNet (LoRA or full) and the embedder learn the noise-prediction loss
(eq. 3 with ``g'`` for ``g``); text encoder and VAE stay frozen. Condition dropout follows eq. 7: the pipeline's
unconditional branch zeroes the text *and* the angle tokens together, so per sample both are zeroed with probability
``--drop_both_prob`` (5%, the paper's unconditional rate); text-only / angle-only nulls are never used by eq. 7.

Prior preservation (eq. 6 and 9, DreamBooth): before training, the *base* model as a plain text-to-image
``StableDiffusionPipeline`` (its own components, no angle tokens; eq. 9's "synthesized images from the original Stable
Diffusion model") fills ``--class_data_dir`` up to ``--num_class_images`` images of ``--class_prompt`` (existing ones
are kept). Each batch concatenates instance and class examples; class examples get their class prompt with the angle
tokens zeroed (eq. 9's empty angle) and are never dropped. Loss = instance MSE + ``--prior_loss_weight`` x class MSE.
Paper defaults (A.2.1): 256 px, constant lr 5e-4, 800 steps, lambda 1. Runs under ``accelerate launch``; exact resume;
validation grids over a ring of azimuths; saves an ``AngleToImagePipeline`` (LoRA merged, and alone in diffusers'
format next to ``angle_embedder/``), a model card, and pushes.

``--view_prompts`` trains the paper's baseline instead (sec. 4.5, Table 3: DreamFusion with view-dependent prompts):
a text-only model, the same data and recipe, captions "{caption}, {front|side|back} view" from each photo's azimuth
(:mod:`geo_models.sds.views`, front at ``--front_azimuth_deg``) and the angle tokens always zeroed; SDS then guides
with ``train/sds_to_mesh.py --baseline text_view``.

Examples:
    python train/train_angle_to_image.py --pretrained_model_name_or_path CompVis/stable-diffusion-v1-4 \
        --train_data data/landmark --output_dir outputs/angle --max_train_steps 800 --with_prior_preservation \
        --class_data_dir data/class-building --class_prompt "A photo of a building"
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from geo_models.generation import AngleEmbedder, AngleToImagePipeline
from geo_models.hub import render_model_card
from geo_models.sds.views import DEFAULT_FRONT_AZIMUTH_DEG, view_prompt, view_words
from geo_models.training import fit, start_run
from geo_models.training import stable_diffusion as sd
from geo_models.training.args import CPU_RECIPES

logger = logging.getLogger("train_angle_to_image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=CPU_RECIPES)
    sd.add_finetune_args(p)
    p.set_defaults(prompt_template="A photo of {name}", resolution=256, learning_rate=5e-4)
    for action in p._actions:  # the landmark's name fills the template here
        if action.dest == "area_name":
            action.help = argparse.SUPPRESS
    p.add_argument("--landmark_name", default=None, help="fills {name} (default: landmark.json's name)")
    p.add_argument("--landmark_centre", type=float, nargs=2, default=None, metavar=("LAT", "LON"),
                   help="default: the data's landmark.json, else the base AngleToImagePipeline's")  # fmt: skip
    p.add_argument("--num_tokens", type=int, choices=(1, 2), default=None, help="angle tokens (default 1 / base's)")
    p.add_argument("--angle_bin_deg", type=float, default=10.0)
    p.add_argument("--angle_num_frequencies", type=int, default=10)
    p.add_argument("--drop_both_prob", type=float, default=0.05, help="per sample: text and angle zeroed (eq. 7)")
    p.add_argument("--with_prior_preservation", action="store_true", help="eq. 6 / 9")
    p.add_argument("--prior_loss_weight", type=float, default=1.0, help="lambda of eq. 6")
    p.add_argument("--class_data_dir", default=None, help="class images (generated there when fewer than N)")
    p.add_argument("--class_prompt", default=None, help='e.g. "A photo of a building"')
    p.add_argument("--num_class_images", type=int, default=100)
    p.add_argument("--sample_batch_size", type=int, default=4, help="class image generation batch")
    p.add_argument("--class_inference_steps", type=int, default=50)
    p.add_argument("--class_guidance_scale", type=float, default=7.5)
    p.add_argument("--view_prompts", action="store_true",
                   help="the DreamFusion baseline (Table 3): view words in the captions, angle tokens always zeroed")
    p.add_argument("--front_azimuth_deg", type=float, default=DEFAULT_FRONT_AZIMUTH_DEG,
                   help="--view_prompts: azimuth of a camera facing the front (180: the procedural landmark)")
    p.add_argument("--validation_azimuths", type=float, nargs="+", default=[0.0, 90.0, 180.0, 270.0])
    p.add_argument("--validation_guidance_scale", type=float, default=7.5, help="s = 1 + w of eq. 7")
    args = p.parse_args(argv)
    meta_path = Path(args.train_data) / "landmark.json"
    try:
        landmark = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        centre = landmark.get("centre") and [landmark["centre"]["latitude"], landmark["centre"]["longitude"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        p.error(f"--train_data: unreadable {meta_path} ({err!r}); pass --landmark_centre LAT LON")
    args.landmark_name = args.landmark_name or landmark.get("name") or "the landmark"
    sd.check_finetune_args(p, args, template_fields={"name": args.landmark_name})
    try:
        sd.check_drop_probs(**{"--drop_both_prob": args.drop_both_prob})
    except ValueError as err:
        p.error(str(err))
    try:
        AngleEmbedder(hidden_size=1, bin_deg=args.angle_bin_deg)
    except ValueError as err:
        p.error(f"--angle_bin_deg: {err}")
    for name in ("angle_num_frequencies", "num_class_images", "sample_batch_size", "class_inference_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.prior_loss_weight >= 0:
        p.error(f"--prior_loss_weight must be >= 0, got {args.prior_loss_weight}")
    if args.with_prior_preservation and not (args.class_data_dir and args.class_prompt):
        p.error("--with_prior_preservation needs --class_data_dir and --class_prompt")
    if not args.with_prior_preservation and (args.class_data_dir or args.class_prompt):
        logger.warning("--class_data_dir / --class_prompt are ignored without --with_prior_preservation")
    args.landmark_centre = args.landmark_centre or centre
    if args.landmark_centre is None and "angle_embedder" not in _base_index(args):
        p.error(f"--landmark_centre LAT LON is needed: no {meta_path} and the base is no AngleToImagePipeline")
    if args.landmark_centre is not None:
        lat, lon = args.landmark_centre
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            p.error(f"--landmark_centre: expected lat in [-90, 90] and lon in [-180, 180], got {lat} {lon}")
    return args


def _base_index(args) -> dict:
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(args.pretrained_model_name_or_path, revision=args.revision))
    except (OSError, ValueError):
        return {}


def build_embedder(args, components: dict) -> AngleEmbedder:
    """The base's angle embedder (weights, bins, tokens) when it is a saved AngleToImagePipeline, moved to
    ``--landmark_centre`` if given; else a new one. ValueError naming ``--num_tokens`` on a token-count mismatch."""
    if "angle_embedder" in components["model_index"]:
        kw = {"subfolder": "angle_embedder", "revision": args.revision}
        base = AngleEmbedder.from_pretrained(args.pretrained_model_name_or_path, **kw)
        if args.num_tokens not in (None, base.config.num_tokens):
            raise ValueError(f"--num_tokens {args.num_tokens}: the base's angle embedder has {base.num_tokens}")
        centre = args.landmark_centre or base.config.centre_latlon
        embedder = AngleEmbedder.from_config({**base.config, "centre_latlon": tuple(float(c) for c in centre)})
        embedder.load_state_dict(base.state_dict())
        return embedder
    return AngleEmbedder(
        hidden_size=components["text_encoder"].config.hidden_size,
        centre_latlon=tuple(args.landmark_centre),
        bin_deg=args.angle_bin_deg,
        num_tokens=args.num_tokens or 1,
        num_frequencies=args.angle_num_frequencies,
    )


@torch.no_grad()
def generate_class_images(components: dict, args, centre, device) -> Path:
    """Fill ``--class_data_dir`` up to ``--num_class_images`` images of ``--class_prompt`` with the base as plain
    text-to-image SD at its native size (existing images are kept; image ``i`` is seeded by ``seed + i``), then
    (re)write its ``metadata.csv``: every image, the class prompt, and the landmark centre as placeholder GPS (unused:
    class examples have their angle zeroed)."""
    from diffusers import StableDiffusionPipeline

    root = Path(args.class_data_dir)
    root.mkdir(parents=True, exist_ok=True)
    existing = {f.name for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
    missing, i = [], 0
    while len(existing) + len(missing) < args.num_class_images:
        missing += [i] * (f"class_{i:06d}.png" not in existing)
        i += 1
    if missing:
        logger.info("generating %d class images of %r in %s", len(missing), args.class_prompt, root)
        keys = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
        sd = StableDiffusionPipeline(**{k: components[k] for k in keys}, safety_checker=None,
                                     feature_extractor=None, requires_safety_checker=False)  # fmt: skip
        sd.set_progress_bar_config(disable=True)
        sd.to(device)
        for start in range(0, len(missing), args.sample_batch_size):
            chunk = missing[start : start + args.sample_batch_size]
            images = sd(
                [args.class_prompt] * len(chunk),
                num_inference_steps=args.class_inference_steps,  # at the base's own size, resized when read
                guidance_scale=args.class_guidance_scale,
                generator=[torch.Generator().manual_seed(args.seed + i) for i in chunk],
            ).images
            for i, image in zip(chunk, images):
                image.save(root / f"class_{i:06d}.png")
    files = sorted(f.name for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[: args.num_class_images]
    meta = {"file_name": files, "latitude": centre[0], "longitude": centre[1], "text": args.class_prompt}
    pd.DataFrame(meta).to_csv(root / "metadata.csv", index=False)
    return root


class WithClassImages:
    """Instance batches paired with class batches (the same step index), for :func:`fit`; length: the instances."""

    def __init__(self, instances: sd.CaptionedImageSource, classes: sd.CaptionedImageSource):
        self.instances, self.classes = instances, classes

    def __len__(self) -> int:
        return len(self.instances)

    def steps_per_epoch(self) -> int:
        return self.instances.steps_per_epoch()

    def batches(self, start: int):
        yield from zip(self.instances.batches(start), self.classes.batches(start))


def prior_preservation_loss(per_sample: torch.Tensor, is_class: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 6: mean instance loss + ``weight`` x mean class (prior, eq. 9) loss from per-sample losses ``(B,)``."""
    instance = per_sample[~is_class].mean()
    return instance + weight * per_sample[is_class].mean() if is_class.any() else instance


def main(argv=None) -> AngleToImagePipeline:
    args = parse_args(argv)
    run = start_run(args, "train_angle_to_image")
    components = sd.load_frozen_base(run)

    # 1. Base model, angle embedder, class images (by the base, before any fine-tuning), data, the pipeline
    torch.manual_seed(args.seed)  # the same initial embedder and LoRA weights on every process
    embedder = build_embedder(args, components).train()
    caption = args.prompt_template.format(name=args.landmark_name).replace("{", "{{").replace("}", "}}")
    source = sd.captioned_source(
        run, args.train_data, seed=args.seed, caption_column=args.caption_column, prompt_template=caption
    )
    if args.with_prior_preservation:
        if run.is_main_process:
            generate_class_images(components, args, embedder.config.centre_latlon, run.device)
        run.accelerator.wait_for_everyone()
        source = WithClassImages(source, sd.captioned_source(run, args.class_data_dir, seed=args.seed + 1))
    pipe = sd.build_finetuned_pipeline(run, AngleToImagePipeline, components, embedder)

    # 2. Loss: instance examples (azimuth of the camera GPS; text and angle zeroed together w.p. --drop_both_prob,
    #    eq. 7's null condition) + class examples (class prompt, angle zeroed, eq. 9)
    def compute_loss(model, batch, generator):
        (pixels, latlon, captions), extra = batch if args.with_prior_preservation else (batch, None)
        dropped = sd.condition_dropout_masks(
            len(captions), drop_text=0.0, drop_cond=0.0, drop_both=args.drop_both_prob, generator=generator
        )[1]
        angles, text_dropped, angle_dropped = embedder.azimuth(latlon), dropped, dropped
        if args.view_prompts:  # the text-only baseline: the view word in the caption, never the angle tokens
            views = view_words(angles, args.front_azimuth_deg)
            captions = [view_prompt(c, v) for c, v in zip(captions, views)]
            angle_dropped = torch.ones_like(dropped)
        if extra is not None:
            n = len(extra[2])
            pixels, captions = torch.cat([pixels, extra[0]]), captions + extra[2]
            angles = torch.cat([angles, angles.new_zeros(n)])
            text_dropped = torch.cat([dropped, torch.zeros(n, dtype=torch.bool)])
            angle_dropped = torch.cat([dropped, torch.ones(n, dtype=torch.bool)])
        latents, timesteps, target = sd.noisy_latents(pipe.vae, components["noise_scheduler"], pixels, generator)
        text = sd.drop_tokens(pipe._encode_text(captions), text_dropped)  # zeros, as the pipeline's null context
        angle_dropped = angle_dropped.to(run.device)
        per_sample = model(latents, timesteps, text, angles, angle_dropped, target, reduction="none")
        is_class = torch.arange(len(captions), device=per_sample.device) >= len(latlon)
        return prior_preservation_loss(per_sample, is_class, args.prior_loss_weight)

    # 3. Validation grids: the validation prompt (default: the first caption) on a ring of azimuths
    instances = source.instances if args.with_prior_preservation else source
    prompt = args.validation_prompt or instances.captions[0]
    validate = sd.grid_validator(
        run, pipe, prompt=prompt, azimuth=torch.tensor(args.validation_azimuths),
        guidance_scale=args.validation_guidance_scale,
    )  # fmt: skip

    # 4. Train
    model = sd.ConditionedDenoiser(pipe.unet, embedder, embedder.forward)
    fit(run, model, source, compute_loss, validate=validate, trainable_only=args.finetune == "lora")

    # 5. Save the pipeline (LoRA: adapters alone in diffusers' format, then merged), the final grid, the card; push
    def card(grid):
        return write_card(args, pipe, grid, prompt)

    return sd.save_trained_pipeline(run, pipe, validate, card, what="angle-to-image pipeline")


def write_card(args, pipe: AngleToImagePipeline, sample_image: str, prompt: str) -> None:
    """``output_dir/README.md`` from ``hub_cards/angle_to_image.md``."""
    cfg = pipe.angle_embedder.config
    base = args.pretrained_model_name_or_path
    keys = "finetune lora_rank resolution learning_rate train_batch_size max_train_steps seed drop_both_prob"
    keys = keys.split() + ["with_prior_preservation", "prior_loss_weight", "class_prompt", "num_class_images"]
    keys += ["view_prompts"]
    tags = ["diffusers", "stable-diffusion", "text-to-image", "angle-to-image", *["lora"] * (args.finetune == "lora")]
    card = render_model_card(
        "angle_to_image",
        repo_id=args.hub_model_id,
        base_model=None if Path(base).exists() else base,
        pipeline_tag="text-to-image",
        tags=tags,
        training_data=Path(args.train_data).name,
        finetune=args.finetune,
        landmark_name=args.landmark_name,
        centre=[round(float(c), 6) for c in cfg.centre_latlon],
        num_tokens=cfg.num_tokens,
        bin_deg=cfg.bin_deg,
        sample_image=sample_image,
        example_prompt=prompt.replace('"', "'"),
        sample_caption=f"{prompt!r} at azimuths {args.validation_azimuths}, final weights",
        prior=args.with_prior_preservation,
        class_prompt=args.class_prompt,
        prior_loss_weight=args.prior_loss_weight,
        drop_both_prob=args.drop_both_prob,
        config={k: getattr(args, k) for k in keys},
    )
    card.save(Path(args.output_dir) / "README.md")


if __name__ == "__main__":
    main()
