"""Tiny diffusers pipelines of random weights, saved with ``save_pretrained`` so that tests
give them to ``syn2co-train synth`` as ``--model PATH``, the way users pass a downloaded
checkpoint (nothing is downloaded: tests run without network).

The three kinds: unconditional DDPM, class-conditional DiT, Stable-Diffusion-style
text-to-image with a one-token-per-character CLIP tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte-to-character table (every byte is a printable character)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _tiny_vae() -> Any:
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )


def save_ddpm(path: Path) -> None:
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=10)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)


def save_dit(path: Path) -> None:
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # learned sigma, as DiT-XL-2
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,  # DiTPipeline's guidance uses class 1000 as the null class
        norm_num_groups=4,
    )
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=10)
    pipe = diffusers.DiTPipeline(transformer=transformer, vae=_tiny_vae(), scheduler=scheduler)
    pipe.save_pretrained(path)
    # Like facebook/DiT-XL-2-256, whose model_index.json carries ImageNet's id2label.
    index = json.loads((path / "model_index.json").read_text())
    index["id2label"] = {"0": "tench, Tinca tinca", "1": "goldfish", "2": "great white shark"}
    (path / "model_index.json").write_text(json.dumps(index))


def save_text_to_image(path: Path) -> None:
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate([*chars, *(c + "</w>" for c in chars)])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    files = path.parent / f"{path.name}-tokenizer"
    files.mkdir()
    (files / "vocab.json").write_text(json.dumps(vocab))
    (files / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    tokenizer = transformers.CLIPTokenizer(
        str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=48
    )
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=48,
            projection_dim=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    diffusers.StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=diffusers.PNDMScheduler(
            num_train_timesteps=10, skip_prk_steps=True, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
