"""Every fastdiff scheduler in tiny random-weight StableDiffusion3Pipeline and FluxPipeline, offline (no text encoders:
random prompt embeddings): finite images, image k alone equals image k of a batch (same latents), and a saved
pipeline loads with its fastdiff scheduler."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")
pytest.importorskip("transformers", reason="diffusers' flow pipeline modules import transformers")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from fastdiff.integrations.diffusers import SCHEDULERS  # noqa: E402

STEPS = 3


def tiny_vae(latent_channels):
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8,), norm_num_groups=4, latent_channels=latent_channels, sample_size=16,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06, scaling_factor=1.5, mid_block_add_attention=False,
    ).eval()


def sd3():
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4, pos_embed_max_size=16,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=tiny_vae(4), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )
    g = torch.Generator().manual_seed(1)
    embeds = {
        "prompt_embeds": torch.randn(1, 5, 16, generator=g),
        "pooled_prompt_embeds": torch.randn(1, 8, generator=g),
        "negative_prompt_embeds": torch.randn(1, 5, 16, generator=g),
        "negative_pooled_prompt_embeds": torch.randn(1, 8, generator=g),
    }
    return pipe, embeds, (4, 8, 8), {"guidance_scale": 2.0, "height": 8, "width": 8}


def flux():
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=tiny_vae(4), text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None,
    )
    g = torch.Generator().manual_seed(1)
    embeds = {"prompt_embeds": torch.randn(1, 5, 16, generator=g), "pooled_prompt_embeds": torch.randn(1, 8, generator=g)}
    return pipe, embeds, (16, 4, 4), {"guidance_scale": 1.0, "height": 8, "width": 8}  # packed: 2x2 patches of 4 channels


def latents_for(pipe, shape, batch):
    latents = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    if isinstance(pipe, FluxPipeline):  # Flux takes packed latents [B, (h/2)(w/2), 4 c]
        b, c, h, w = latents.shape
        latents = latents.view(b, c // 4, 2, 2, h, w).permute(0, 4, 5, 1, 2, 3).reshape(b, h * w, c)
    return latents


def generate(pipe, embeds, latents, options):
    batch = latents.shape[0]
    repeated = {k: v.expand(batch, *v.shape[1:]) for k, v in embeds.items()}
    with torch.no_grad():
        return pipe(latents=latents, num_inference_steps=STEPS, output_type="np", **repeated, **options).images


@pytest.fixture(scope="module", params=["sd3", "flux"])
def pipeline(request):
    return {"sd3": sd3, "flux": flux}[request.param]()


@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_fastdiff_schedulers_run_flow_pipelines(pipeline, solver):
    pipe, embeds, shape, options = pipeline
    pipe.scheduler = SCHEDULERS[solver].from_config(pipe.scheduler.config)
    assert pipe.scheduler.is_flow
    latents = latents_for(pipe, shape, 3)
    batch = generate(pipe, embeds, latents, options)
    assert batch.shape[0] == 3 and np.isfinite(batch).all()
    alone = generate(pipe, embeds, latents[1:2], options)
    np.testing.assert_allclose(alone[0], batch[1], atol=1e-5)


def test_saved_flow_pipeline_loads_its_fastdiff_scheduler(pipeline, tmp_path):
    pipe, embeds, shape, options = pipeline
    pipe.scheduler = SCHEDULERS["dpmpp_2m_sde"].from_config(pipe.scheduler.config)
    latents = latents_for(pipe, shape, 1)
    before = generate(pipe, embeds, latents, options)
    pipe.save_pretrained(tmp_path)
    absent = {name: None for name, component in pipe.components.items() if component is None}  # text encoders, ...
    loaded = type(pipe).from_pretrained(tmp_path, **absent)
    assert type(loaded.scheduler) is SCHEDULERS["dpmpp_2m_sde"] and loaded.scheduler.is_flow
    np.testing.assert_allclose(generate(loaded, embeds, latents, options), before, atol=1e-6)
