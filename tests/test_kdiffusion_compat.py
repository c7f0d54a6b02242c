"""fastdiff.sampling against k-diffusion's own sampling.py: same model, start, grid (float64) and noise give the
same samples to ~1e-12 relative, the same callback dicts, and the same noise_sampler call sequence.

Noise is shared through a `noise_sampler` that returns pre-drawn tensors by call index. Euler and Heun churn
draw with `torch.randn_like` inside k-diffusion (every step, churned or not), so there `torch` in k-diffusion's
namespace is replaced by a proxy whose `randn_like` returns the pre-drawn tensor of the step, while fastdiff
gets the same tensors through `fastdiff.sample(..., noise_sampler=...)`, which it calls only on churned steps.
"""

from __future__ import annotations

import inspect
import types

import pytest
import torch
from kdiffusion_loader import load_kdiffusion_sampling

import fastdiff
from fastdiff import sampling
from fastdiff.toy import GaussianMixture

K = load_kdiffusion_sampling()

SHAPE = (5, 2)
MIXTURE = GaussianMixture([[-2.0, 0.5], [1.5, 1.0], [0.0, -2.0]], stds=[0.4, 0.7, 0.3], weights=[0.5, 0.3, 0.2])


class TinyDenoiser(torch.nn.Module):
    """A random two-layer network with EDM preconditioning and a conditioning input passed via extra_args."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.w1 = torch.nn.Parameter(torch.randn(2 + 1 + 3, 16, generator=gen, dtype=torch.float64) / 2, requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(16, 2, generator=gen, dtype=torch.float64) / 4, requires_grad=False)

    def forward(self, x, sigma, cond):
        scale = (1.0 + sigma**2).rsqrt()[:, None]
        h = torch.cat([x * scale, sigma.log()[:, None] / 4, cond], dim=1)
        return scale**2 * x + sigma[:, None] * scale * (torch.tanh(h @ self.w1) @ self.w2)


TINY = TinyDenoiser()
COND = torch.randn(SHAPE[0], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
MODELS = {"mixture": (MIXTURE.denoiser, None), "tiny_net": (TINY, {"cond": COND})}


def grid(n=10):
    return fastdiff.get_sigmas("karras", n, 0.02, 20.0)


def start(sigmas):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]


def predrawn(n):
    gen = torch.Generator().manual_seed(11)
    return [torch.randn(SHAPE, generator=gen, dtype=torch.float64) for _ in range(n)]


class ReplayNoise:
    """noise_sampler returning the pre-drawn tensors in call order, recording its (sigma, sigma_next) arguments."""

    def __init__(self, noises):
        self.noises = noises
        self.calls = []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        return self.noises[len(self.calls) - 1]


def assert_same(actual, expected, rel=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


def assert_same_callbacks(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert a["i"] == b["i"]
        assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-15)
        assert float(a["sigma_hat"]) == pytest.approx(float(b["sigma_hat"]), rel=1e-15)
        assert_same(a["x"], b["x"])
        assert_same(a["denoised"], b["denoised"])


def run_both(name, model_name, options, noisy=True):
    """Run fastdiff.sampling.<name> and k-diffusion's; return (ours, theirs, our sampler calls, their calls)."""
    model, extra_args = MODELS[model_name]
    sigmas = grid()
    x = start(sigmas)
    noises = predrawn(len(sigmas))
    runs = []
    for fn in (getattr(sampling, name), getattr(K, name)):
        trace = []
        kwargs = dict(options)
        replay = ReplayNoise(noises)
        if noisy:
            kwargs["noise_sampler"] = replay
        out = fn(model, x.clone(), sigmas, extra_args=extra_args, callback=trace.append, disable=True, **kwargs)
        runs.append((out, trace, replay.calls))
    (ours, our_trace, our_calls), (theirs, their_trace, their_calls) = runs
    assert ours.dtype == theirs.dtype == torch.float64
    assert_same(ours, theirs)
    assert_same_callbacks(our_trace, their_trace)
    return our_calls, their_calls


