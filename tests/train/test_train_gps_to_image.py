"""train_gps_to_image.py on tiny seeded components: LoRA (only adapters + embedder change, diffusers LoRA file, fresh
process reload, Hub push), full fine-tuning from a saved GPSToImagePipeline, condition dropout, exact resume with
gradient accumulation, 2 processes, CLI errors."""

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from geo_models.data.procedural import generate_city
from geo_models.generation import GPSEmbedder, GPSToImagePipeline
from geo_models.testing import IMAGE_ATOL, tiny_gps_to_image_pipeline
from geo_models.testing.tiny import TINY_GPS_AREA, tiny_sd_components
from geo_models.training.stable_diffusion import check_drop_probs, condition_dropout_masks, drop_tokens, noisy_latents

REPO = Path(__file__).resolve().parents[2]
SAMPLE = {"num_inference_steps": 2, "output_type": "np"}
ATTENTION = (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")


@pytest.fixture(scope="module")
def data(sd_data):
    """The SD base (tiny components), a saved tiny GPSToImagePipeline, and a 16-image Manhattan imagefolder."""
    images = functools.partial(generate_city, num_images=16, image_size=32, seed=0, progress=False)
    return sd_data("gps_to_image", gps=tiny_gps_to_image_pipeline().save_pretrained, city=images)


@pytest.fixture
def run(sd_trainer, data):
    return sd_trainer("train_gps_to_image", data, "city")


def test_lora_run_saves_pipeline_lora_and_card_and_pushes(
    train_script, data, tmp_path, local_hub, run, unet_weights, generate_in_fresh_process
):
    out = tmp_path / "out"
    pipe = run(out, "--max_train_steps", "3", "--validation_steps", "2", "--push_to_hub",
               "--hub_model_id", "tester/gps-to-image")  # fmt: skip
    assert isinstance(pipe, GPSToImagePipeline)
    for name in ("model_index.json", "gps_embedder/config.json", "pytorch_lora_weights.safetensors", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "validation" / "step-2.png").is_file() and (out / "validation" / "final.png").is_file()
    log = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)

    # only the attention projections (the merged LoRA) differ from the base UNet; VAE and text encoder untouched
    base, trained = unet_weights(data / "sd"), unet_weights(out)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(any(a in k for a in ATTENTION) for k in changed), sorted(changed)[:5]
    for sub in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(str(data / "sd" / sub)), load_file(str(out / sub))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the embedder trained (vs its seeded initialisation over the data's area)
    cfg = pipe.gps_embedder.config
    torch.manual_seed(0)
    init = GPSEmbedder(hidden_size=32, lat_range=cfg.lat_range, lon_range=cfg.lon_range).state_dict()
    assert any(not torch.equal(v, pipe.gps_embedder.state_dict()[k]) for k, v in init.items())
    lat = pd.read_csv(data / "city" / "metadata.csv")["latitude"]
    assert cfg.lat_range[0] < lat.min() and cfg.lat_range[1] > lat.max()

    # base + gps_embedder + load_lora_weights (diffusers format) == the saved merged UNet
    sd = tiny_sd_components()
    sd.pop("unet")
    lora_pipe = GPSToImagePipeline(
        unet=UNet2DConditionModel.from_pretrained(data / "sd" / "unet"),
        gps_embedder=GPSEmbedder.from_pretrained(out / "gps_embedder"),
        **sd,
    )
    lora_pipe.load_lora_weights(out)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 79, 32)
    with torch.no_grad():
        torch.testing.assert_close(lora_pipe.unet(x, t, ctx).sample, pipe.unet(x, t, ctx).sample, atol=1e-5, rtol=0)

    card = (out / "README.md").read_text()
    assert "validation/final.png" in card and "load_lora_weights" in card and "tester/gps-to-image" in card
    from huggingface_hub import HfApi

    info = HfApi().model_info("tester/gps-to-image")
    assert {"gps_to_image", "lora", "text-to-image"} <= set(info.card_data["tags"])
    files = HfApi().list_repo_files("tester/gps-to-image")
    assert "gps_embedder/config.json" in files and not any(f.startswith(("checkpoint-", "logs/")) for f in files)

    # a fresh process: DiffusionPipeline.from_pretrained(folder / repo id) generates what the returned pipeline does
    call = {"prompt": "a street", "latitude": 40.78, "longitude": -73.96}
    images = generate_in_fresh_process("GPSToImagePipeline", call, out, "tester/gps-to-image")
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a street", 40.78, -73.96, generator=torch.Generator().manual_seed(0), **SAMPLE).images
    assert images.shape == (2, 1, 32, 32, 3)
    # loaded copies (folder, repo id) may run other MKL kernels: equal up to float32 rounding (testing.tolerances)
    np.testing.assert_allclose(images[0], expected, rtol=0, atol=IMAGE_ATOL)
    np.testing.assert_allclose(images[1], images[0], rtol=0, atol=IMAGE_ATOL)


