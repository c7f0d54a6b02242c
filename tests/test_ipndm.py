"""iPNDM (`fastdiff/solvers/ipndm.py`) against ComfyUI's own `sample_ipndm` in float64 on `fastdiff.toy` targets.

ComfyUI's step to sigma' = 0 is x' = D (`denoise_to_zero=True`); fastdiff's default keeps the Adams-Bashforth formula
there, so with the default the two agree up to the state before the last step and differ only in that step.
"""

from __future__ import annotations

import pytest
import torch
from peer_targets import start, targets

import fastdiff
from fastdiff import sampling
from fastdiff.solvers import make_solver

TARGETS = targets(seed=5)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["karras", "logsnr"])
@pytest.mark.parametrize("steps", [2, 5, 16])
@pytest.mark.parametrize("max_order", [2, 3, 4])  # ComfyUI's max_order=1 raises IndexError
def test_denoise_to_zero_matches_comfyui(comfy, target, kind, steps, max_order):
    gm = TARGETS[target]
    sigmas = fastdiff.get_sigmas(kind, steps, 0.002, 80.0)
    x = start(gm, 80.0, seed=steps * 10 + max_order)
    ours = sampling.sample_ipndm(gm.denoiser, x, sigmas, max_order=max_order, denoise_to_zero=True)
    theirs = comfy.k_sampling.sample_ipndm(gm.denoiser, x.clone(), sigmas.clone(), disable=True, max_order=max_order)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["karras", "logsnr"])
def test_default_differs_from_comfyui_only_in_the_step_to_zero(comfy, kind):
    """Both evaluate the model at the same points (the same D on every step, the last step's start included); the
    step to 0 is ours x - sigma eps_bar, ComfyUI's D, and the two results differ."""
    gm = TARGETS["ring_2d"]
    sigmas = fastdiff.get_sigmas(kind, 8, 0.002, 80.0)
    x = start(gm, 80.0, seed=3)
    states = []
    fastdiff.sample(gm.denoiser, x, sigmas, "ipndm", callback=lambda d: states.append(d["denoised"].clone()))
    comfy_states = []
    theirs = comfy.k_sampling.sample_ipndm(gm.denoiser, x.clone(), sigmas.clone(), disable=True,
                                          callback=lambda d: comfy_states.append(d["denoised"].clone()))
    for ours_state, their_state in zip(states, comfy_states, strict=True):
        torch.testing.assert_close(ours_state, their_state, rtol=1e-10, atol=1e-10)
    ours = fastdiff.sample(gm.denoiser, x, sigmas, "ipndm")
    assert float((ours - theirs).abs().max()) > 1e-8
    torch.testing.assert_close(fastdiff.sample(gm.denoiser, x, sigmas, "ipndm", denoise_to_zero=True), theirs,
                               rtol=1e-10, atol=1e-10)


def test_denoise_to_zero_is_a_flag():
    with pytest.raises(TypeError, match="denoise_to_zero"):
        make_solver("ipndm", denoise_to_zero=1)
    assert make_solver("ipndm", denoise_to_zero=True).denoises_at_zero
    assert not make_solver("ipndm").denoises_at_zero
