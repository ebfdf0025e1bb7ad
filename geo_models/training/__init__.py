"""Training, one package for every ``train/train_*.py`` script:

- :mod:`~geo_models.training.launch`: how processes start (accelerator, output folder, seeds);
- :mod:`~geo_models.training.sources`: which rows a step sees (step-indexed batch sources, exact resume);
- :mod:`~geo_models.training.checkpoints` (+ :mod:`~geo_models.training.state_tree`): what is on disk between runs
  (atomic, pickle-free checkpoints);
- :mod:`~geo_models.training.features`: how images become trainable features (backbones, views, the one
  "forward = loss" module :class:`FeatureLoss`);
- :mod:`~geo_models.training.args`: the shared flags and their checks;
- :mod:`~geo_models.training.harness`: the loop, :func:`fit`, and the end of a run, :func:`finish_run`;
- :mod:`~geo_models.training.stable_diffusion`: what only the Stable Diffusion fine-tuning scripts need (base
  loading, captioned images, condition dropout, LoRA, saving the pipeline), on the same loop.

A trainer is its flags, its model and its loss::

    run = start_run(args, "train_locdiff")
    source, backbone, dim = load_training_data(run)
    model = FeatureLoss(my_loss, unet=CSUNet(...), backbone=backbone)
    fit(run, model, source)
    finish_run(run, lambda card: pipe.save_pretrained(run.output_dir, model_card_kwargs=card), evaluate=...)
"""

from geo_models.training.args import (
    CPU_RECIPES,
    add_data_args,
    add_hub_args,
    add_image_args,
    add_optim_args,
    add_preset_arg,
    add_run_args,
    apply_preset,
    check_args,
    check_data_args,
)
from geo_models.training.checkpoints import (
    CheckpointError,
    list_checkpoints,
    prune_checkpoints,
    resolve_checkpoint,
    resume_state,
    save_checkpoint,
)
from geo_models.training.features import (
    FeatureLoss,
    ViewsTransform,
    attached_backbone,
    encode_views,
    finalize_backbone,
    load_training_data,
    setup_finetuning,
)
from geo_models.training.harness import adamw, finish_run, fit, log_metrics
from geo_models.training.launch import (
    Run,
    distributed_without_accelerator,
    enable_xformers_if_available,
    make_accelerator,
    start_run,
    step_seed,
)
from geo_models.training.sources import (
    EmbeddingSource,
    ImageFolderSource,
    StepIndexedSource,
    WebDatasetSource,
    image_source,
    seeded_call,
    step_batch_indices,
    steps_per_epoch,
)

__all__ = [
    "CPU_RECIPES",
    "CheckpointError",
    "EmbeddingSource",
    "FeatureLoss",
    "ImageFolderSource",
    "Run",
    "StepIndexedSource",
    "ViewsTransform",
    "WebDatasetSource",
    "adamw",
    "add_data_args",
    "add_hub_args",
    "add_image_args",
    "add_optim_args",
    "add_preset_arg",
    "add_run_args",
    "apply_preset",
    "attached_backbone",
    "check_args",
    "check_data_args",
    "distributed_without_accelerator",
    "enable_xformers_if_available",
    "encode_views",
    "finalize_backbone",
    "finish_run",
    "fit",
    "image_source",
    "list_checkpoints",
    "load_training_data",
    "log_metrics",
    "make_accelerator",
    "prune_checkpoints",
    "resolve_checkpoint",
    "resume_state",
    "save_checkpoint",
    "seeded_call",
    "setup_finetuning",
    "start_run",
    "step_batch_indices",
    "step_seed",
    "steps_per_epoch",
]
