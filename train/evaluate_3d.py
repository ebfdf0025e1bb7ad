"""Score a lifted 3D model against the landmark's ground truth: paper Table 3 in miniature ("GPS as a Control Signal
for Image Generation", sec. 4.5).

(a) Shape: silhouette IoU of the lifted mesh against the ground-truth mesh (``generate_landmark``'s ``mesh.glb``,
moved into the NeRF's scene frame) from ``--num_views`` azimuths evenly spaced around the landmark (default 12), at
the photos' elevation and distance. (b) View consistency: renders of the NeRF at ``--num_octant_views`` azimuths
(default 36, the bin centres 5, 15, ... 355 degrees, at the photos' size) classified by paper Table 2's angle
classifier (``geo_models.generation.evaluation.AngleClassifier`` on colour features, fitted here on the real views of
``--landmark_data``, 20% held out as its own check, or loaded from ``--angle_classifier``); the share whose predicted
bin lies within 22.5 degrees of the render's azimuth (octant accuracy) and in the right 10-degree bin.

Example:
    python train/evaluate_3d.py --run outputs/hall-3d --reference data/landmark/mesh.glb
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from geo_models.io import write_json_atomic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="an output folder of train/sds_to_mesh.py (mesh.glb and nerf/)")
    p.add_argument("--mesh", default=None, help="the lifted mesh (GLB, y up; default: RUN/mesh.glb)")
    p.add_argument("--nerf", default=None, help="the NeRF folder for the octant renders (default: RUN/nerf)")
    p.add_argument("--reference", required=True, help="ground-truth mesh.glb of generate_landmark (ENU metres)")
    p.add_argument("--landmark_data", default=None, help="real views to fit the classifier (default: --reference's)")
    p.add_argument("--angle_classifier", default=None, help="a saved AngleClassifier instead of fitting one")
    p.add_argument("--num_views", type=int, default=12, help="azimuths of the silhouette IoU")
    p.add_argument("--num_octant_views", type=int, default=36, help="renders classified for the octant accuracy")
    p.add_argument("--resolution", type=int, default=64, help="silhouette side in pixels")
    p.add_argument("--metres_per_unit", type=float, default=None, help="default: geo_models.sds' 28 m per unit")
    p.add_argument("--num_samples", type=int, default=64, help="samples per ray of the renders")
    p.add_argument("--seed", type=int, default=0, help="the classifier's held-out split")
    p.add_argument("--output", default=None, help="JSON of the figures (default: RUN/eval_3d.json)")
    args = p.parse_args(argv)
    if args.run is None and (args.mesh is None or args.nerf is None):
        p.error("give --run, or both --mesh and --nerf")
    run = Path(args.run) if args.run else None
    args.mesh = args.mesh or str(run / "mesh.glb")
    args.nerf = args.nerf or str(run / "nerf")
    args.output = args.output or (str(run / "eval_3d.json") if run else None)
    args.landmark_data = args.landmark_data or str(Path(args.reference).parent)
    for name in ("num_views", "num_octant_views", "resolution", "num_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.metres_per_unit is not None and not args.metres_per_unit > 0:
        p.error(f"--metres_per_unit must be > 0, got {args.metres_per_unit}")
    for name in ("mesh", "reference"):
        if not Path(getattr(args, name)).is_file():
            p.error(f"--{name}: {getattr(args, name)} is not a file")
    if not (Path(args.nerf) / "config.json").is_file():
        p.error(f"--nerf: {args.nerf} has no config.json (a NeRFField folder saved by sds_to_mesh)")
    if args.angle_classifier is None and not (Path(args.landmark_data) / "metadata.csv").is_file():
        p.error(f"--landmark_data: {args.landmark_data} has no metadata.csv (or pass --angle_classifier)")
    return args


def fit_classifier(args):
    """Paper Table 2's classifier on colour features of the real views (80% fit, 20% held-out check), or loaded."""
    from geo_models.data import GeoImageFolder
    from geo_models.generation.evaluation import AngleClassifier, colour_features, fit_angle_classifier

    if args.angle_classifier:
        return AngleClassifier.load(args.angle_classifier), {}, None
    ds = GeoImageFolder(args.landmark_data)
    images = [ds[i]["image"] for i in range(len(ds))]
    classifier, check, _ = fit_angle_classifier(colour_features(images), ds.metadata["azimuth_deg"].to_numpy(),
                                                seed=args.seed, config={"features": "colour"})  # fmt: skip
    return classifier, check, images[0].size[1]


def main(argv=None) -> dict:
    import trimesh

    from geo_models.generation.evaluation import angle_accuracy, colour_features
    from geo_models.hub import load_model
    from geo_models.sds import CameraSampler
    from geo_models.sds.cameras import DEFAULT_METRES_PER_UNIT
    from geo_models.sds.evaluation import glb_to_scene, reference_to_scene, render_views, silhouette_iou

    args = parse_args(argv)
    metres_per_unit = args.metres_per_unit or DEFAULT_METRES_PER_UNIT
    mesh = glb_to_scene(trimesh.load(args.mesh, force="mesh"))
    reference = reference_to_scene(trimesh.load(args.reference, force="mesh"), metres_per_unit=metres_per_unit)

    # (a) silhouette IoU at the photos' mean elevation and distance, --num_views azimuths from north
    sampler = CameraSampler(resolution=args.resolution)
    iou = silhouette_iou(mesh, reference, sampler.turntable(args.num_views))

    # (b) octant accuracy of the NeRF's renders at the bin centres, at the photos' size
    classifier, check, photo_size = fit_classifier(args)
    field = load_model(args.nerf).eval()
    azimuths = (np.arange(args.num_octant_views) + 0.5) * 360.0 / args.num_octant_views
    photos = CameraSampler(resolution=photo_size or 32)
    middle = [sum(r) / 2 for r in (photos.elevation_range, photos.distance_range, photos.fov_range)]
    cameras = photos.cameras(torch.tensor(azimuths), *middle)
    renders = render_views(field, cameras, num_samples=args.num_samples)
    accuracy = angle_accuracy(classifier.predict(colour_features(renders)), azimuths)

    result = {
        "iou_mean": float(iou.mean()),
        "iou_per_view": [round(float(x), 4) for x in iou],
        "octant_acc": accuracy["octant_acc"],
        "angle_acc": accuracy["angle_acc"],
        "classifier_real_views": check,
        "num_views": args.num_views,
        "num_octant_views": args.num_octant_views,
        "mesh": str(args.mesh),
        "reference": str(args.reference),
    }
    if args.output:
        write_json_atomic(Path(args.output), result)
    print(json.dumps({k: result[k] for k in ("iou_mean", "octant_acc", "angle_acc")}))
    return result


if __name__ == "__main__":
    main()
