"""A model that returns NaN or Inf partway through raises NonFiniteError naming the first step and sigma, in every
entry point, read once at the end (no per-step host sync); check_finite=False returns the raw tensor."""

import pytest
import torch

import fastdiff
from fastdiff import sampling as K
from fastdiff.compose import sample_superposed
from fastdiff.density import ode_log_likelihood


class BreaksAt:
    """x / (1 + sigma^2) until its `bad`-th call (counting from 0), then NaN (or Inf) from there on."""

    def __init__(self, bad: int, value: float = float("nan")):
        self.bad, self.value, self.calls = bad, value, 0

    def __call__(self, x, sigma):
        out = x / (1 + sigma.view(-1, *([1] * (x.ndim - 1))) ** 2)
        self.calls += 1
        if self.calls > self.bad:
            out = out.clone()
            out[0, 0] = self.value
        return out


SIGMAS = fastdiff.get_sigmas("karras", 8, 0.01, 10.0)


@pytest.mark.parametrize("solver", fastdiff.SOLVERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_sample_names_the_first_bad_step(solver, value):
    model = BreaksAt(3, value)
    x = torch.randn(4, 3) * 10
    evaluations = []
    counter = BreaksAt(10**9)
    fastdiff.sample(lambda x, s: evaluations.append(float(s[0])) or counter(x, s), x, SIGMAS, solver, seed=0)
    expected = rf"denoiser returned NaN or Inf at step \d+ \(sigma={evaluations[3]:g}, evaluation 4 of"
    with pytest.raises(fastdiff.NonFiniteError, match=expected):
        fastdiff.sample(model, x, SIGMAS, solver, seed=0)


def test_opt_out_returns_the_raw_tensor():
    out = fastdiff.sample(BreaksAt(3), torch.randn(4, 3) * 10, SIGMAS, "euler", check_finite=False)
    assert torch.isnan(out).any()


def test_a_finite_run_does_not_raise_and_no_sync_per_step(monkeypatch):
    reads = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: reads.append(1) or real(self, *a, **k))
    fastdiff.sample(BreaksAt(10**9), torch.randn(4, 3) * 10, SIGMAS, "srk", seed=0)
    assert len(reads) == 1  # the flags of all evaluations, read once


def test_kdiffusion_functions_raise():
    with pytest.raises(fastdiff.NonFiniteError, match="step 1"):
        K.sample_dpmpp_2m(BreaksAt(1), torch.randn(4, 3) * 10, SIGMAS)


@pytest.mark.parametrize("ode", [False, True])
def test_superposed_names_the_model(ode):
    models = [BreaksAt(10**9), BreaksAt(2)]
    with pytest.raises(fastdiff.NonFiniteError, match=r"model 1 returned NaN or Inf at step 2 "):
        sample_superposed(models, torch.randn(4, 3) * 10, SIGMAS, seed=0, ode=ode)
    out, _ = sample_superposed([BreaksAt(10**9), BreaksAt(2)], torch.randn(4, 3) * 10, SIGMAS, seed=0, ode=ode,
                               check_finite=False)
    assert not torch.isfinite(out).all()


class Differentiable(BreaksAt):
    def __call__(self, x, sigma):
        out = super().__call__(x, sigma)
        return out + 0 * x  # keeps the output differentiable in x after the NaN write


@pytest.mark.parametrize("estimator", ["hutchinson", "exact"])
def test_likelihood_raises(estimator):
    with pytest.raises(fastdiff.NonFiniteError, match="denoiser returned NaN or Inf at step 1 "):
        ode_log_likelihood(Differentiable(2), torch.randn(4, 3), SIGMAS, solver="heun", estimator=estimator, seed=0)


def test_likelihood_names_a_bad_prior():
    with pytest.raises(fastdiff.NonFiniteError, match="prior returned NaN or Inf"):
        ode_log_likelihood(Differentiable(10**9), torch.randn(4, 3), SIGMAS, seed=0,
                           prior=lambda x: torch.full((x.shape[0],), float("nan"), dtype=torch.float64))


def test_an_overflowing_state_is_told_apart_from_the_model():
    with pytest.raises(fastdiff.NonFiniteError, match=r"sampler's state was NaN or Inf when the denoiser was called at step 1"):
        fastdiff.sample(BreaksAt(10**9), torch.randn(4, 3), SIGMAS, "euler_maruyama", s_noise=1e300, seed=0)