ODE_CASES = [("sample_euler", {}), ("sample_heun", {}), ("sample_dpmpp_2m", {})]
SDE_CASES = [
    ("sample_euler_ancestral", {"eta": 1.0}),
    ("sample_euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("sample_dpmpp_2m_sde", {"eta": 1.0, "solver_type": "midpoint"}),
    ("sample_dpmpp_2m_sde", {"eta": 0.5, "solver_type": "midpoint", "s_noise": 1.1}),
    ("sample_dpmpp_2m_sde", {"eta": 1.0, "solver_type": "heun"}),
    ("sample_dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {"eta": 1.0}),
    ("sample_dpmpp_3m_sde", {"eta": 0.5, "s_noise": 0.8}),
]
DETERMINISTIC_SDE_CASES = [
    ("sample_euler_ancestral", {"eta": 0.0}),
    ("sample_dpmpp_2m_sde", {"eta": 0.0, "solver_type": "midpoint"}),
    ("sample_dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}),
]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name, options", ODE_CASES)
def test_ode_samplers_match(name, options, model_name):
    run_both(name, model_name, options, noisy=False)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name, options", SDE_CASES)
def test_sde_samplers_match_with_shared_noise(name, options, model_name):
    our_calls, their_calls = run_both(name, model_name, options)
    steps = grid().tolist()
    assert our_calls == their_calls == list(zip(steps[:-2], steps[1:-1], strict=True))  # never at the step to 0


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name, options", DETERMINISTIC_SDE_CASES)
def test_eta_zero_matches_without_drawing(name, options, model_name):
    """eta = 0 adds no noise: same samples, and fastdiff never calls the noise_sampler. k-diffusion's
    euler_ancestral still calls it (and multiplies by 0); a stateful noise_sampler sees no calls here."""
    our_calls, their_calls = run_both(name, model_name, options)
    assert our_calls == []
    assert len(their_calls) == (len(grid()) - 2 if name == "sample_euler_ancestral" else 0)


class RandnProxy(types.ModuleType):
    """Stands in for `torch` inside k-diffusion: `randn_like` replays pre-drawn tensors, all else is torch."""

    def __init__(self, noises):
        super().__init__("torch")
        self.noises = noises
        self.calls = 0

    def __getattr__(self, attr):
        return getattr(torch, attr)

    def randn_like(self, x):
        self.calls += 1
        return self.noises[self.calls - 1]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_churn_matches_with_shared_noise(solver, model_name, monkeypatch):
    """EDM churn with s_churn > 0 on the steps inside [s_tmin, s_tmax]; k-diffusion draws torch.randn_like on
    every step, fastdiff asks its noise_sampler only on churned steps, for that step's tensor."""
    model, extra_args = MODELS[model_name]
    sigmas = grid()
    x = start(sigmas)
    noises = predrawn(len(sigmas))
    options = {"s_churn": 4.0, "s_tmin": 0.1, "s_tmax": 5.0, "s_noise": 1.007}
    proxy = RandnProxy(noises)
    monkeypatch.setattr(K, "torch", proxy)
    their_trace, our_trace = [], []
    theirs = getattr(K, f"sample_{solver}")(model, x.clone(), sigmas, extra_args=extra_args, callback=their_trace.append,
                                           disable=True, **options)
    steps = sigmas.tolist()
    asked = []

    def by_step(sigma, sigma_next):
        asked.append(float(sigma))
        return noises[steps.index(float(sigma))]

    ours = fastdiff.sample(model, x.clone(), sigmas, solver, extra_args=extra_args, callback=our_trace.append,
                           noise_sampler=by_step, **options)
    assert proxy.calls == len(sigmas) - 1
    churned = [s for s in steps[:-1] if options["s_tmin"] <= s <= options["s_tmax"]]
    assert asked == churned and 0 < len(churned) < len(steps) - 1
    assert_same(ours, theirs)
    assert_same_callbacks(our_trace, their_trace)
    assert any(float(c["sigma_hat"]) > float(c["sigma"]) for c in our_trace)


def test_churn_without_noise_sampler_uses_the_seed():
    """The k-diffusion-style entry point draws churn noise from the counter stream: seeded, and it changes the result."""
    sigmas = grid()
    x = start(sigmas)
    runs = [sampling.sample_heun(MIXTURE.denoiser, x, sigmas, s_churn=4.0, seed=s) for s in (1, 1, 2)]
    plain = sampling.sample_heun(MIXTURE.denoiser, x, sigmas)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]) and not torch.equal(runs[0], plain)


@pytest.mark.parametrize(
    "name", ["sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_euler_ancestral", "sample_dpmpp_2m_sde",
             "sample_dpmpp_3m_sde", "sample_lms"]
)
def test_signatures_extend_kdiffusion(name):
    """k-diffusion's parameters, in order, with the same names, kinds and defaults; anything extra comes after, with a default."""
    theirs = list(inspect.signature(getattr(K, name)).parameters.values())
    ours = list(inspect.signature(getattr(sampling, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [(p.name, p.kind, p.default) for p in theirs]
    assert all(p.default is not inspect.Parameter.empty for p in ours[len(theirs):])
