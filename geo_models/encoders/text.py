"""The CLIP text side built offline: the real CLIP BPE tokenizer (from open_clip's bundled merges, no download) and
the config of a small CLIP text encoder with the real vocabulary, for the small bases and tiny test models that stand
in for Stable Diffusion's where nothing can be downloaded."""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["clip_tokenizer", "save_clip_tokenizer", "small_clip_text_config"]


def _open_clip_bpe_path() -> str:
    from open_clip.tokenizer import default_bpe

    return default_bpe()


@lru_cache(maxsize=8)
def clip_tokenizer(model_max_length: int = 77):
    """The real CLIP BPE tokenizer as a `transformers.CLIPTokenizer`, built offline from open_clip's merges.

    Token ids equal `open_clip.tokenize` up to and including `<|endoftext|>` (49407); padding follows the
    Stable Diffusion 1.x / transformers convention (pad = `<|endoftext|>`, 49407) where open_clip pads with 0.
    (A `"!"` pad token as in SD 2.x would also split `"!!!"` into three tokens, so it is not offered.)

    The result is cached: treat it as read-only (or `copy.deepcopy` it).
    """
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    with gzip.open(_open_clip_bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # same slice as open_clip
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != 49408:
        raise RuntimeError(f"expected 49408 CLIP tokens, built {len(vocab)}")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def save_clip_tokenizer(save_directory: str | os.PathLike, model_max_length: int = 77) -> Path:
    """Write the offline CLIP tokenizer to a folder loadable with `CLIPTokenizer.from_pretrained(dir)`."""
    save_directory = Path(save_directory)
    clip_tokenizer(model_max_length).save_pretrained(save_directory)
    return save_directory


def small_clip_text_config(hidden_size: int = 32):
    """A `CLIPTextConfig` with the real vocabulary (49408) and 77 positions, 2 layers, 2 heads."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
