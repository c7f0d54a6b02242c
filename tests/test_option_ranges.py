"""Options that pass validation must not produce garbage: infinite or NaN coefficients, seeds wider than 64 bits,
NaN priors and start values are refused by name."""

import pytest
import torch

import fastdiff
from fastdiff.compose import sample_superposed
from fastdiff.density import ode_log_likelihood
from fastdiff.noise import sample_seeds

SIGMAS = fastdiff.get_sigmas("karras", 4, 0.01, 10.0)


def shrink(x, sigma):
    return x / (1 + sigma.view(-1, *([1] * (x.ndim - 1))) ** 2)


@pytest.mark.parametrize(
    "solver, option",
    [
        ("euler_maruyama", "s_noise"),
        ("euler_ancestral", "s_noise"),
        ("euler_ancestral", "eta"),
        ("dpmpp_2m_sde", "eta"),
        ("dpmpp_3m_sde", "s_noise"),
        ("euler", "s_churn"),
        ("heun", "s_noise"),
        ("srk", "theta"),
    ],
)
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_non_finite_or_negative_coefficients_are_refused(solver, option, value):
    with pytest.raises(ValueError, match=option):
        fastdiff.sample(shrink, torch.randn(2, 3), SIGMAS, solver, seed=0, **{option: value})


def test_an_infinite_s_tmax_is_the_default_and_allowed():
    fastdiff.sample(shrink, torch.randn(2, 3), SIGMAS, "euler", s_churn=1.0, s_tmax=float("inf"), seed=0)


@pytest.mark.parametrize("seed", [2**64 + 5, -(2**63) - 1, 2**200])
def test_seeds_wider_than_64_bits_are_refused(seed):
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        sample_seeds(seed, 2)
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        fastdiff.sample(shrink, torch.randn(2, 3), SIGMAS, "srk", seed=seed)


def test_64_bit_seeds_both_signed_and_unsigned_are_accepted():
    assert sample_seeds(2**64 - 1, 2) == sample_seeds(-1, 2)


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
@pytest.mark.parametrize("seed", [2**64 + 5, "0", 1.5, [1]])
def test_likelihood_validates_its_seed_for_every_estimator(estimator, seed):
    with pytest.raises((ValueError, TypeError), match="seed"):
        ode_log_likelihood(shrink, torch.randn(2, 3), SIGMAS, estimator=estimator, seed=seed)


def test_superposed_refuses_a_nan_start():
    start = torch.zeros(2, 2)
    start[1, 0] = float("nan")
    with pytest.raises(ValueError, match="log_q_start contains NaN"):
        sample_superposed([shrink, shrink], torch.randn(2, 3), SIGMAS, seed=0, log_q_start=start)


@pytest.mark.parametrize("name", ["differentiable", "check_finite"])
def test_switches_must_be_bools(name):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        fastdiff.sample(shrink, torch.randn(2, 3), SIGMAS, "euler", **{name: 1})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"rho": float("nan")}, ValueError, "rho must be a finite number"),
        ({"rho": 0.0}, ValueError, r"rho must be in"),
        ({"rho": -1.0}, ValueError, r"rho must be in"),
        ({"kind": "time_uniform", "beta_min": float("nan")}, ValueError, "beta_min must be a finite number"),
        ({"kind": "time_uniform", "beta_d": -100.0}, ValueError, r"beta_d must be in"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating-point"),
    ],
)
def test_grid_options_out_of_range_are_refused(kwargs, error, match):
    kind = kwargs.pop("kind", "karras")
    with pytest.raises(error, match=match):
        fastdiff.get_sigmas(kind, 5, 0.1, 10.0, **kwargs)


def test_a_grid_beyond_the_state_dtype_is_refused():
    with pytest.raises(ValueError, match=r"sigmas must fit in the solver's torch.float32 state"):
        fastdiff.sample(shrink, torch.randn(2, 3), [1e300, 1.0, 0.0], "euler")
    fastdiff.sample(shrink, torch.randn(2, 3, dtype=torch.float64), [1e300, 1.0, 0.0], "euler")


def test_progress_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        fastdiff.sample(shrink, torch.randn(2, 3), SIGMAS, "euler", progress="yes")


def test_a_model_returning_integers_is_refused():
    with pytest.raises(TypeError, match="denoiser must return a floating-point tensor, got dtype torch.int64"):
        fastdiff.sample(lambda x, s: torch.zeros(x.shape, dtype=torch.int64), torch.randn(2, 3), SIGMAS, "euler")