@pytest.mark.filterwarnings("ignore:latlon. some coordinates lie outside the training area")
def test_full_finetune_from_saved_gps_pipeline(train_script, data, tmp_path, run, unet_weights, tiny_sd_finetune_args):
    """--finetune full from a saved GPSToImagePipeline: its embedder (area) continues, the whole UNet trains."""
    out = tmp_path / "full"
    pipe = train_script("train_gps_to_image").main(
        ["--pretrained_model_name_or_path", str(data / "gps"), "--train_data", str(data / "city"),
         "--output_dir", str(out), *tiny_sd_finetune_args, "--finetune", "full", "--max_train_steps", "2",
         "--checkpointing_steps", "2", "--mixed_precision", "bf16", "--gradient_checkpointing"]
    )  # fmt: skip
    assert tuple(pipe.gps_embedder.config.lat_range) == TINY_GPS_AREA["lat_range"]
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    base, trained = unet_weights(data / "gps"), unet_weights(out)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert "conv_in.weight" in changed and len(changed) > len(base) // 2
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in trained.values())
    before = GPSEmbedder.from_pretrained(data / "gps" / "gps_embedder").state_dict()
    after = GPSEmbedder.from_pretrained(out / "gps_embedder").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # a full checkpoint is no LoRA checkpoint (LoRA runs load non-strictly, so this is checked)
    with pytest.raises(ValueError, match="resume_from_checkpoint: .* does not hold this run's weights"):
        run(tmp_path / "lora", "--max_train_steps", "3", "--resume_from_checkpoint",
            str(out / "checkpoint-2"))  # fmt: skip


