"""geo_models.training.harness on a toy model: the loop's own properties, once for every trainer (optimizer steps,
gradient accumulation, EMA, extra checkpointed state, hooks, validation, checkpoint limit, resume, push)."""

import argparse
import json

import pytest
import torch
from torch import nn

from geo_models.training import (
    CheckpointError,
    EmbeddingSource,
    FeatureLoss,
    add_optim_args,
    add_run_args,
    finish_run,
    fit,
    start_run,
)
from geo_models.training.harness import EMAState


def toy_args(tmp_path, data, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--train_data", default=str(data))
    p.add_argument("--output_dir", default=str(tmp_path))
    p.add_argument("--validation_steps", type=int, default=0)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    add_optim_args(p, train_batch_size=8, learning_rate=1e-2, num_train_epochs=1, lr_scheduler="cosine")
    add_run_args(p)
    return p.parse_args(["--logging_steps", "1", *extra])


class Counter(nn.Module):
    """Extra state a trainer checkpoints (like GeoCLIP's queue): counts the rows seen."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rows", torch.zeros((), dtype=torch.long))

    def add(self, n: int) -> None:
        self.rows += n


def toy_loss(model, features, latlon, generator):
    """Regress the location from the features, with dropout drawn from the global RNG and noise from the step's
    generator: both must replay after a resume."""
    noise = torch.randn(latlon.shape, generator=generator).to(latlon.device)
    pred = model.net(nn.functional.dropout(features, 0.1, training=True))
    return ((pred - latlon / 90 - 0.01 * noise) ** 2).mean()


def train(tmp_path, data, *extra: str, **hooks):
    """One toy run (network + EMA + counter state); returns (trained module, counter, run)."""
    run = start_run(toy_args(tmp_path, data, *extra), "toy")
    source = EmbeddingSource(data, run.args.train_batch_size, run.args.seed, run.rank, run.world)
    net = nn.Linear(source.embeddings.shape[1], 2)
    counter = Counter()
    model = FeatureLoss(toy_loss, net=net)
    trained = fit(
        run,
        model,
        source,
        ema=net,
        ema_decay=0.9,
        state=[counter],
        after_step=lambda step, batches: counter.add(sum(len(b[1]) for b in batches)),
        **hooks,
    )
    return trained, counter, run


def log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "logs" / "train_log.jsonl").read_text().splitlines()]


def test_max_train_steps_counts_optimizer_steps(embedding_parquet, tmp_path):
    """--max_train_steps 4 with 3 micro-batches each: 12 batches read, 4 optimizer and schedule steps, logged."""
    _, counter, _ = train(tmp_path, embedding_parquet, "--max_train_steps", "4", "--gradient_accumulation_steps", "3")
    assert counter.rows.item() == 4 * 3 * 8
    records = log(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine over exactly 4 optimizer steps


def test_resume_equals_uninterrupted(embedding_parquet, tmp_path, interrupted_after_checkpoint):
    """Killed after the checkpoint of step 2 of 5 (gradient accumulation 2, EMA, extra state, global and per-step
    randomness): resuming gives the same weights (the EMA's, copied in), state, losses and learning rates."""
    common = ["--max_train_steps", "5", "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2"]
    a, counter_a, _ = train(tmp_path / "a", embedding_parquet, *common)
    with interrupted_after_checkpoint():
        train(tmp_path / "b", embedding_parquet, *common)
    b, counter_b, _ = train(tmp_path / "b", embedding_parquet, *common, "--resume_from_checkpoint", "latest")
    assert torch.equal(a.net.weight, b.net.weight) and torch.equal(a.net.bias, b.net.bias)
    assert counter_a.rows.item() == counter_b.rows.item() == 5 * 2 * 8
    assert [(r["loss"], r["lr"]) for r in log(tmp_path / "a")] == [(r["loss"], r["lr"]) for r in log(tmp_path / "b")]


def test_ema_weights_are_what_is_returned(embedding_parquet, tmp_path):
    """The module given as ``ema`` ends with the average, not the last weights (which the optimizer holds)."""
    run = start_run(toy_args(tmp_path, embedding_parquet, "--max_train_steps", "6"), "toy")
    source = EmbeddingSource(embedding_parquet, 8, 0)
    net = nn.Linear(8, 2)
    raw = nn.Linear(8, 2)
    raw.load_state_dict(net.state_dict())
    fit(run, FeatureLoss(toy_loss, net=net), source, ema=net, ema_decay=0.9)
    fit(start_run(toy_args(tmp_path / "raw", embedding_parquet, "--max_train_steps", "6"), "toy"),
        FeatureLoss(toy_loss, net=raw), source)  # fmt: skip
    assert not torch.equal(net.weight, raw.weight)  # same data and seeds: only the averaging differs


def test_checkpoint_limit_keeps_the_newest(embedding_parquet, tmp_path):
    train(tmp_path, embedding_parquet, "--max_train_steps", "5", "--checkpointing_steps", "1",
          "--checkpoints_total_limit", "2")  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]


def test_validation_every_n_steps_is_logged(embedding_parquet, tmp_path):
    """Validation at steps 2 and 4 of 5 (the final one is the script's, after saving); returned dicts are logged."""
    calls = []

    def validate(step):
        calls.append(step)
        return {"val_metric": float(step)}

    train(tmp_path, embedding_parquet, "--max_train_steps", "5", "--validation_steps", "2", validate=validate)
    assert calls == [2, 4]
    assert [r["val_metric"] for r in log(tmp_path) if "val_metric" in r] == [2.0, 4.0]


def test_bf16_autocast(embedding_parquet, tmp_path):
    trained, _, _ = train(tmp_path, embedding_parquet, "--max_train_steps", "2", "--mixed_precision", "bf16")
    assert trained.net.weight.dtype == torch.float32 and torch.isfinite(trained.net.weight).all()


def test_a_checkpoint_without_diffusers_ema_state_is_refused():
    ema = EMAState(nn.Linear(2, 2), 0.99)
    with pytest.raises(CheckpointError, match="EMA"):
        ema.load_state_dict({"decay": 0.99, "num_updates": 3, "shadow": [torch.zeros(2, 2), torch.zeros(2)]})


def test_finish_run_evaluates_saves_with_card_and_pushes(embedding_parquet, tmp_path, local_hub):
    """Metrics -> eval_results.json and the card (without ``n``); the output folder pushed without checkpoints."""
    args = ["--max_train_steps", "2", "--checkpointing_steps", "1", "--push_to_hub", "--hub_model_id", "me/toy"]
    trained, _, run = train(tmp_path, embedding_parquet, *args)
    run.args.validation_data = str(embedding_parquet)
    saved = {}

    def save(card):
        saved.update(card)
        (tmp_path / "weights.txt").write_text(str(trained.net.weight.sum().item()))

    metrics = finish_run(run, save, evaluate=lambda path: {"n": 48, "acc": 0.5}, what="toy")
    assert metrics == {"n": 48, "acc": 0.5}
    assert json.loads((tmp_path / "eval_results.json").read_text()) == metrics
    # the card names the local dataset by its name: no path of the machine that trained it (issue 19)
    assert saved == {"training_data": f"`{embedding_parquet.name}` (a local dataset)", "metrics": {"acc": 0.5}}
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files("me/toy")
    assert "weights.txt" in files and "eval_results.json" in files
    assert not any(f.startswith(("checkpoint-", "logs/")) for f in files)


def test_checkpoints_of_the_old_loops_are_refused_with_the_reason(embedding_parquet, tmp_path):
    """A checkpoint without the shared loop's mark whose state does not fit (e.g. the old train_locdiff had no
    scheduler) stops the resume with a message saying which old checkpoints resume and which do not."""
    train(tmp_path, embedding_parquet, "--max_train_steps", "2", "--checkpointing_steps", "2")
    manifest_path = tmp_path / "checkpoint-2" / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["loop"]
    for name in [n for n in manifest["files"] if n.startswith("scheduler_0.")]:
        del manifest["files"][name]
        (tmp_path / "checkpoint-2" / name).unlink()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="scheduler_0.json is missing.*before the shared training loop"):
        train(tmp_path, embedding_parquet, "--max_train_steps", "4", "--resume_from_checkpoint", "latest")


def test_validation_of_an_ema_run_scores_the_averaged_weights():
    """``fit`` validates an EMA run inside ``averaged_weights()`` (the toy runs above use EMA): the averages are in
    the module for the block, the trained weights back after it (training goes on from them)."""
    ema = EMAState(nn.Linear(2, 2), 0.5)
    trained_weight = ema.module.weight.detach().clone()
    ema.ema.shadow_params[0].fill_(7.0)
    with ema.averaged_weights():
        assert torch.all(ema.module.weight == 7.0)
    assert torch.equal(ema.module.weight, trained_weight)
