"""Which rows a training step sees: step-indexed batch sources, so a resumed run reads exactly the batches (and
augmentations) of an uninterrupted one without replaying a data loader.

- :func:`step_batch_indices`: the rows of (step, process), a pure function of ``(step, seed)``.
- :class:`StepIndexedSource`: the base of every in-memory or on-disk source; subclasses say how rows become a batch.
  :class:`EmbeddingSource` (an embedding parquet), :class:`ImageFolderSource` (a geotagged imagefolder, items through a
  transform seeded per item) and, in the Stable Diffusion part, ``training.stable_diffusion.CaptionedImageSource``.
- :class:`WebDatasetSource`: streamed shards (length unknown); resuming skips the batches already trained on.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "STREAM_STEPS_PER_EPOCH",
    "EmbeddingSource",
    "ImageFolderSource",
    "StepIndexedSource",
    "WebDatasetSource",
    "image_source",
    "seeded_call",
    "step_batch_indices",
    "steps_per_epoch",
]

STREAM_STEPS_PER_EPOCH = 1000  # "epoch" length assumed for streamed shards (their size is unknown)


def step_batch_indices(step: int, num_samples: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1):
    """Indices of this process's batch at global ``step``: a deterministic function of (step, seed).

    Each epoch is a permutation seeded by ``seed + epoch``; a global batch of ``batch_size * world`` rows is cut
    from it (drop-last), and process ``rank`` takes its slice. Resuming at any step therefore sees exactly the
    batches an uninterrupted run would, without replaying the data loader.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    global_batch = batch_size * world
    epoch, j = divmod(step, steps_per_epoch(num_samples, batch_size, world))
    perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + epoch))
    if num_samples < global_batch:  # tiny datasets: wrap around
        perm = perm.repeat(-(-global_batch // num_samples))
    rows = perm[j * global_batch : (j + 1) * global_batch]
    return rows[rank * batch_size : (rank + 1) * batch_size]


def steps_per_epoch(num_samples: int, batch_size: int, world: int = 1) -> int:
    """Batches per epoch under :func:`step_batch_indices`."""
    return max(1, num_samples // (batch_size * world))


def seeded_call(transform, image, seed: int):
    """``transform(image)`` with the torch RNG seeded by ``seed``, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class StepIndexedSource:
    """Batches ``i = start, start + 1, ...`` of ``len(self)`` rows, batch ``i`` of this process being
    :func:`step_batch_indices` ``(i, ...)``. Subclasses implement :meth:`take` (rows in memory) or override
    :meth:`batches` with :meth:`loader` (rows read by a ``DataLoader``, each item with its own seed).

    Attributes:
        latlon: ``(N, 2)`` degrees of every row (the trainers' gallery and training area).
    """

    latlon: torch.Tensor | None

    def __init__(self, batch_size: int, seed: int, rank: int = 0, world: int = 1, num_workers: int = 0):
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.latlon)

    def indices(self, step: int) -> torch.Tensor:
        return step_batch_indices(step, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world)

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self), self.batch_size, self.world)

    def take(self, rows: torch.Tensor):
        raise NotImplementedError

    def batches(self, start: int):
        """Endless iterator of the batches from ``start`` on."""
        step = start
        while True:
            yield self.take(self.indices(step))
            step += 1

    def item_seeds(self, start: int):
        """Endless iterator of ``[(row, item seed), ...]`` per batch: a batch sampler whose augmentations are a
        function of (seed, batch, rank, position)."""
        step = start
        while True:
            yield [(int(r), hash((self.seed, step, self.rank, j))) for j, r in enumerate(self.indices(step))]
            step += 1

    def loader(self, dataset, start: int, **kwargs) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` over ``dataset[(row, seed)]`` items in the order of :meth:`item_seeds`."""
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.item_seeds(start),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),  # not the global RNG (resumed runs stay exact)
            **kwargs,
        )


class EmbeddingSource(StepIndexedSource):
    """An embedding parquet held in memory: batches ``(embeddings (B, D), latlon (B, 2))``.

    Attributes:
        embeddings: ``(N, D)`` float32. latlon: ``(N, 2)`` degrees.
    """

    def __init__(self, path, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        from geo_models.data.embeddings import read_embedding_parquet

        super().__init__(batch_size, seed, rank, world)
        self.embeddings, self.latlon, _ = read_embedding_parquet(path)

    def take(self, rows):
        return self.embeddings[rows], self.latlon[rows]


class _SeededItems(torch.utils.data.Dataset):
    """Items ``(index, seed)`` of an imagefolder -> ``{"image": transform(image) drawn with seed, "latlon"}``."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        item = self.dataset[index]
        return {"image": seeded_call(self.transform, item["image"], seed), "latlon": item["latlon"]}


class ImageFolderSource(StepIndexedSource):
    """A geotagged imagefolder: batches ``(transform(images) (B, ...), latlon (B, 2))``, e.g. ``(B, P, 3, S, S)``
    views, with augmentations seeded by (seed, step, rank, item)."""

    def __init__(self, path, transform, batch_size, seed, rank=0, world=1, num_workers=0):
        from geo_models.data import GeoImageFolder

        super().__init__(batch_size, seed, rank, world, num_workers)
        self.dataset = _SeededItems(GeoImageFolder(path), transform)
        self.latlon = self.dataset.dataset.latlon

    def batches(self, start: int):
        for batch in self.loader(self.dataset, start):
            yield batch["image"], batch["latlon"]


class _SeededStream(torch.utils.data.IterableDataset):
    """A WebDataset's items with ``transform`` seeded by (``seed``, worker, position in the worker's stream)."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for i, item in enumerate(self.dataset):
            image = seeded_call(self.transform, item["image"], hash((self.seed, worker, i)))
            yield {"image": image, "latlon": item["latlon"]}


class WebDatasetSource:
    """WebDataset shards streamed epoch after epoch (each process reads its own shards); resuming skips the batches
    already trained on. ``latlon`` is None (unknown until streamed)."""

    latlon = None

    def __init__(self, path, transform, batch_size, num_workers=0, *, seed: int = 0, rank: int = 0):
        from geo_models.data import GeoWebDataset

        self.dataset = GeoWebDataset(path, shuffle_shards=True, seed=seed)
        self.transform, self.seed, self.rank = transform, seed, rank
        self.batch_size, self.num_workers = batch_size, num_workers

    def steps_per_epoch(self) -> int:
        return STREAM_STEPS_PER_EPOCH

    def batches(self, start: int):
        seen, epoch = 0, 0
        while True:
            stream = _SeededStream(self.dataset, self.transform, hash((self.seed, self.rank, epoch)))
            loader = torch.utils.data.DataLoader(
                stream,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                generator=torch.Generator().manual_seed(self.seed + epoch),
            )
            for batch in loader:
                seen += 1
                if seen > start:  # resume: skip the batches already trained on
                    yield batch["image"], batch["latlon"]
            epoch += 1


def image_source(data_format: str, path, transform, *, batch_size, seed, rank=0, world=1, num_workers=0):
    """The training source of an ``imagefolder`` or ``webdataset`` (``data_format``): ``.batches(start)`` yields
    ``(transform(images) (B, ...), latlon (B, 2))``; ``.latlon`` is None for streamed shards."""
    if data_format == "imagefolder":
        return ImageFolderSource(path, transform, batch_size, seed, rank, world, num_workers)
    if data_format == "webdataset":
        return WebDatasetSource(path, transform, batch_size, num_workers, seed=seed, rank=rank)
    raise ValueError(f"data_format must be 'imagefolder' or 'webdataset', got {data_format!r}")
