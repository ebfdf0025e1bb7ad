"""Fine-tune Stable Diffusion into a GPS-to-image model ("GPS as a Control Signal for Image Generation", sec. 3.1).

A :class:`GPSEmbedder` (NeRF positional encoding with 10 frequencies + two-layer MLPs, coordinates normalised to
[-1, 1] over the training area) turns each photo's GPS tag into two tokens appended to its caption's CLIP tokens; the
UNet (LoRA on its attention, or in full) and the embedder learn the noise-prediction loss of eq. 3 with diffusers'
DDPMScheduler (epsilon or v-prediction, per the base's scheduler config). Text encoder and VAE stay frozen. Per
sample the text only, the GPS only or both are dropped (5% each, sec. 4.1) to the null conditions the pipeline's
two-condition guidance (eq. 4) uses: the empty prompt and zero GPS tokens. Paper defaults: AdamW, constant lr 1e-4.
Runs under ``accelerate launch``; checkpoints and resumes exactly; validation grids under ``output_dir/validation/``;
saves a ``GPSToImagePipeline`` (LoRA merged, and also saved alone in diffusers' format), a model card, and pushes.

Examples:
    python train/train_gps_to_image.py --pretrained_model_name_or_path CompVis/stable-diffusion-v1-4 \
        --train_data data/manhattan --area_name Manhattan --output_dir outputs/gps-to-image --resolution 512
    accelerate launch train/train_gps_to_image.py --pretrained_model_name_or_path outputs/gps-to-image \
        --train_data data/manhattan --finetune full --mixed_precision bf16 --gradient_checkpointing \
        --output_dir outputs/gps-to-image-full --push_to_hub --hub_model_id me/gps-to-image-manhattan
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from geo_models.generation import GPSEmbedder, GPSToImagePipeline
from geo_models.hub import render_model_card
from geo_models.sphere import GeoArea
from geo_models.training import fit, start_run
from geo_models.training import stable_diffusion as sd
from geo_models.training.args import CPU_RECIPES

logger = logging.getLogger("train_gps_to_image")


def _latlon_pair(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from err
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"expected lat in [-90, 90] and lon in [-180, 180], got {text!r}")
    return lat, lon


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=CPU_RECIPES)
    sd.add_finetune_args(p)
    p.add_argument(
        "--gps_area",
        type=float,
        nargs=4,
        default=None,
        metavar=("LAT_MIN", "LAT_MAX", "LON_MIN", "LON_MAX"),
        help="area normalised to [-1, 1] (default: the data's bounding box + 5%% margin)",
    )
    p.add_argument("--gps_num_frequencies", type=int, default=10, help="NeRF positional-encoding frequencies")
    p.add_argument("--gps_include_input", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--gps_mlp_hidden_dim", type=int, default=None, help="default: the text encoder's width")
    p.add_argument("--drop_text_prob", type=float, default=0.05, help="per sample: text dropped only")
    p.add_argument("--drop_gps_prob", type=float, default=0.05, help="per sample: GPS dropped only")
    p.add_argument("--drop_both_prob", type=float, default=0.05, help="per sample: both dropped")
    p.add_argument(
        "--validation_gps",
        type=_latlon_pair,
        nargs="+",
        default=None,
        metavar="LAT,LON",
        help="validation points (default: 4 training locations)",
    )
    p.add_argument("--validation_text_guidance_scale", type=float, default=3.5, help="w_p of eq. 4")
    p.add_argument("--validation_gps_guidance_scale", type=float, default=7.5, help="w_g of eq. 4")
    args = p.parse_args(argv)
    sd.check_finetune_args(p, args)
    try:
        sd.check_drop_probs(**{f"--drop_{k}_prob": getattr(args, f"drop_{k}_prob") for k in ("text", "gps", "both")})
    except ValueError as err:
        p.error(str(err))
    if args.gps_num_frequencies < 1:
        p.error(f"--gps_num_frequencies must be >= 1, got {args.gps_num_frequencies}")
    if args.gps_area is not None:
        try:
            GPSEmbedder(hidden_size=1, lat_range=args.gps_area[:2], lon_range=args.gps_area[2:])
        except ValueError as err:
            p.error(f"--gps_area (LAT_MIN LAT_MAX LON_MIN LON_MAX): {err}")
    return args


def build_embedder(args, components: dict, source: sd.CaptionedImageSource) -> GPSEmbedder:
    """The base's own embedder when it is a saved GPSToImagePipeline, else a new one over ``--gps_area``."""
    if "gps_embedder" in components["model_index"]:
        logger.info("continuing the GPS embedder of %s (its area and size)", args.pretrained_model_name_or_path)
        if args.gps_area is not None:
            logger.warning("--gps_area is ignored: the base's GPS embedder keeps its training area")
        kw = {"subfolder": "gps_embedder", "revision": args.revision}
        return GPSEmbedder.from_pretrained(args.pretrained_model_name_or_path, **kw)
    area = args.gps_area or GeoArea.from_points(source.latlon).as_list()
    return GPSEmbedder(
        hidden_size=components["text_encoder"].config.hidden_size,
        lat_range=area[:2],
        lon_range=area[2:],
        num_frequencies=args.gps_num_frequencies,
        include_input=args.gps_include_input,
        mlp_hidden_dim=args.gps_mlp_hidden_dim,
    )


