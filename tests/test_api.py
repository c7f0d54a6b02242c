"""Public entry points: argument validation names the argument; backend selection is explicit."""

import pytest
import torch

import fastdiff
from fastdiff.noise import sample_seeds, splitmix64


def denoise_to_origin(x, sigma):
    return torch.zeros_like(x)


def grid(n=4):
    return fastdiff.get_sigmas("karras", n, 0.01, 10.0)


def test_sample_runs_and_keeps_dtype():
    x = torch.randn(3, 2, dtype=torch.float64) * 10
    out = fastdiff.sample(denoise_to_origin, x, grid(), "euler")
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize(
    "sigmas, match",
    [
        (torch.tensor([[1.0, 0.0]]), "sigmas must be 1-D"),
        (torch.tensor([1.0]), "at least two"),
        (torch.tensor([0.5, 1.0, 0.0]), "strictly decreasing"),
        (torch.tensor([1.0, 0.5, -0.1]), "non-negative"),
        (torch.tensor([1.0, float("nan"), 0.0]), "NaN or Inf"),
        (torch.tensor([1.0, 0.0, 0.0]), "strictly decreasing"),
    ],
)
def test_bad_sigmas(sigmas, match):
    with pytest.raises(ValueError, match=match):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), sigmas, "euler")


def test_integer_sigmas_rejected():
    with pytest.raises(TypeError, match="sigmas must be a floating-point tensor"):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), torch.tensor([3, 2, 0]), "euler")


def test_sigmas_as_list_accepted():
    out = fastdiff.sample(denoise_to_origin, torch.randn(2, 3), [3.0, 1.0, 0.0], "euler")
    assert torch.equal(out, torch.zeros(2, 3))


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "x must have a floating dtype"),
        (torch.ones(2, 3, dtype=torch.complex64), TypeError, "x must have a floating dtype"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "x contains NaN or Inf"),
        (torch.tensor([[1.0, float("inf")]]), ValueError, "x contains NaN or Inf"),
        (torch.ones(0, 3), ValueError, "B >= 1"),
        ([[1.0, 2.0]], TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_x(x, exc, match):
    with pytest.raises(exc, match=match):
        fastdiff.sample(denoise_to_origin, x, grid(), "euler")


def test_unknown_solver_lists_available():
    with pytest.raises(ValueError, match="unknown solver 'eulr'.*euler"):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), grid(), "eulr")


def test_unknown_solver_option_named():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['etaa'\]"):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), grid(), "euler", etaa=1.0)


def test_seed_list_wrong_length():
    with pytest.raises(ValueError, match="2 seeds for batch size 3"):
        fastdiff.sample(denoise_to_origin, torch.randn(3, 2), grid(), "euler", s_churn=1.0, seed=[1, 2])


def test_seed_list_checked_even_for_deterministic_solvers():
    with pytest.raises(ValueError, match="one seed per sample"):
        fastdiff.sample(denoise_to_origin, torch.randn(3, 2), grid(), "euler", seed=[1, 2])


def test_mismatched_devices():
    with pytest.raises(ValueError, match="sigmas is on meta but x is on cpu"):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), torch.tensor([1.0, 0.0], device="meta"), "euler")


def test_denoiser_output_shape_checked():
    with pytest.raises(ValueError, match="denoiser must return a tensor shaped like x"):
        fastdiff.sample(lambda x, s: x[:, :1], torch.randn(2, 3), grid(), "euler")


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be"):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), grid(), "euler", backend="gpu")


