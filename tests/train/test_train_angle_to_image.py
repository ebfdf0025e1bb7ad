"""train_angle_to_image.py on tiny seeded components and a 16-view procedural landmark: LoRA + prior preservation
(class images generated once by the base, reused and topped up; only adapters + embedder change; diffusers LoRA file;
fresh-process reload; Hub push), eq. 7's null condition in training, the prior loss, full fine-tuning from a saved
AngleToImagePipeline, exact resume, CLI errors."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file

from geo_models.data.procedural import generate_landmark
from geo_models.data.procedural.landmark import LANDMARK_CENTRE
from geo_models.generation import AngleEmbedder, AngleToImagePipeline
from geo_models.testing import IMAGE_ATOL, tiny_angle_to_image_pipeline
from geo_models.testing.tiny import TINY_LANDMARK_CENTRE, tiny_sd_components

ATTENTION = (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")
PRIOR = ["--with_prior_preservation", "--class_prompt", "A photo of a building", "--class_inference_steps", "2"]
PRIOR += ["--sample_batch_size", "2"]


@pytest.fixture(scope="module")
def data(sd_data):
    """The SD base (tiny components), a saved tiny AngleToImagePipeline (Eiffel Tower centre), 16 landmark views."""
    images = functools.partial(generate_landmark, num_images=16, image_size=32, seed=0, progress=False)
    return sd_data("angle_to_image", angle=tiny_angle_to_image_pipeline().save_pretrained, landmark=images)


@pytest.fixture
def train(sd_trainer, data):
    return sd_trainer("train_angle_to_image", data, "landmark")


def test_lora_prior_preservation_run_saves_reloads_and_pushes(
    train, train_script, data, tmp_path, local_hub, generate_in_fresh_process, monkeypatch, unet_weights
):
    out, classes = tmp_path / "out", tmp_path / "classes"
    module = train_script("train_angle_to_image")
    combined = []  # (batch size, class examples, weight) of every prior_preservation_loss call
    loss = module.prior_preservation_loss
    monkeypatch.setattr(module, "prior_preservation_loss",
                        lambda p, c, w: combined.append((len(p), int(c.sum()), w)) or loss(p, c, w))  # fmt: skip
    pipe = train(out, "--max_train_steps", "3", "--validation_steps", "2", *PRIOR, "--class_data_dir", str(classes),
                 "--num_class_images", "3", "--push_to_hub", "--hub_model_id", "tester/angle-to-image")  # fmt: skip
    assert isinstance(pipe, AngleToImagePipeline)
    assert combined == [(8, 4, 1.0)] * 3  # 4 instance + 4 class examples per step, lambda = 1
    for name in ("model_index.json", "angle_embedder/config.json", "pytorch_lora_weights.safetensors", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "validation" / "step-2.png").is_file() and (out / "validation" / "final.png").is_file()
    log = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    # class images by the base model, with their metadata (class prompt)
    assert sorted(p.name for p in classes.glob("*.png")) == [f"class_00000{i}.png" for i in range(3)]
    assert set(pd.read_csv(classes / "metadata.csv")["text"]) == {"A photo of a building"}

    # only the attention projections (the merged LoRA) differ from the base UNet; VAE and text encoder untouched
    base, trained = unet_weights(data / "sd"), unet_weights(out)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(any(a in k for a in ATTENTION) for k in changed), sorted(changed)[:5]
    for sub in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(str(data / "sd" / sub)), load_file(str(out / sub))
        assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = pipe.angle_embedder.config  # centre from landmark.json; the embedder trained from its seeded init
    assert tuple(cfg.centre_latlon) == LANDMARK_CENTRE and cfg.num_tokens == 1 and cfg.hidden_size == 32
    torch.manual_seed(0)
    init = AngleEmbedder(hidden_size=32, centre_latlon=LANDMARK_CENTRE).state_dict()
    assert any(not torch.equal(v, pipe.angle_embedder.state_dict()[k]) for k, v in init.items())

    # base + angle_embedder + load_lora_weights (diffusers format) == the saved merged UNet
    sd = tiny_sd_components()
    sd.pop("unet")
    embedder = AngleEmbedder.from_pretrained(out / "angle_embedder")
    unet = UNet2DConditionModel.from_pretrained(data / "sd" / "unet")
    lora_pipe = AngleToImagePipeline(unet=unet, angle_embedder=embedder, **sd)
    lora_pipe.load_lora_weights(out)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 78, 32)
    with torch.no_grad():
        torch.testing.assert_close(lora_pipe.unet(x, t, ctx).sample, pipe.unet(x, t, ctx).sample, atol=1e-5, rtol=0)

    card = (out / "README.md").read_text()
    assert "Meridian Hall" in card and "load_lora_weights" in card and "tester/angle-to-image" in card
    assert "A photo of a building" in card and "validation/final.png" in card
    from huggingface_hub import HfApi

    assert {"angle_to_image", "lora"} <= set(HfApi().model_info("tester/angle-to-image").card_data["tags"])
    files = HfApi().list_repo_files("tester/angle-to-image")
    assert "angle_embedder/config.json" in files and not any(f.startswith(("checkpoint-", "logs/")) for f in files)

    # a fresh process: DiffusionPipeline.from_pretrained(folder / repo id) generates what the returned pipeline does
    call = {"prompt": "A photo of Meridian Hall", "azimuth": [0.0, 180.0]}
    images = generate_in_fresh_process("AngleToImagePipeline", call, out, "tester/angle-to-image")
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(**call, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 2, 32, 32, 3)
    # loaded copies (folder, repo id) may run other MKL kernels: equal up to float32 rounding (testing.tolerances)
    np.testing.assert_allclose(images[0], expected.images, rtol=0, atol=IMAGE_ATOL)
    np.testing.assert_allclose(images[1], images[0], rtol=0, atol=IMAGE_ATOL)

    # a second run keeps the 3 class images and generates only the missing 4th one
    before = {p.name: p.read_bytes() for p in classes.glob("*.png")}
    prompts = []
    generate = StableDiffusionPipeline.__call__
    monkeypatch.setattr(
        StableDiffusionPipeline, "__call__", lambda s, p, **kw: prompts.extend(p) or generate(s, p, **kw)
    )
    train(tmp_path / "again", "--max_train_steps", "1", *PRIOR, "--class_data_dir", str(classes),
          "--num_class_images", "4")  # fmt: skip
    assert prompts == ["A photo of a building"]
    assert all((classes / name).read_bytes() == b for name, b in before.items())
    assert len(pd.read_csv(classes / "metadata.csv")) == 4


def test_prior_preservation_loss(train_script):
    combine = train_script("train_angle_to_image").prior_preservation_loss
    per_sample, is_class = torch.tensor([1.0, 3.0, 10.0, 30.0]), torch.tensor([False, False, True, True])
    assert combine(per_sample, is_class, 0.0) == 2.0  # lambda = 0: the instance loss
    assert combine(per_sample, is_class, 1.0) == 22.0 and combine(per_sample, is_class, 0.5) == 12.0
    assert combine(per_sample, torch.zeros(4, dtype=torch.bool), 1.0) == per_sample.mean()


def record_training_contexts(monkeypatch) -> list:
    """The UNet's ``encoder_hidden_states`` of every call with gradients (the training forwards), as a list that
    fills while the test runs."""
    contexts = []
    forward = UNet2DConditionModel.forward

    def record(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        if torch.is_grad_enabled():
            contexts.append(encoder_hidden_states.detach().clone())
        return forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", record)
    return contexts


def test_training_conditions_match_the_pipelines_null_condition(train, tmp_path, monkeypatch):
    """Dropped instance examples get all-zero context (text and angle zeroed: the pipeline's eq. 7 null context);
    class examples keep their prompt with zero angle tokens."""
    pipe = tiny_angle_to_image_pipeline()
    seen = []
    predict = pipe._predict_noise
    monkeypatch.setattr(
        pipe, "_predict_noise", lambda z, t, contexts: seen.append(contexts) or predict(z, t, contexts)
    )
    pipe("A photo of the landmark", azimuth=[90.0], num_inference_steps=1)
    null = seen[0][0]
    assert null.shape == (1, 78, 32) and not null.any()

    contexts = record_training_contexts(monkeypatch)
    train(tmp_path / "out", "--max_train_steps", "1", "--drop_both_prob", "1", "--validation_steps", "10", *PRIOR,
          "--class_data_dir", str(tmp_path / "classes"), "--num_class_images", "2")  # fmt: skip
    (context,) = contexts
    assert context.shape == (8, 78, 32)
    assert torch.equal(context[:4], null.expand(4, -1, -1))  # instances: all dropped
    assert not context[4:, -1:].any() and all(row[:-1].any() for row in context[4:])  # class: prompt, no angle


def test_full_finetune_from_saved_angle_pipeline(train, data, tmp_path, unet_weights):
    """--finetune full from a saved AngleToImagePipeline: its embedder continues (moved to the data's centre)."""
    with pytest.raises(ValueError, match="--num_tokens 2"):
        train(tmp_path / "bad", "--num_tokens", "2", "--max_train_steps", "1", base="angle")
    out = tmp_path / "full"
    pipe = train(out, "--finetune", "full", "--max_train_steps", "2", "--mixed_precision", "bf16",
                 "--gradient_checkpointing", base="angle")  # fmt: skip
    assert tuple(pipe.angle_embedder.config.centre_latlon) == LANDMARK_CENTRE != TINY_LANDMARK_CENTRE
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    base, trained = unet_weights(data / "angle"), unet_weights(out)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert "conv_in.weight" in changed and len(changed) > len(base) // 2
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in trained.values())
    before = AngleEmbedder.from_pretrained(data / "angle" / "angle_embedder").state_dict()
    after = AngleEmbedder.from_pretrained(out / "angle_embedder").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all((before[k] - after[k]).abs().max() < 0.05 for k in before)  # continued, not re-initialised


def test_resume_matches_uninterrupted_run(train, tmp_path, interrupted_after_checkpoint):
    """LoRA, 2 angle tokens, prior preservation, gradient accumulation 2: killed right after the checkpoint at step 2
    and resumed, the run ends with the same weights and losses as 4 steps in one go."""
    common = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2"]
    common += ["--validation_steps", "100", "--seed", "3", "--num_tokens", "2", "--train_batch_size", "2", *PRIOR]
    common += ["--class_data_dir", str(tmp_path / "classes"), "--num_class_images", "2"]
    train(tmp_path / "a", *common)
    with interrupted_after_checkpoint():
        train(tmp_path / "b", *common)
    saved = load_file(str(tmp_path / "b" / "checkpoint-2" / "model_0.safetensors"))
    assert all(".lora_" in k or k.startswith("embedder.") for k in saved) and any(".lora_" in k for k in saved)
    train(tmp_path / "b", *common, "--resume_from_checkpoint", "latest")
    for sub in ("unet/diffusion_pytorch_model.safetensors", "angle_embedder/diffusion_pytorch_model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / sub)), load_file(str(tmp_path / "b" / sub))
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    logs = [(tmp_path / x / "logs" / "train_log.jsonl").read_text().splitlines() for x in "ab"]
    assert [json.loads(r)["loss"] for r in logs[0]] == [json.loads(r)["loss"] for r in logs[1]]
    assert AngleEmbedder.from_pretrained(tmp_path / "a" / "angle_embedder").num_tokens == 2


@pytest.fixture(scope="module")
def no_landmark_json(tmp_path_factory, data, metadata_only_copy):
    return metadata_only_copy(data / "landmark", tmp_path_factory.mktemp("no_landmark_json"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train_data", "NO_LANDMARK_JSON"], "--landmark_centre"),
        (["--landmark_centre", "95", "0"], "--landmark_centre"),
        (["--landmark_centre", "45"], "--landmark_centre"),
        (["--num_tokens", "3"], "--num_tokens"),
        (["--with_prior_preservation", "--class_data_dir", "x"], "--class_prompt"),
        (["--with_prior_preservation", "--class_prompt", "a building"], "--class_data_dir"),
        (["--prior_loss_weight", "-1"], "--prior_loss_weight"),
        (["--num_class_images", "0"], "--num_class_images"),
        (["--drop_both_prob", "1.5"], "--drop_both_prob"),
        (["--angle_bin_deg", "7"], "--angle_bin_deg"),
        (["--prompt_template", "A photo of {area_name}"], "{name}"),
        (["--train_data", "/nonexistent/x"], "--train_data"),
        (["--finetune", "frozen"], "--finetune"),
        (["--push_to_hub"], "--hub_model_id"),
    ],
)
def test_cli_errors(train_script, data, no_landmark_json, tmp_path, capsys, extra, message):
    extra = [str(no_landmark_json) if x == "NO_LANDMARK_JSON" else x for x in extra]
    argv = ["--pretrained_model_name_or_path", str(data / "sd"), "--train_data", str(data / "landmark")]
    with pytest.raises(SystemExit):
        train_script("train_angle_to_image").parse_args([*argv, "--output_dir", str(tmp_path), *extra])
    assert message in capsys.readouterr().err


def test_centre_from_flag_or_base(train_script, data, no_landmark_json, tmp_path):
    parse = train_script("train_angle_to_image").parse_args
    common = ["--train_data", str(no_landmark_json), "--output_dir", str(tmp_path)]
    args = parse(["--pretrained_model_name_or_path", str(data / "sd"), *common, "--landmark_centre", "45", "7"])
    assert args.landmark_centre == [45.0, 7.0] and args.landmark_name == "the landmark"
    args = parse(["--pretrained_model_name_or_path", str(data / "angle"), *common])  # the base's own centre
    assert args.landmark_centre is None and args.prompt_template == "A photo of {name}"


def test_view_prompts_baseline_trains_text_only_with_view_words(train, data, tmp_path, monkeypatch):
    """--view_prompts (the DreamFusion baseline of Table 3): captions end in the view word of each photo's azimuth
    (front = facing the porch, south) and the angle tokens are zero in every training context."""
    from geo_models.sds.views import view_words

    captions = []
    encode = AngleToImagePipeline._encode_text
    monkeypatch.setattr(AngleToImagePipeline, "_encode_text",
                        lambda self, prompts: captions.append(list(prompts)) or encode(self, prompts))  # fmt: skip
    contexts = record_training_contexts(monkeypatch)
    train(tmp_path / "out", "--max_train_steps", "2", "--drop_both_prob", "0", "--validation_steps", "10",
          "--view_prompts")  # fmt: skip
    assert len(contexts) == 2 and all(not c[:, -1:].any() and c[:, :-1].any() for c in contexts)
    trained = [c for c in captions if all(", " in p and p.endswith(" view") for p in c)]
    assert len(trained) == 2 and all(len(c) == 4 for c in trained)
    meta = pd.read_csv(data / "landmark" / "metadata.csv")
    words = set(view_words(meta["azimuth_deg"].to_numpy()))
    seen = {p.rsplit(", ", 1)[1].split()[0] for c in trained for p in c}
    assert seen <= words and len(words) == 3
