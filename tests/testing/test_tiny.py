"""Tiny offline components: open_clip configs, the real CLIP tokenizer, a tiny Stable Diffusion pipeline."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from geo_models.testing.tiny import (
    clip_tokenizer,
    register_tiny_open_clip_configs,
    save_clip_tokenizer,
    tiny_open_clip,
    tiny_sd_components,
    tiny_stable_diffusion_pipeline,
)
from geo_models.testing.tolerances import IMAGE_ATOL

SENTENCES = [
    "a photo of a cat.",
    "Hello, World!!! It's 3:45pm -- we'll meet at the café in Zürich; don't be late?",
    "東京タワー at night 🗼, naïve façade",
    "  multiple   spaces\tand\nnewlines  ",
    "",
    "the eiffel tower " * 40,  # longer than 77 tokens: truncated, last id is <|endoftext|>
]


def _hf_ids(tok, texts):
    return tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def test_register_is_idempotent_and_model_is_deterministic():
    assert "tiny-vit" in register_tiny_open_clip_configs()
    register_tiny_open_clip_configs()
    assert "tiny-vit" in open_clip.list_models()
    state = torch.random.get_rng_state()
    m1, preprocess = tiny_open_clip("tiny-vit", seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    m2, _ = tiny_open_clip("tiny-vit", seed=0)
    m3, _ = tiny_open_clip("tiny-vit", seed=1)
    x = preprocess(Image.new("RGB", (50, 40), (200, 10, 30))).unsqueeze(0)
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        f1, f2, f3 = (m.encode_image(x) for m in (m1, m2, m3))
        t = m1.encode_text(open_clip.tokenize(["a photo"]))
    assert f1.shape == (1, 32) and t.shape == (1, 32)
    assert torch.equal(f1, f2) and not torch.allclose(f1, f3)
    with pytest.raises(ValueError, match="name"):
        tiny_open_clip("not-a-tiny-model")


def test_clip_tokenizer_matches_open_clip(tmp_path):
    tok = clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    ref = open_clip.tokenize(SENTENCES)
    ids = _hf_ids(tok, SENTENCES)
    assert ids.shape == ref.shape == (len(SENTENCES), 77)
    for r, h in zip(ref, ids):
        n = int((r != 0).sum())  # open_clip pads with 0, transformers with <|endoftext|>
        assert torch.equal(r[:n], h[:n])
        assert (h[n:] == 49407).all()
    assert ids[-1, -1] == 49407 and (ref[-1] != 0).all()  # truncated row keeps its end token

    save_clip_tokenizer(tmp_path / "tok")
    from transformers import CLIPTokenizer

    reloaded = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(_hf_ids(reloaded, SENTENCES), ids)


def test_tiny_sd_components_shapes():
    c = tiny_sd_components(seed=0)
    with torch.no_grad():
        latents = c["vae"].encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        assert latents.shape == (1, 4, 8, 8)
        ids = _hf_ids(c["tokenizer"], ["a photo"])
        ctx = c["text_encoder"](ids).last_hidden_state
        assert ctx.shape == (1, 77, 32)
        ctx = torch.cat([ctx, torch.randn(1, 2, 32)], dim=1)  # extra (e.g. GPS) tokens need no UNet change
        out = c["unet"](latents, 10, encoder_hidden_states=ctx).sample
    assert out.shape == latents.shape


def _run(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("a photo taken here", num_inference_steps=2, height=32, width=32, generator=g, output_type="np").images


def test_tiny_pipeline_deterministic_and_round_trips(tmp_path):
    pipe = tiny_stable_diffusion_pipeline(seed=0)
    a = _run(pipe)
    assert a.shape == (1, 32, 32, 3) and np.isfinite(a).all()
    assert np.array_equal(a, _run(pipe))
    assert not np.array_equal(a, _run(pipe, seed=1))
    pil = pipe("x", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert pil.size == (32, 32)  # default size: unet.sample_size * vae_scale_factor

    from diffusers import StableDiffusionPipeline

    pipe.save_pretrained(tmp_path / "pipe")
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    # loaded weights may run other MKL kernels: images equal up to float32 rounding (geo_models.testing.tolerances)
    np.testing.assert_allclose(_run(loaded), a, rtol=0, atol=IMAGE_ATOL)
