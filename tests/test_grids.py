"""fastdiff.get_sigmas: shape and endpoints of every grid, agreement with k-diffusion's schedules,
the VP-time grids uniform in the time they claim, and argument checks."""

import importlib.util
import math
import sys
import types

import pytest
import torch

import fastdiff
from fastdiff.flow_time import sigma_to_flow_t
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


# Flow grids: sigma = t / (1 - t), t = 1 as inf (fastdiff.flow_time).

F32 = 2.0**-24  # float32 unit roundoff: diffusers' scheduler returns float32 t values


def flow_times(**kwargs):
    """The t values of a flow grid: its n levels mapped back by t = sigma / (1 + sigma), then the final 0."""
    n = kwargs.pop("n")
    return sigma_to_flow_t(fastdiff.get_sigmas("flow", n, **kwargs))


def test_flow_default_grid_is_uniform_in_t_from_inf_to_one_thousandth():
    sigmas = fastdiff.get_sigmas("flow", 5)
    assert sigmas.shape == (6,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == math.inf and sigmas[-1].item() == 0.0
    t = torch.tensor([1.0, 0.75025, 0.5005, 0.25075, 0.001], dtype=torch.float64)
    torch.testing.assert_close(sigmas[1:-1], t[1:] / (1 - t[1:]), rtol=1e-14, atol=0)
    assert fastdiff.get_sigmas("flow", 1).tolist() == [math.inf, 0.0]


def test_flow_uniform_between_t_max_and_t_min():
    t = flow_times(n=4, t_max=0.9, t_min=0.3)
    torch.testing.assert_close(t, torch.tensor([0.9, 0.7, 0.5, 0.3, 0.0], dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("shift", [3.0, 0.4])
def test_static_shift_scales_sigma(shift):
    """shift t / (1 + (shift - 1) t) is sigma -> shift sigma; with an explicit t_min the end is shifted once."""
    plain, shifted = fastdiff.get_sigmas("flow", 6, t_min=0.002), fastdiff.get_sigmas("flow", 6, t_min=0.002, shift=shift)
    assert shifted[0].item() == math.inf
    torch.testing.assert_close(shifted[1:-1], shift * plain[1:-1], rtol=1e-15, atol=0)
    t = sigma_to_flow_t(plain[:-1])
    torch.testing.assert_close(sigma_to_flow_t(shifted[:-1]), shift * t / (1 + (shift - 1) * t), rtol=1e-14, atol=0)


def test_default_end_under_a_static_shift_is_shifted_twice_as_in_diffusers():
    """shift(shift(x)) = 9 x / (1 + 8 x) at shift 3: 0.009 / 1.008 from the default end x = 1/1000."""
    assert flow_times(n=10, shift=3.0)[-2].item() == pytest.approx(0.009 / 1.008, rel=1e-14)
    assert flow_times(n=10, shift=3.0, t_min=0.001)[-2].item() == pytest.approx(0.003 / 1.002, rel=1e-14)
    assert flow_times(n=10, mu=math.log(3.0))[-2].item() == pytest.approx(0.003 / 1.002, rel=1e-14)


@pytest.mark.parametrize("mu", [0.5, 1.15, -0.7])
def test_dynamic_shifts_against_their_t_formulas(mu):
    t = flow_times(n=8, t_min=0.01)[:-1]
    exponential = flow_times(n=8, t_min=0.01, mu=mu)[:-1]
    torch.testing.assert_close(exponential, math.exp(mu) / (math.exp(mu) + (1 / t - 1)), rtol=1e-14, atol=0)
    linear = flow_times(n=8, t_min=0.01, mu=math.exp(mu), time_shift_type="linear")[:-1]
    torch.testing.assert_close(linear, exponential, rtol=1e-14, atol=0)


@pytest.mark.parametrize("terminal", [0.1, 0.0005])
def test_shift_terminal_stretches_one_minus_t_onto_the_terminal(terminal):
    before = flow_times(n=7, mu=1.15)[:-1]
    after = flow_times(n=7, mu=1.15, shift_terminal=terminal)[:-1]
    assert after[0].item() == 1.0 and after[-1].item() == pytest.approx(terminal, rel=1e-12)
    ratio = (1 - after[1:]) / (1 - before[1:])
    torch.testing.assert_close(ratio, torch.full_like(ratio, (1 - terminal) / (1 - before[-1].item())), rtol=1e-14, atol=0)


def test_a_base_grid_replaces_the_uniform_one():
    """Flux's base numpy.linspace(1, 1/n, n) is the uniform grid to t_min = 1/n; any sequence or tensor works."""
    np = pytest.importorskip("numpy")
    n = 9
    flux = fastdiff.get_sigmas("flow", n, base=np.linspace(1.0, 1 / n, n), mu=0.8)
    torch.testing.assert_close(flux, fastdiff.get_sigmas("flow", n, t_min=1 / n, mu=0.8), rtol=1e-14, atol=0)
    t = [0.95, 0.6, 0.55, 0.1]
    torch.testing.assert_close(flow_times(n=4, base=torch.tensor(t)), torch.tensor([*t, 0.0]).double(), rtol=1e-7, atol=0)
    torch.testing.assert_close(flow_times(n=4, base=t), torch.tensor([*t, 0.0], dtype=torch.float64), rtol=1e-15, atol=0)


def test_flow_grid_in_float32_keeps_inf():
    sigmas = fastdiff.get_sigmas("flow", 4, shift=3.0, dtype=torch.float32)
    assert sigmas.dtype == torch.float32 and sigmas[0].item() == math.inf
    torch.testing.assert_close(sigmas, fastdiff.get_sigmas("flow", 4, shift=3.0).float())


FLUX_MU = 0.5 + (1.15 - 0.5) / (4096 - 256) * (1024 - 256)  # Flux's calculate_shift at 512 x 512 (1024 latent tokens)

DIFFUSERS_CASES = {  # name: (scheduler config, set_timesteps keywords, get_sigmas keywords)
    "default": ({}, {}, {}),
    "sd3_shift": ({"shift": 3.0}, {}, {"shift": 3.0}),
    "flux_dynamic": ({"use_dynamic_shifting": True, "shift": 3.0}, {"mu": FLUX_MU}, {"mu": FLUX_MU}),
    "linear": ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, {"mu": 2.5},
               {"mu": 2.5, "time_shift_type": "linear"}),
    "shift_terminal": ({"shift": 3.0, "shift_terminal": 0.1}, {}, {"shift": 3.0, "shift_terminal": 0.1}),
    "ltx_terminal": ({"use_dynamic_shifting": True, "shift_terminal": 0.1}, {"mu": 2.05}, {"mu": 2.05, "shift_terminal": 0.1}),
}
BASE_CASES = {  # the pipeline passes its base grid as sigmas=
    "flux_base": ({"use_dynamic_shifting": True}, {"mu": 1.15}, {"mu": 1.15}),
    "base_shift": ({"shift": 5.0}, {}, {"shift": 5.0}),
    "base_terminal": ({"shift": 3.0, "shift_terminal": 0.2}, {}, {"shift": 3.0, "shift_terminal": 0.2}),
}


@pytest.fixture(scope="module")
def flow_match_scheduler():
    return pytest.importorskip("diffusers").FlowMatchEulerDiscreteScheduler


def with_steps(cases, steps):
    """(case, n) pairs; a one-step grid ends at t = 1, where the terminal stretch is undefined (refused below)."""
    return [(case, n) for case in cases for n in steps if n > 1 or "terminal" not in case]


@pytest.mark.parametrize("case, n", with_steps(DIFFUSERS_CASES, [1, 4, 28]))
def test_flow_grid_matches_diffusers(flow_match_scheduler, case, n):
    """diffusers spaces its default grid in float64 down to its float32 training end (shifted at construction,
    0.8 float32 roundings off) and returns float32: two roundings."""
    config, call, ours = DIFFUSERS_CASES[case]
    scheduler = flow_match_scheduler(**config)
    scheduler.set_timesteps(n, **call)
    sigmas = fastdiff.get_sigmas("flow", n, **ours)
    assert sigmas[0].item() == math.inf and scheduler.sigmas[0].item() == 1.0
    torch.testing.assert_close(sigma_to_flow_t(sigmas), scheduler.sigmas.double(), rtol=2 * F32, atol=0)


@pytest.mark.parametrize("case, n", with_steps(BASE_CASES, [1, 5, 28]))
def test_flow_grid_from_a_base_matches_diffusers(flow_match_scheduler, case, n):
    """diffusers casts a base grid to float32 and shifts it in float32: a few roundings, 4 unit roundoffs."""
    config, call, ours = BASE_CASES[case]
    base = [1 - i / n for i in range(n)]
    scheduler = flow_match_scheduler(**config)
    scheduler.set_timesteps(sigmas=base, **call)
    sigmas = fastdiff.get_sigmas("flow", n, base=base, **ours)
    assert sigmas[0].item() == math.inf
    torch.testing.assert_close(sigma_to_flow_t(sigmas), scheduler.sigmas.double(), rtol=4 * F32, atol=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sigma_max": 80.0}, ValueError, r"a flow grid is described in t .* got sigma_min=None, sigma_max=80.0"),
        ({"t_max": 0.0}, ValueError, r"t_max must be a number in \(0, 1\], got 0.0"),
        ({"t_max": 1.5}, ValueError, r"t_max must be a number in \(0, 1\], got 1.5"),
        ({"t_max": float("nan")}, ValueError, r"t_max must be a number in \(0, 1\], got nan"),
        ({"t_min": 1.0}, ValueError, r"t_min must be a number in \(0, 1\) \(0 is appended.*, got 1.0"),
        ({"t_min": 0.0}, ValueError, r"t_min must be a number in \(0, 1\).*, got 0.0"),
        ({"t_min": -0.1}, ValueError, r"t_min must be a number in \(0, 1\).*, got -0.1"),
        ({"t_min": 0.5, "t_max": 0.5}, ValueError, r"t_min must be < t_max, got t_min=0.5, t_max=0.5"),
        ({"t_max": 0.0005}, ValueError, r"t_min must be < t_max, got t_min=0.001, t_max=0.0005"),
        ({"shift": 0.0}, ValueError, r"shift must be a positive finite number, got 0.0"),
        ({"shift": -3.0}, ValueError, r"shift must be a positive finite number, got -3.0"),
        ({"shift": math.inf}, ValueError, r"shift must be a positive finite number, got inf"),
        ({"shift": 3.0, "mu": 1.15}, ValueError, r"shift \(static\) and mu \(dynamic\) exclude each other.*shift=3.0, mu=1.15"),
        ({"time_shift_type": "linear"}, ValueError, r"time_shift_type='linear' shapes the dynamic shift: pass mu too"),
        ({"time_shift_type": "log", "mu": 1.0}, ValueError, r"time_shift_type must be one of .*'linear'\), got 'log'"),
        ({"mu": float("nan")}, ValueError, r"mu must be a finite number, got nan"),
        ({"mu": 800.0}, ValueError, r"mu must be in \[-700.0, 700.0\], got 800.0"),
        ({"mu": 0.0, "time_shift_type": "linear"}, ValueError, r"mu must be a positive finite number, got 0.0"),
        ({"shift_terminal": 0.0}, ValueError, r"shift_terminal must be a number in \(0, 1\), got 0.0"),
        ({"shift_terminal": 1.0}, ValueError, r"shift_terminal must be a number in \(0, 1\), got 1.0"),
        ({"base": [1.0, 0.5, 0.6, 0.1]}, ValueError, r"base must be strictly decreasing in \(0, 1\], got \[1.0, 0.5, 0.6, 0.1\]"),
        ({"base": [1.2, 0.5, 0.3, 0.1]}, ValueError, r"base must be strictly decreasing in \(0, 1\]"),
        ({"base": [1.0, 0.5, 0.3, 0.0]}, ValueError, r"base must be strictly decreasing in \(0, 1\]"),
        ({"base": [1.0, 0.5, 0.3]}, ValueError, r"base must hold n = 4 flow times \(one level per step\), got shape \(3,\)"),
        ({"base": "1.0"}, TypeError, r"base must be a sequence of flow times, got str"),
        ({"base": [1.0, 0.5, 0.3, 0.1], "t_min": 0.1}, ValueError, r"base replaces the uniform grid .* t_max=None, t_min=0.1"),
        ({"mu": -699.0, "t_min": 1e-300}, ValueError, r"the flow grid collapses in float64 .* mu=-699.0 is too extreme"),
    ],
)
def test_bad_flow_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.get_sigmas("flow", 4, **kwargs)


def test_one_step_flow_grid_has_no_terminal_to_stretch():
    with pytest.raises(ValueError, match=r"shift_terminal needs a last level below t = 1, got a one-step grid at t = 1"):
        fastdiff.get_sigmas("flow", 1, shift_terminal=0.1)
    assert flow_times(n=1, t_max=0.5, shift_terminal=0.1).tolist() == pytest.approx([0.1, 0.0], rel=1e-15)


@pytest.mark.parametrize("option", [{"shift": 3.0}, {"mu": 1.0}, {"t_min": 0.1}, {"base": [1.0]}, {"time_shift_type": "linear"}])
def test_flow_options_are_refused_for_sigma_range_kinds(option):
    with pytest.raises(ValueError, match=rf"{next(iter(option))} apply only to kind='flow', got kind='karras'"):
        fastdiff.get_sigmas("karras", 5, 0.01, 5.0, **option)


def test_sigma_range_kinds_need_both_ends():
    with pytest.raises(ValueError, match=r"kind='logsnr' needs sigma_min and sigma_max, got sigma_min=0.01, sigma_max=None"):
        fastdiff.get_sigmas("logsnr", 5, 0.01)


@pytest.mark.parametrize("kind", sorted(GRIDS))
@pytest.mark.parametrize("n", [2, 3, 17])
def test_from_infinity_puts_inf_before_the_kinds_n_minus_one_levels(kind, n):
    sigmas = fastdiff.get_sigmas(kind, n, 0.002, 80.0, from_infinity=True)
    assert sigmas.shape == (n + 1,) and math.isinf(sigmas[0].item())
    assert torch.equal(sigmas[1:], fastdiff.get_sigmas(kind, n - 1, 0.002, 80.0))
    assert sigma_to_flow_t(sigmas)[0].item() == 1.0


def test_from_infinity_one_step_and_bad_values():
    assert fastdiff.get_sigmas("logsnr", 1, 0.002, 80.0, from_infinity=True).tolist() == [math.inf, 0.0]
    with pytest.raises(TypeError, match="from_infinity must be a bool"):
        fastdiff.get_sigmas("logsnr", 4, 0.002, 80.0, from_infinity=1)
    with pytest.raises(ValueError, match="from_infinity applies to the sigma-range kinds"):
        fastdiff.get_sigmas("flow", 4, from_infinity=True)
