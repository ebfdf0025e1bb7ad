"""geo_models.training.features and .sources: seeded image batches and backbone fine-tuning shared by the trainers."""

import pytest
import torch

from geo_models.encoders.image import OpenCLIPBackbone
from geo_models.training import (
    ImageFolderSource,
    ViewsTransform,
    encode_views,
    finalize_backbone,
    setup_finetuning,
)


@pytest.fixture(scope="module")
def imagefolder(geotagged_images):
    return geotagged_images


def take(source, start_step, n):
    batches = source.batches(start_step)
    return [next(batches) for _ in range(n)]


def test_views_are_seeded_per_step_and_item(imagefolder):
    views = ViewsTransform(OpenCLIPBackbone("tiny-vit").train_transform(0.5), 2)

    def source(num_workers):
        return ImageFolderSource(imagefolder, views, 4, 0, 0, 1, num_workers)

    state = torch.random.get_rng_state()
    full = take(source(0), 0, 4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG (dropout...) is left alone
    assert full[0][0].shape == (4, 2, 3, 32, 32) and full[0][1].shape == (4, 2)
    assert not torch.equal(full[0][0][:, 0], full[0][0][:, 1])  # two different views of each image
    resumed = take(source(1), 2, 2)  # a resumed run, loading in a worker process
    for (a, la), (b, lb) in zip(full[2:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_finetuning_trains_every_trainable_weight_and_finalizes(finetune):
    class Model:  # any model with a .backbone and mark_backbone_finetuned()
        finetuned = False

        def mark_backbone_finetuned(self):
            self.finetuned = True

    model = Model()
    model.backbone = OpenCLIPBackbone("tiny-vit")
    setup_finetuning(model.backbone, finetune, lora_rank=2)
    encode_views(model.backbone, torch.randn(2, 3, 3, 32, 32), trainable=True).square().sum().backward()
    trainable = {n: p for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None for p in trainable.values()), [
        n for n, p in trainable.items() if p.grad is None
    ]  # no dead adapters (DDP fails on parameters without gradients)
    finalize_backbone(model, finetune)
    assert model.finetuned and not any(p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.model.state_dict().keys() == OpenCLIPBackbone("tiny-vit").model.state_dict().keys()
    with pytest.raises(ValueError, match="finetune"):
        setup_finetuning(model.backbone, "half")