@pytest.mark.parametrize("name", ["cuda", "triton", "cpu"])
def test_unavailable_backend_raises_with_reason(name, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # triton then needs a GPU
    status = fastdiff.backends()[name]
    if status.available:
        pytest.skip(f"the {name} backend is available here")
    x = torch.randn(2, 3)
    with pytest.raises((RuntimeError, ValueError), match=name):
        fastdiff.sample(denoise_to_origin, x, grid(), "euler", s_churn=2.0, seed=0, backend=name)


def test_backends_report_has_reasons():
    report = fastdiff.backends()
    assert set(report) == {"reference", "cpu", "cuda", "triton"}
    assert report["reference"].available
    assert all(isinstance(s.reason, str) and s.reason for s in report.values())


def test_extra_args_forwarded():
    seen = {}

    def model(x, sigma, scale):
        seen["scale"] = scale
        return torch.zeros_like(x)

    fastdiff.sample(model, torch.randn(2, 3), grid(), "euler", extra_args={"scale": 3})
    assert seen["scale"] == 3


def test_splitmix64_reference_values():
    # First outputs of SplitMix64 seeded with 0 (Vigna's reference generator): state += gamma, then mix.
    gamma = 0x9E3779B97F4A7C15
    assert splitmix64(gamma) == 0xE220A8397B1DCDAF
    assert splitmix64(2 * gamma) == 0x6E789E6AA1B965F4


def test_seed_int_gives_batch_independent_per_sample_seeds():
    assert sample_seeds(7, 5)[:3] == sample_seeds(7, 3)
    assert len(set(sample_seeds(7, 64))) == 64


@pytest.mark.parametrize("seed, exc", [(1.5, TypeError), (["a"], TypeError), (True, TypeError), ([1 << 70], ValueError)])
def test_bad_seeds(seed, exc):
    with pytest.raises(exc, match="seed"):
        sample_seeds(seed, 1)


def test_seed_none_follows_torch_manual_seed():
    torch.manual_seed(5)
    a = sample_seeds(None, 2)
    torch.manual_seed(5)
    assert sample_seeds(None, 2) == a


class HalvedModelTimes:
    """A `fastdiff.driver.Schedule` that is not LD3's: the model is evaluated at half of each grid sigma."""

    def __init__(self, sigmas):
        self.sigma_list = [float(s) for s in sigmas]
        self.checked = []

    def solver_grid(self):
        return self.sigma_list

    def check_solver(self, solver, options):
        self.checked.append((solver, options))

    def at_model_times(self, evaluate):
        return lambda x, sigma: evaluate(x, sigma / 2)


def test_sample_runs_any_schedule_at_its_model_times():
    from fastdiff.driver import Schedule

    schedule = HalvedModelTimes(grid().tolist())
    assert isinstance(schedule, Schedule)
    seen = []

    def recording(x, sigma):
        seen.append(float(sigma[0]))
        return torch.zeros_like(x)

    fastdiff.sample(recording, torch.randn(2, 3), schedule, "euler", s_noise=1.0)
    assert schedule.checked == [("euler", {"s_noise": 1.0})]
    assert seen == pytest.approx([s / 2 for s in schedule.sigma_list[:-1]])
    assert not isinstance(schedule.sigma_list, Schedule)


def test_the_driver_and_the_walk_import_nothing_above_them():
    import subprocess
    import sys

    code = (
        "import sys, fastdiff.driver, fastdiff.stepping; "
        "print(sorted(m for m in sys.modules if m.startswith(('fastdiff.ld3', 'fastdiff.integrations', 'fastdiff.compose'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "sigmas, match",
    [
        ([1.0, float("inf"), 0.0], r"sigmas\[1\] = inf; only sigmas\[0\] may be inf"),
        ([float("inf"), float("inf"), 0.0], r"sigmas\[1\] = inf"),
        ([-float("inf"), 0.0], r"NaN or Inf: sigmas\[0\] = -inf"),
        ([float("nan"), 1.0, 0.0], r"NaN or Inf: sigmas\[0\] = nan"),
        ([float("inf"), 1.0, -0.5], "non-negative, got minimum -0.5"),
        ([float("inf"), 2.0, 3.0], "strictly decreasing"),
    ],
)
def test_grid_may_start_at_inf_only(sigmas, match):
    with pytest.raises(ValueError, match=match):
        fastdiff.sample(denoise_to_origin, torch.randn(2, 3), sigmas, "euler")


def test_grid_from_inf_accepted_and_the_dtype_bound_reads_the_finite_entries():
    x = torch.randn(2, 3)
    for sigmas in ([float("inf"), 1e30, 0.0], torch.tensor([float("inf"), 3.0, 1.0])):
        out = fastdiff.sample(denoise_to_origin, x, sigmas, "euler")
        torch.testing.assert_close(out, x * float(sigmas[-1]), rtol=1e-6, atol=0)  # D = 0: x' = sigma' n, then Euler
    with pytest.raises(ValueError, match=r"at most 3.40282e\+38\), got 1e\+39"):
        fastdiff.sample(denoise_to_origin, x, [float("inf"), 1e39, 0.0], "euler")