def validation_points(args, source: sd.CaptionedImageSource) -> tuple[torch.Tensor, list[str]]:
    """``--validation_gps`` (default: 4 training locations) with ``--validation_prompt``, else their captions (or the
    prompt template)."""
    if args.validation_gps:
        points, prompts = torch.tensor(args.validation_gps), None
    else:
        rows = torch.linspace(0, len(source) - 1, min(4, len(source))).round().long()
        points, prompts = source.latlon[rows], [source.captions[i] for i in rows]
    prompts = [args.validation_prompt] * len(points) if args.validation_prompt else prompts
    return points, prompts or [args.prompt_template.format(area_name=args.area_name)] * len(points)


def main(argv=None) -> GPSToImagePipeline:
    args = parse_args(argv)
    run = start_run(args, "train_gps_to_image")

    # 1. Base model (VAE and text encoder frozen), data, GPS embedder, the pipeline being trained
    components = sd.load_frozen_base(run)
    source = sd.captioned_source(
        run, args.train_data, seed=args.seed, caption_column=args.caption_column,
        prompt_template=args.prompt_template, area_name=args.area_name,
    )  # fmt: skip
    torch.manual_seed(args.seed)  # the same initial embedder and LoRA weights on every process
    embedder = build_embedder(args, components, source).train()
    pipe = sd.build_finetuned_pipeline(run, GPSToImagePipeline, components, embedder)
    null_text = pipe._encode_text([""])  # eq. 4's text null condition; the GPS null is zero tokens

    # 2. Loss: eq. 3 with per-sample condition dropout; text and GPS tokens built by the pipeline's own helpers
    def compute_loss(model, batch, generator):
        pixels, latlon, captions = batch
        latents, timesteps, target = sd.noisy_latents(pipe.vae, components["noise_scheduler"], pixels, generator)
        text_dropped, gps_dropped = sd.condition_dropout_masks(
            len(captions),
            drop_text=args.drop_text_prob,
            drop_cond=args.drop_gps_prob,
            drop_both=args.drop_both_prob,
            generator=generator,
        )
        text = sd.drop_tokens(pipe._encode_text(captions), text_dropped, null_text)
        return model(latents, timesteps, text, latlon, gps_dropped.to(run.device), target)

    # 3. Validation grids at the validation points (eq. 4 guidance)
    points, prompts = validation_points(args, source)
    outside = ~embedder.contains(points[:, 0], points[:, 1])
    if outside.any():  # the embedder extrapolates there: the grids say little about training
        logger.warning("--validation_gps: %s lie outside the GPS area %s", points[outside].tolist(), embedder.area)
    validate = sd.grid_validator(
        run, pipe, prompt=prompts, latitude=points[:, 0], longitude=points[:, 1],
        text_guidance_scale=args.validation_text_guidance_scale, gps_guidance_scale=args.validation_gps_guidance_scale,
    )  # fmt: skip

    # 4. Train
    model = sd.ConditionedDenoiser(pipe.unet, embedder, pipe._gps_tokens)
    fit(run, model, source, compute_loss, validate=validate, trainable_only=args.finetune == "lora")

    # 5. Save the pipeline (LoRA: adapters alone in diffusers' format, then merged), the final grid, the card; push
    def card(grid):
        return write_card(args, pipe, grid, prompts, points)

    return sd.save_trained_pipeline(run, pipe, validate, card, what="GPS-to-image pipeline")


def write_card(args, pipe: GPSToImagePipeline, sample_image: str, prompts, points) -> None:
    """``output_dir/README.md`` from ``hub_cards/gps_to_image.md``."""
    cfg = pipe.gps_embedder.config
    area = [*cfg.lat_range, *cfg.lon_range]
    base = args.pretrained_model_name_or_path
    base_model = None if Path(base).exists() else base
    keys = ("finetune", "lora_rank", "resolution", "learning_rate", "train_batch_size", "max_train_steps", "seed")
    card = render_model_card(
        "gps_to_image",
        repo_id=args.hub_model_id,
        base_model=base_model,
        pipeline_tag="text-to-image",
        tags=[
            "diffusers",
            "stable-diffusion",
            "text-to-image",
            "gps-to-image",
            *(["lora"] * (args.finetune == "lora")),
        ],
        training_data=Path(args.train_data).name,
        finetune=args.finetune,
        gps_area=[round(v, 5) for v in area],
        sample_image=sample_image,
        example_prompt=prompts[0].replace('"', "'"),
        example_latlon=[round(v, 5) for v in points[0].tolist()],
        sample_caption=f"{prompts[0]!r} at {len(points)} locations, final weights",
        drop_probs=[args.drop_text_prob, args.drop_gps_prob, args.drop_both_prob],
        config={k: getattr(args, k) for k in keys},
    )
    card.save(Path(args.output_dir) / "README.md")


if __name__ == "__main__":
    main()
