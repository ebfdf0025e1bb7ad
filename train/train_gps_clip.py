"""Train GPS-CLIP (paper A.1.4, Algorithm 1), the model behind the GPS score of Table 1.

Frozen image backbone + one trainable projection; latitude and longitude, normalised over the training area, through
one shared 6-layer GELU MLP, concatenated and projected; symmetric contrastive loss at a fixed temperature 0.07;
AdamW (lr 1e-4), linear warmup then cosine decay, batch 512. Data: a geotagged imagefolder / WebDataset shards (the
backbone embeds each batch) or an embedding parquet (precomputed backbone features, e.g. train/embed_images.py).
Runs under ``accelerate launch``, checkpoints every N steps and resumes exactly.

Examples:
    python train/train_gps_clip.py --train_data data/city --backbone procedural-clip \
        --backbone_pretrained procedural --output_dir outputs/gps-clip
    accelerate launch train/train_gps_clip.py --train_data data/nyc_emb --attach_backbone \
        --output_dir outputs/gps-clip --push_to_hub --hub_model_id me/gps-clip-nyc
"""

from __future__ import annotations

import argparse

import torch

from geo_models import training
from geo_models.data import GeoImageFolder, dataset_format, read_embedding_parquet
from geo_models.generation.gps_clip import GPSCLIP, contrastive_loss
from geo_models.sphere import GeoArea


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=training.CPU_RECIPES)
    # data, and the image backbone, its fine-tuning and the P augmented views (image data only)
    training.add_data_args(p, validation="held-out data: mean GPS score and loss at the end", images=True)
    p.add_argument("--lat_range", type=float, nargs=2, default=None, help="training area (default: the data's)")
    p.add_argument("--lon_range", type=float, nargs=2, default=None, help="training area (default: the data's)")
    p.add_argument("--projection_dim", type=int, default=None, help="default: the backbone's width (paper)")
    p.add_argument("--hidden_dim", type=int, default=256, help="width of the shared GPS MLP")
    p.add_argument("--num_layers", type=int, default=6, help="GELU layers of the shared GPS MLP (paper: 6)")
    p.add_argument("--num_frequencies", type=int, default=0, help="positional encoding of lat/lon (paper: 0)")
    p.add_argument("--temperature", type=float, default=0.07, help="fixed (paper: 0.07)")
    # optimisation (A.1.4): AdamW lr 1e-4, linear warmup then cosine decay, batch 512
    training.add_optim_args(
        p, train_batch_size=512, learning_rate=1e-4, num_train_epochs=20, lr_scheduler="cosine", lr_warmup_steps=500,
        max_grad_norm=0.0,
    )  # fmt: skip
    training.add_run_args(p)
    training.add_hub_args(p)
    args = p.parse_args(argv)
    training.check_args(p, args, positive=("num_layers",), non_negative=("num_frequencies",))
    if args.train_batch_size < 2:
        p.error("--train_batch_size must be >= 2 (contrastive loss needs negatives)")
    if not args.temperature > 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    training.check_data_args(p, args)
    if args.finetune != "frozen":
        p.error("--finetune: GPS-CLIP keeps its image backbone frozen (paper A.1.4); only 'frozen' is supported")
    return args


def training_area(latlon: torch.Tensor | None, args) -> GeoArea:
    """``--lat_range``/``--lon_range``, else the data's bounding box with a margin (:meth:`GeoArea.from_points`)."""
    data = GeoArea.from_points(latlon) if latlon is not None else None
    ranges = []
    for i, flag in enumerate(("lat_range", "lon_range")):
        if getattr(args, flag) is None and data is None:
            raise ValueError(f"--{flag} is required for streamed shards (the data's extent is unknown)")
        ranges.append(tuple(getattr(args, flag) or (data.lat_range, data.lon_range)[i]))
    return GeoArea(*ranges)


@torch.no_grad()
def evaluate(model: GPSCLIP, path: str) -> dict[str, float]:
    """Held-out mean GPS score with the true location, with a shuffled location, and the contrastive loss."""
    if dataset_format(path) == "embeddings":
        feats, latlon, _ = read_embedding_parquet(path)
    else:
        ds = GeoImageFolder(path)
        feats, latlon = model.embed_images([ds[i]["image"] for i in range(len(ds))]), ds.latlon
    shuffled = latlon[torch.randperm(len(latlon), generator=torch.Generator().manual_seed(0))]
    return {
        "n": len(latlon),
        "gps_score": model.gps_score(image_embeddings=feats, latlon=latlon).mean().item(),
        "gps_score_shuffled": model.gps_score(image_embeddings=feats, latlon=shuffled).mean().item(),
        "loss": model.loss(feats.to(model.device), latlon).item(),
    }


def main(argv=None) -> GPSCLIP:
    args = parse_args(argv)
    run = training.start_run(args, "train_gps_clip")

    # 1. Data and model (the training area comes from the data unless given; the backbone stays frozen)
    source, backbone, dim = training.load_training_data(run)
    area = training_area(source.latlon, args)
    with_backbone = backbone is not None or training.attached_backbone(args, dim) is not None
    gps_clip = GPSCLIP(
        lat_range=area.lat_range,
        lon_range=area.lon_range,
        embedding_dim=dim,
        projection_dim=args.projection_dim,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        num_frequencies=args.num_frequencies,
        temperature=args.temperature,
        backbone=args.backbone if with_backbone else None,
        backbone_pretrained=args.backbone_pretrained if with_backbone else None,
        seed=args.seed,
    )

    # 2. Loss: symmetric contrastive loss over the batches of every process (negatives from all of them)
    def loss(model, features, latlon, generator):
        gather = run.accelerator.gather
        return contrastive_loss(model.gps_clip(gather(features), gather(latlon)))

    # 3. Train the GPS branch and the image projection
    model = training.FeatureLoss(loss, gps_clip=gps_clip, backbone="gps_clip.backbone")
    params = [p for n, p in gps_clip.named_parameters() if not n.startswith("backbone.")]
    training.fit(run, model, source, params=params)

    # 4. Save, held-out metrics on the card, push
    gps_clip.eval()
    training.finish_run(
        run,
        gps_clip,
        evaluate=lambda path: evaluate(gps_clip, path),
    )
    return gps_clip


if __name__ == "__main__":
    main()