def test_condition_dropout_fractions():
    n = 200_000
    text, gps = condition_dropout_masks(
        n, drop_text=0.05, drop_cond=0.05, drop_both=0.05, generator=torch.Generator().manual_seed(0)
    )
    fractions = [(text & ~gps).float().mean(), (~text & gps).float().mean(), (text & gps).float().mean()]
    assert all(abs(f.item() - 0.05) < 0.003 for f in fractions), fractions
    again = condition_dropout_masks(n, drop_text=0.05, drop_cond=0.05, drop_both=0.05,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(text, again[0]) and torch.equal(gps, again[1])
    text, gps = condition_dropout_masks(1000, drop_text=0.3, drop_cond=0.0, drop_both=0.7)
    assert text.all() and 620 < gps.sum() < 780  # text dropped everywhere, GPS w.p. 0.7
    assert not any(m.any() for m in condition_dropout_masks(100, drop_text=0, drop_cond=0, drop_both=0))
    with pytest.raises(ValueError, match="--drop_text_prob \\+ --drop_gps_prob"):
        check_drop_probs(**{"--drop_text_prob": 0.5, "--drop_gps_prob": 0.6})
    with pytest.raises(ValueError, match="drop_both"):
        condition_dropout_masks(4, drop_text=0, drop_cond=0, drop_both=-0.1)


def test_dropped_conditions_are_the_pipelines_null_conditions():
    """Dropped text -> the empty prompt's tokens, dropped GPS -> zero tokens: what eq. 4's guidance uses."""
    pipe = tiny_gps_to_image_pipeline()
    text = pipe._encode_text(["a park", "a street", "a bridge"])
    null = pipe._encode_text([""])
    dropped = drop_tokens(text, torch.tensor([False, True, False]), null)
    assert torch.equal(dropped[1], null[0]) and torch.equal(dropped[0], text[0]) and torch.equal(dropped[2], text[2])
    gps = pipe._gps_tokens(torch.tensor([[40.75, -73.98], [40.8, -73.95]]))
    assert torch.equal(drop_tokens(gps, torch.tensor([True, False]))[0], torch.zeros_like(gps[0]))


def test_noisy_latents_targets():
    from diffusers import DDPMScheduler

    vae = tiny_sd_components()["vae"]
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    for kind in ("epsilon", "v_prediction"):
        sched = DDPMScheduler(prediction_type=kind)
        noisy, t, target = noisy_latents(vae, sched, pixels, torch.Generator().manual_seed(0))
        assert noisy.shape == target.shape == (2, 4, 8, 8) and t.shape == (2,)
        again = noisy_latents(vae, sched, pixels, torch.Generator().manual_seed(0))
        assert all(torch.equal(a, b) for a, b in zip((noisy, t, target), again))
    assert not torch.equal(target, noisy_latents(vae, DDPMScheduler(), pixels, torch.Generator().manual_seed(0))[2])


def test_resume_matches_uninterrupted_run(tmp_path, interrupted_after_checkpoint, run):
    """LoRA + gradient accumulation 2: killed right after the checkpoint at step 2 (which holds only the trainable
    weights) and resumed, the run ends with the same weights and losses as 4 steps in one go."""
    common = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2"]
    common += ["--validation_steps", "100", "--seed", "3"]
    run(tmp_path / "a", *common)
    with interrupted_after_checkpoint():
        run(tmp_path / "b", *common)
    saved = load_file(str(tmp_path / "b" / "checkpoint-2" / "model_0.safetensors"))
    assert all(".lora_" in k or k.startswith("embedder.") for k in saved) and any(".lora_" in k for k in saved)
    run(tmp_path / "b", *common, "--resume_from_checkpoint", "latest")
    for sub in ("unet/diffusion_pytorch_model.safetensors", "gps_embedder/diffusion_pytorch_model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / sub)), load_file(str(tmp_path / "b" / sub))
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    logs = [(tmp_path / x / "logs" / "train_log.jsonl").read_text().splitlines() for x in "ab"]
    assert [json.loads(r)["loss"] for r in logs[0]] == [json.loads(r)["loss"] for r in logs[1]]


def test_two_processes(data, tmp_path, launch_two_processes, tiny_sd_finetune_args):
    """Two CPU processes under accelerate (torchrun + gloo), LoRA: RNG per rank checkpointed, pipeline saved."""
    out = tmp_path / "ddp"
    argv = [
        "--pretrained_model_name_or_path", str(data / "sd"), "--train_data", str(data / "city"),
        "--output_dir", str(out), *tiny_sd_finetune_args, "--max_train_steps", "2", "--checkpointing_steps", "2",
    ]  # fmt: skip
    result = launch_two_processes("train_gps_to_image", argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stderr
    names = sorted(p.name for p in (out / "checkpoint-2").glob("rng_state_*.json"))
    assert names == ["rng_state_0.json", "rng_state_1.json"]
    pipe = GPSToImagePipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a street", 40.78, -73.96, **SAMPLE).images.shape == (1, 32, 32, 3)


@pytest.fixture(scope="module")
def no_latitude(tmp_path_factory, data, metadata_only_copy):
    return metadata_only_copy(data / "city", tmp_path_factory.mktemp("no_latitude"), drop=("latitude",))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train_data", "NO_LATITUDE"], "--train_data"),
        (["--train_data", "/nonexistent/x"], "--train_data"),
        (["--drop_text_prob", "0.5", "--drop_gps_prob", "0.4", "--drop_both_prob", "0.2"], "must be <= 1"),
        (["--drop_gps_prob", "-0.1"], "--drop_gps_prob"),
        (["--finetune", "frozen"], "--finetune"),
        (["--lora_rank", "0"], "--lora_rank"),
        (["--resolution", "0"], "--resolution"),
        (["--gps_area", "41", "40", "-74", "-73"], "--gps_area"),
        (["--validation_gps", "40.7"], "--validation_gps"),
        (["--validation_gps", "95,10"], "--validation_gps"),
        (["--caption_column", "nope"], "--caption_column"),
        (["--prompt_template", "a photo of {city}"], "--prompt_template"),
        (["--push_to_hub"], "--hub_model_id"),
        (["--learning_rate", "0"], "--learning_rate"),
    ],
)
def test_cli_errors(train_script, data, no_latitude, tmp_path, capsys, extra, message):
    extra = [str(no_latitude) if x == "NO_LATITUDE" else x for x in extra]
    argv = ["--pretrained_model_name_or_path", str(data / "sd"), "--train_data", str(data / "city")]
    with pytest.raises(SystemExit):
        train_script("train_gps_to_image").parse_args([*argv, "--output_dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert message in err, err
    if str(no_latitude) in extra:
        assert "latitude" in err


def test_validation_points_outside_the_embedders_area_warn(run, tmp_path, caplog):
    """The trainer checks --validation_gps against the GPS embedder's trained area (GPSEmbedder.contains)."""
    with caplog.at_level("WARNING", logger="train_gps_to_image"):
        run(tmp_path, "--max_train_steps", "1", "--validation_gps", "0,0", "40.78,-73.96")
    assert "[[0.0, 0.0]] lie outside the GPS area" in caplog.text
