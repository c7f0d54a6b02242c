"""fastdiff.get_sigmas: shape and endpoints of every grid, agreement with k-diffusion's schedules,
the VP-time grids uniform in the time they claim, and argument checks."""

import importlib.util
import math
import sys
import types

import pytest
import torch

import fastdiff
from fastdiff.grids import GRIDS, vp_sigma, vp_time

KINDS = sorted(GRIDS)
RANGES = [(0.002, 80.0), (0.03, 14.6), (1e-4, 1.0)]


@pytest.fixture(scope="module")
def k_sampling():
    """k_diffusion.sampling, loaded without its package __init__ (which imports torchvision)."""
    for dep in ("torchsde", "torchdiffeq", "trampoline", "scipy", "tqdm"):
        pytest.importorskip(dep)
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed")
    root = spec.submodule_search_locations[0]
    package = types.ModuleType("k_diffusion")
    package.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "k_diffusion", package)
        patch.setitem(sys.modules, "k_diffusion.utils", utils)
        loader_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{root}/sampling.py")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    return module


def in_float64(fn, *args, **kwargs):
    """Call a k-diffusion schedule with float64 as torch's default dtype (its linspace follows it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 10, 64])
@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_grid_shape_order_and_endpoints(kind, n, sigma_min, sigma_max):
    sigmas = fastdiff.get_sigmas(kind, n, sigma_min, sigma_max)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float64
    assert sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert sigmas[0].item() == pytest.approx(sigma_max, rel=1e-12, abs=0)
    assert sigmas[-2].item() == pytest.approx(sigma_min, rel=1e-12, abs=0)


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_grid_is_sigma_max_then_zero(kind):
    assert fastdiff.get_sigmas(kind, 1, 0.01, 5.0).tolist() == [5.0, 0.0]


def test_dtype_and_device_arguments():
    sigmas = fastdiff.get_sigmas("karras", 5, 0.01, 5.0, dtype=torch.float32, device="cpu")
    assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu"
    torch.testing.assert_close(sigmas, fastdiff.get_sigmas("karras", 5, 0.01, 5.0).float())


@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0])
@pytest.mark.parametrize("n", [4, 25])
@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_karras_matches_k_diffusion(k_sampling, rho, n, sigma_min, sigma_max):
    ours = fastdiff.get_sigmas("karras", n, sigma_min, sigma_max, rho=rho)
    theirs = in_float64(k_sampling.get_sigmas_karras, n, sigma_min, sigma_max, rho=rho)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)


@pytest.mark.parametrize("kind", ["logsnr", "exponential"])
@pytest.mark.parametrize("n", [4, 25])
@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_logsnr_matches_k_diffusion_exponential(k_sampling, kind, n, sigma_min, sigma_max):
    ours = fastdiff.get_sigmas(kind, n, sigma_min, sigma_max)
    theirs = in_float64(k_sampling.get_sigmas_exponential, n, sigma_min, sigma_max)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)
    steps = ours[:-1].log().diff()
    torch.testing.assert_close(steps, steps.new_full(steps.shape, math.log(sigma_min / sigma_max) / (n - 1)), rtol=1e-12, atol=0)


def test_karras_formula_in_float64():
    n, smin, smax, rho = 9, 0.002, 80.0, 7.0
    expected = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    ours = fastdiff.get_sigmas("karras", n, smin, smax, rho=rho)[:-1]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind, power", [("time_uniform", 1), ("time_quadratic", 2)])
@pytest.mark.parametrize("beta_min, beta_d", [(0.1, 19.9), (0.5, 5.0)])
def test_time_grids_are_uniform_in_vp_time(kind, power, beta_min, beta_d):
    """Mapping the grid back through vp_time gives t^(1/power) evenly spaced from t(sigma_max) to t(sigma_min)."""
    n, smin, smax = 20, 0.002, 80.0
    sigmas = fastdiff.get_sigmas(kind, n, smin, smax, beta_min=beta_min, beta_d=beta_d)
    t = vp_time(sigmas[:-1], beta_min, beta_d) ** (1 / power)
    expected = torch.linspace(vp_time(smax, beta_min, beta_d) ** (1 / power), vp_time(smin, beta_min, beta_d) ** (1 / power), n,
                              dtype=torch.float64)
    torch.testing.assert_close(t, expected, rtol=1e-12, atol=1e-15)


def test_time_uniform_matches_k_diffusion_vp_schedule(k_sampling):
    """k-diffusion's get_sigmas_vp is uniform in t from 1 to eps_s: the same grid between those sigmas."""
    n, eps_s = 12, 1e-3
    theirs = in_float64(k_sampling.get_sigmas_vp, n, eps_s=eps_s)
    ours = fastdiff.get_sigmas("time_uniform", n, theirs[-2].item(), theirs[0].item())
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_vp_time_inverts_vp_sigma():
    t = torch.linspace(1e-5, 1.5, 50, dtype=torch.float64)
    for beta_min, beta_d in [(0.1, 19.9), (1.0, 0.0)]:
        sigma = vp_sigma(t, beta_min, beta_d)
        torch.testing.assert_close(vp_time(sigma, beta_min, beta_d), t, rtol=1e-12, atol=0)
        assert vp_time(sigma[7].item(), beta_min, beta_d) == pytest.approx(t[7].item(), rel=1e-12)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("cosine", 10, 0.1, 10.0), {}, ValueError, "kind must be one of"),
        (("karras", 0, 0.1, 10.0), {}, ValueError, "n must be >= 1, got 0"),
        (("karras", 2.5, 0.1, 10.0), {}, TypeError, "n must be an int, got float"),
        (("karras", 10, 0.0, 10.0), {}, ValueError, "sigma_min must be a positive finite number, got 0.0"),
        (("karras", 10, -1.0, 10.0), {}, ValueError, "sigma_min must be a positive finite number"),
        (("karras", 10, 0.1, float("inf")), {}, ValueError, "sigma_max must be a positive finite number, got inf"),
        (("karras", 10, 0.1, float("nan")), {}, ValueError, "sigma_max must be a positive finite number"),
        (("karras", 10, 0.1, "10"), {}, ValueError, "sigma_max must be a positive finite number, got '10'"),
        (("logsnr", 10, 10.0, 0.1), {}, ValueError, "sigma_min must be < sigma_max, got sigma_min=10.0, sigma_max=0.1"),
        (("time_uniform", 10, 1.0, 1.0), {}, ValueError, "sigma_min must be < sigma_max"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.get_sigmas(*args, **kwargs)
