"""Real architecture configs of the public Stable Diffusion checkpoints, as data.

They let sdsuite build the real networks with random weights (``--weights random``) when the
checkpoint is not on disk. Values follow each hub repository's ``*/config.json``; the unit tests
check the parameter counts against ../shared/REFERENCE.md.
"""

from __future__ import annotations

from typing import Any

Config = dict[str, Any]

_SD_SCHEDULER: Config = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

VAE_SD: Config = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

VAE_SDXL: Config = {**VAE_SD, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

UNET_SD1: Config = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
}

UNET_SD2: Config = {
    **UNET_SD1,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "upcast_attention": True,
}

UNET_SDXL: Config = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "act_fn": "silu",
}

CLIP_VIT_L: Config = {  # openai/clip-vit-large-patch14 text tower (SD 1.x, SDXL text_encoder)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

OPENCLIP_VIT_H: Config = {  # SD 2.x text_encoder: ViT-H/14 text tower, penultimate layer kept (23 layers)
    **CLIP_VIT_L,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
}

OPENCLIP_BIGG: Config = {  # SDXL text_encoder_2: ViT-bigG/14 text tower with projection
    **CLIP_VIT_L,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}

SCHEDULER_SD1 = _SD_SCHEDULER
SCHEDULER_SD2_V: Config = {
    **_SD_SCHEDULER,
    "_class_name": "DDIMScheduler",
    "clip_sample": False,
    "prediction_type": "v_prediction",
}
SCHEDULER_SDXL: Config = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "prediction_type": "epsilon",
}
SCHEDULER_TURBO: Config = {
    **SCHEDULER_SDXL,
    "_class_name": "EulerAncestralDiscreteScheduler",
    "timestep_spacing": "trailing",
    "steps_offset": 0,
}

# --- the embedded tiny models: same block structure, a few thousand times smaller -------------

TINY_CLIP: Config = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 32,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
TINY_CLIP_2: Config = {**TINY_CLIP, "hidden_size": 32, "projection_dim": 32}

TINY_VAE: Config = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_UNET_SD: Config = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

TINY_UNET_SDXL: Config = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2],
    "attention_head_dim": [2, 4],
    "cross_attention_dim": 64,  # text_encoder (32) + text_encoder_2 (32), concatenated
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,  # 6 time ids * 8 + pooled text_encoder_2 (32)
    "norm_num_groups": 32,
}
TINY_VAE_SDXL: Config = {**TINY_VAE, "scaling_factor": 0.13025}

# --- the diffusion-transformer generation (SD 3 / 3.5, FLUX.1) ---------------------------------
# Values of each hub repository's transformer/, vae/, text_encoder*/ and scheduler/ config.json. The hub is not
# reachable here: they were read from public repositories that copy those files verbatim (e.g. SD3.5 large/medium
# transformer configs in loaders of Comfy-Org/stable-diffusion-3.5-fp8 and argmaxinc SD3.5 ports; the FLUX.1-dev
# scheduler config in ai-toolkit's flowmatch sampler), and checked against the published parameter counts by
# tests/unit/test_architectures.py (SD3.5 large ~8.1B, medium ~2.5B with MMDiT-X, FLUX.1 ~12B, T5-XXL encoder ~4.7B).

SD3_TRANSFORMER_MEDIUM: Config = {  # stabilityai/stable-diffusion-3-medium-diffusers
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
}
SD35_TRANSFORMER_MEDIUM: Config = {  # stabilityai/stable-diffusion-3.5-medium (MMDiT-X: 13 dual-attention blocks)
    **SD3_TRANSFORMER_MEDIUM,
    "pos_embed_max_size": 384,
    "dual_attention_layers": list(range(13)),
    "qk_norm": "rms_norm",
}
SD35_TRANSFORMER_LARGE: Config = {  # stabilityai/stable-diffusion-3.5-large and -large-turbo (identical)
    **SD3_TRANSFORMER_MEDIUM,
    "num_layers": 38,
    "num_attention_heads": 38,
    "caption_projection_dim": 2432,
    "qk_norm": "rms_norm",
}
FLUX_TRANSFORMER_DEV: Config = {  # black-forest-labs/FLUX.1-dev
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels, 2x2 patches packed by the pipeline
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_TRANSFORMER_SCHNELL: Config = {**FLUX_TRANSFORMER_DEV, "guidance_embeds": False}

VAE_SD3: Config = {  # 16 latent channels, no quant convs; SD 3 / 3.5
    **VAE_SD,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
VAE_FLUX: Config = {**VAE_SD3, "scaling_factor": 0.3611, "shift_factor": 0.1159}

T5_XXL: Config = {  # google/t5-v1_1-xxl encoder (text_encoder_3 of SD 3/3.5, text_encoder_2 of FLUX.1)
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
}

SCHEDULER_SD3: Config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
SCHEDULER_FLUX_DEV: Config = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "base_shift": 0.5,
    "max_shift": 1.15,
}
SCHEDULER_FLUX_SCHNELL: Config = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}

# Tiny DiT models: same component structure (CLIP-L + CLIP-G + T5 for SD3, CLIP-L + T5 for FLUX, 16-channel VAE).
TINY_T5: Config = {
    "vocab_size": 256,  # >= the shipped tiny T5 tokenizer's 230 pieces
    "d_model": 64,  # >= both tiny CLIP widths concatenated (SD3 pads the CLIP embeddings to the T5 width)
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
TINY_VAE_DIT: Config = {
    **TINY_VAE,
    "latent_channels": 16,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
TINY_SD3_TRANSFORMER: Config = {
    "sample_size": 8,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,  # TINY_T5 d_model
    "caption_projection_dim": 32,
    "pooled_projection_dim": 64,  # both tiny CLIP projections concatenated
    "out_channels": 16,
    "pos_embed_max_size": 128,  # up to 2048 px: the plan's largest side
    "dual_attention_layers": [0],  # one MMDiT-X block, as SD 3.5 medium has
    "qk_norm": "rms_norm",
}
TINY_FLUX_TRANSFORMER: Config = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,  # TINY_T5 d_model
    "pooled_projection_dim": 32,  # TINY_CLIP hidden size (FLUX pools CLIP-L without projection)
    "guidance_embeds": True,
    "axes_dims_rope": [4, 6, 6],  # sums to attention_head_dim
}
