"""fastdiff.models: each wrapper around an exact VP model of a Gaussian mixture must reproduce the
mixture's exact VE denoiser, and the timestep maps must invert each other."""

import math

import pytest
import torch
from torch import nn

import fastdiff
from fastdiff.models import (
    ContinuousVPEpsDenoiser,
    FlowDenoiser,
    ScoreDenoiser,
    VPEpsDenoiser,
    VPVDenoiser,
    flow_t_to_sigma,
    flow_to_ve,
    sigma_to_flow_t,
    ve_to_flow,
)
from fastdiff.toy import GaussianMixture

F64 = torch.float64
GM = GaussianMixture([[1.0, -1.0, 0.5], [-2.0, 0.5, 0.0]], stds=[0.4, 0.7], weights=[0.6, 0.4])
BETA_MIN, BETA_D = 0.1, 19.9


def ddpm_alphas_cumprod(steps=1000):
    """The DDPM linear beta schedule 1e-4 .. 0.02."""
    return torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, steps, dtype=F64), 0)


ACP = ddpm_alphas_cumprod()
TABLE = ((1 - ACP) / ACP).sqrt()


def table_sigma(t):
    """Model-side time -> sigma: integer t reads the table; fractional t interpolates log sigma."""
    if not t.is_floating_point():
        return TABLE[t]
    t = t.to(F64)
    low = t.floor().long().clamp(max=len(TABLE) - 2)
    w = t - low
    return torch.exp((1 - w) * TABLE[low].log() + w * TABLE[low + 1].log())


def continuous_sigma(t):
    return torch.sqrt(torch.expm1(0.5 * BETA_D * t**2 + BETA_MIN * t))


def to_ve(x_vp, sigma):
    """The VE point and the per-sample sigma seen by a VP model: x = x_vp sqrt(1 + sigma^2)."""
    return x_vp * torch.sqrt(1 + sigma**2)[:, None], sigma


class ExactEps(nn.Module):
    """eps(x_vp, t) = -sigma score(x, sigma) of the mixture: the ideal eps-prediction network."""

    def __init__(self, sigma_of_t):
        super().__init__()
        self.sigma_of_t = sigma_of_t
        self.calls = []

    def forward(self, x_vp, t):
        self.calls.append(t)
        x, sigma = to_ve(x_vp.to(F64), self.sigma_of_t(t))
        return (-sigma[:, None] * GM.score(x, sigma)).to(x_vp.dtype)


class ExactV(nn.Module):
    """v = alpha_vp eps - sigma_vp x0 with alpha_vp = 1 / sqrt(1 + sigma^2), sigma_vp = sigma alpha_vp."""

    def forward(self, x_vp, t):
        x, sigma = to_ve(x_vp, table_sigma(t))
        x0 = GM.denoiser(x, sigma)
        eps = (x - x0) / sigma[:, None]
        alpha = torch.rsqrt(1 + sigma**2)[:, None]
        return alpha * eps - sigma[:, None] * alpha * x0


def points(n=6, seed=0, scale=1.0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


def assert_reproduces_denoiser(wrapper, sigmas, rtol=1e-10):
    """At each sigma (as float, 0-d and [B] tensor) the wrapper equals GM.denoiser to rtol of the sample's scale."""
    for s in sigmas:
        x = points(scale=1 + s)
        expected = GM.denoiser(x, s)
        for sigma in (s, torch.tensor(s, dtype=F64), torch.full((x.shape[0],), s, dtype=F64)):
            out = wrapper(x, sigma)
            assert out.dtype == F64
            torch.testing.assert_close(out, expected, rtol=rtol, atol=rtol * (1 + s))


@pytest.mark.parametrize("quantize", [False, True])
def test_eps_wrapper_exact_at_tabulated_sigmas(quantize):
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP, quantize=quantize)
    picks = [0, 1, 17, 500, 998, 999]
    assert_reproduces_denoiser(wrapper, [TABLE[i].item() for i in picks])
    ts = wrapper.model.calls[-1]
    assert ts.dtype == (torch.int64 if quantize else F64) and bool((ts == 999).all())


def test_eps_wrapper_exact_between_table_entries():
    """Fractional timesteps: the model's own log-linear table interpolation makes the wrapper exact anywhere in range."""
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    assert_reproduces_denoiser(wrapper, [0.02, 0.3, 1.7, 25.0, 150.0])


def test_eps_wrapper_per_sample_sigmas_and_quantization():
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP, quantize=True)
    x = points()
    sigma = TABLE[torch.tensor([3, 40, 200, 600, 900, 999])]
    torch.testing.assert_close(wrapper(x, sigma), GM.denoiser(x, sigma), rtol=1e-10, atol=1e-9)
    off_table = sigma * 1.001
    assert torch.equal(wrapper.sigma_to_t(off_table), torch.tensor([3, 40, 200, 600, 900, 999]))


def test_v_wrapper_exact():
    wrapper = VPVDenoiser(ExactV(), ACP)
    assert_reproduces_denoiser(wrapper, [TABLE[0].item(), TABLE[321].item(), 0.8, 40.0, TABLE[-1].item()])


def test_continuous_eps_wrapper_exact():
    wrapper = VPEpsDenoiser.continuous(ExactEps(continuous_sigma), beta_min=BETA_MIN, beta_d=BETA_D)
    assert isinstance(wrapper, ContinuousVPEpsDenoiser)
    assert_reproduces_denoiser(wrapper, [0.002, 0.05, 1.0, 12.0, 80.0])
    assert wrapper.sigma_min == pytest.approx(continuous_sigma(torch.tensor(1e-3, dtype=F64)).item(), rel=1e-14)
    assert wrapper.sigma_max == pytest.approx(continuous_sigma(torch.tensor(1.0, dtype=F64)).item(), rel=1e-14)


def test_score_wrappers_exact():
    assert_reproduces_denoiser(ScoreDenoiser(GM.score), [0.0, 0.01, 1.0, 80.0])

    def vp_score(x_vp, t):  # grad_y log q_vp(y) = grad_x log q(x) / alpha at x = y / alpha
        x, sigma = to_ve(x_vp, continuous_sigma(t))
        return GM.score(x, sigma) * torch.sqrt(1 + sigma**2)[:, None]

    assert_reproduces_denoiser(ScoreDenoiser(vp_score, "vp", beta_min=BETA_MIN, beta_d=BETA_D), [0.01, 1.0, 80.0])


def test_wrapped_model_samples_like_the_exact_denoiser():
    """fastdiff.sample through the wrapper equals sampling with the exact denoiser (grid inside the table)."""
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    sigmas = fastdiff.get_sigmas("karras", 12, wrapper.sigma_min, wrapper.sigma_max)
    x = points(scale=wrapper.sigma_max)
    torch.testing.assert_close(
        fastdiff.sample(wrapper, x, sigmas, "euler"), fastdiff.sample(GM.denoiser, x, sigmas, "euler"), rtol=1e-9, atol=1e-9
    )


def test_float32_inputs():
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    x = points(scale=2.0)
    out = wrapper(x.float(), torch.full((6,), 1.5))
    assert out.dtype == torch.float32 and wrapper.model.calls[-1].dtype == torch.float32
    torch.testing.assert_close(out.double(), GM.denoiser(x, 1.5), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- timestep maps
def test_discrete_table_and_round_trips():
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    assert torch.equal(wrapper.sigmas, TABLE)
    assert wrapper.sigma_min == TABLE[0].item() and wrapper.sigma_max == TABLE[-1].item()
    assert torch.equal(wrapper.sigma_to_t(TABLE), torch.arange(1000, dtype=F64))
    t = torch.tensor([0.0, 0.25, 3.5, 499.9, 998.01, 999.0], dtype=F64)
    torch.testing.assert_close(wrapper.sigma_to_t(wrapper.t_to_sigma(t)), t, rtol=0, atol=1e-9)
    sigma = torch.exp(torch.linspace(math.log(TABLE[0].item()), math.log(TABLE[-1].item()), 50, dtype=F64))
    torch.testing.assert_close(wrapper.t_to_sigma(wrapper.sigma_to_t(sigma)), sigma, rtol=1e-12, atol=0)
    torch.testing.assert_close(wrapper.t_to_sigma(t), table_sigma(t), rtol=1e-14, atol=0)


def test_discrete_map_clamps_outside_the_table_and_quantizes_to_nearest():
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    assert wrapper.sigma_to_t(torch.tensor([1e-6, 1e4], dtype=F64)).tolist() == [0.0, 999.0]
    quantized = VPEpsDenoiser(ExactEps(table_sigma), ACP, quantize=True)
    sigma = torch.exp(torch.linspace(-6.0, 5.0, 301, dtype=F64))
    nearest = (sigma.log()[:, None] - TABLE.log()[None]).abs().argmin(1)
    assert torch.equal(quantized.sigma_to_t(sigma), nearest)


def test_continuous_round_trip():
    wrapper = ContinuousVPEpsDenoiser(ExactEps(continuous_sigma), BETA_MIN, BETA_D)
    t = torch.linspace(1e-4, 1.0, 17, dtype=F64)
    torch.testing.assert_close(wrapper.sigma_to_t(wrapper.t_to_sigma(t)), t, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- module behaviour and validation
def test_extra_args_and_module_behaviour():
    class Conditional(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x_vp, t, *, shift):
            return self.scale * x_vp + shift

    net = Conditional()
    wrapper = VPEpsDenoiser(net, ACP)
    assert list(wrapper.parameters()) == [net.scale]
    wrapper.to(F64)
    assert net.scale.dtype == F64
    x = points()
    sigma = 0.5
    expected = x - sigma * (x / math.sqrt(1 + sigma**2) + 2.0)
    torch.testing.assert_close(wrapper(x, sigma, shift=2.0), expected, rtol=1e-14, atol=1e-14)
    assert ScoreDenoiser(lambda x, s, *, shift: x * 0 + shift)(x, 2.0, shift=1.0).sub(x + 4.0).abs().max() < 1e-14
    with pytest.raises(TypeError, match="shift"):
        wrapper(x, sigma)


@pytest.mark.parametrize(
    "acp, error, match",
    [
        (torch.tensor([[0.9, 0.5]]), ValueError, "alphas_cumprod must be a 1-D float tensor"),
        (torch.tensor([0.9]), ValueError, "T >= 2"),
        (torch.tensor([0.9, 0.5, 0.0]), ValueError, r"must lie in \(0, 1\)"),
        (torch.tensor([1.0, 0.5]), ValueError, r"must lie in \(0, 1\)"),
        (torch.tensor([0.5, 0.9]), ValueError, "strictly decreasing"),
        ("abc", TypeError, "alphas_cumprod must be a 1-D tensor or sequence"),
    ],
)
def test_bad_alphas_cumprod(acp, error, match):
    with pytest.raises(error, match=match):
        VPEpsDenoiser(ExactEps(table_sigma), acp)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be callable"):
        VPVDenoiser(3, ACP)
    with pytest.raises(TypeError, match="quantize must be a bool"):
        VPEpsDenoiser(ExactEps(table_sigma), ACP, quantize=1)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        ScoreDenoiser("score")
    with pytest.raises(ValueError, match="parameterization must be 've' or 'vp', got 'edm'"):
        ScoreDenoiser(GM.score, "edm")
    with pytest.raises(ValueError, match="beta_d must be a non-negative number, got -1"):
        ContinuousVPEpsDenoiser(ExactEps(continuous_sigma), beta_d=-1)
    with pytest.raises(ValueError, match="t_min must be in"):
        ContinuousVPEpsDenoiser(ExactEps(continuous_sigma), t_min=0.0)
    wrapper = VPEpsDenoiser(ExactEps(table_sigma), ACP)
    with pytest.raises(ValueError, match=r"sigma must be a float, a 0-d tensor or a \[B\] = \[6\] tensor, got shape \(2,\)"):
        wrapper(points(), torch.ones(2))
    with pytest.raises(TypeError, match="sigma must be a float"):
        wrapper(points(), "1.0")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        wrapper.t_to_sigma(1000.5)
    with pytest.raises(ValueError, match=r"model must return a tensor shaped like x \(6, 3\), got \(6, 2\)"):
        VPEpsDenoiser(lambda x, t: x[:, :2], ACP)(points(), 1.0)


# ---------------------------------------------------------------- flow-matching models (docs/ALGORITHMS.md section 14)
class FlowNet(nn.Module):
    """The mixture's exact flow network: velocity v = E[eps - x0 | x_t], x0 = x_t - t v or eps = x_t + (1 - t) v."""

    def __init__(self, prediction="velocity", time_scale=1.0):
        super().__init__()
        self.prediction, self.time_scale = prediction, time_scale
        self.times = []

    def forward(self, x_t, t):
        self.times.append(t)
        t = t / self.time_scale
        v = GM.flow_velocity(x_t, t)
        tb = t.to(x_t.dtype)[:, None]
        return {"velocity": v, "x0": x_t - tb * v, "eps": x_t + (1 - tb) * v}[self.prediction]


@pytest.mark.parametrize("prediction", ["velocity", "x0", "eps"])
def test_flow_wrapper_is_the_exact_denoiser(prediction):
    wrapper = FlowDenoiser(FlowNet(prediction), prediction=prediction)
    assert_reproduces_denoiser(wrapper, [0.0, 0.03, 0.9, 7.0, 300.0], rtol=1e-9)


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_flow_wrapper_at_t_one_sees_the_unit_noise_and_returns_the_mean(prediction):
    net = FlowNet(prediction, time_scale=1000.0)
    n = points(seed=3)
    out = FlowDenoiser(net, prediction=prediction, time_scale=1000.0)(n, math.inf)
    torch.testing.assert_close(out, (GM.weights @ GM.means).expand_as(n), rtol=1e-12, atol=1e-12)  # D(n, inf) = E[x0]
    assert torch.equal(net.times[-1], torch.full((6,), 1000.0, dtype=F64))
    big = 1e7  # the limit: D(sigma n, sigma) -> D(n, inf)
    torch.testing.assert_close(FlowDenoiser(FlowNet(prediction), prediction=prediction)(big * n, big), out, rtol=0, atol=1e-6)


def test_flow_wrapper_model_times_and_low_precision():
    net = FlowNet(time_scale=1000.0)
    wrapper = FlowDenoiser(net, time_scale=1000.0)
    x = points()
    sigma = torch.tensor([0.0, 0.5, 1.0, 3.0, 9.0, math.inf], dtype=F64)
    wrapper(x, sigma)
    torch.testing.assert_close(net.times[-1], 1000.0 * sigma_to_flow_t(sigma), rtol=1e-15, atol=0)
    half = FlowDenoiser(lambda x_t, t: GM.flow_velocity(x_t, t).half())(x.half(), 0.7)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), GM.denoiser(x.half().double(), 0.7), rtol=2e-2, atol=2e-2)


def test_flow_state_conversions():
    x_t = points(seed=4)
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999, 1.0], dtype=F64)
    x = flow_to_ve(x_t, t)
    torch.testing.assert_close(x[:5], x_t[:5] / (1 - t[:5, None]), rtol=1e-15, atol=0)
    assert torch.equal(x[5], x_t[5])  # t = 1: the VE state is the unit noise x_t itself
    torch.testing.assert_close(ve_to_flow(x, flow_t_to_sigma(t)), x_t, rtol=1e-14, atol=0)
    assert torch.equal(ve_to_flow(x_t, math.inf), x_t) and torch.equal(flow_to_ve(x_t, 1.0), x_t)
    assert flow_t_to_sigma(0.75) == 3.0 and sigma_to_flow_t(math.inf) == 1.0


def test_flow_wrapper_refusals():
    n = points()
    with pytest.raises(ValueError, match=r"prediction='eps' has no denoiser at sigma = inf"):
        FlowDenoiser(FlowNet("eps"), prediction="eps")(n, math.inf)
    with pytest.raises(ValueError, match=r"prediction must be one of \('velocity', 'x0', 'eps'\), got 'v'"):
        FlowDenoiser(FlowNet(), prediction="v")
    with pytest.raises(TypeError, match="model must be callable as model"):
        FlowDenoiser("net")
    with pytest.raises(ValueError, match="time_scale must be a positive finite number, got 0"):
        FlowDenoiser(FlowNet(), time_scale=0)
    with pytest.raises(ValueError, match=r"FlowDenoiser's model must return a tensor shaped like x \(6, 3\), got \(6,\)"):
        FlowDenoiser(lambda x_t, t: t)(n, 1.0)
    with pytest.raises(TypeError, match="FlowDenoiser's model must return a floating-point tensor, got dtype torch.int64"):
        FlowDenoiser(lambda x_t, t: x_t.long())(n, 1.0)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        FlowDenoiser(FlowNet())(n, -0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\] \(flow time.*got 1.5"):
        flow_to_ve(n, 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\].*got -0.1"):
        flow_to_ve(n, torch.tensor([0.5, -0.1, 0.2, 0.3, 0.4, 0.5]))
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        ve_to_flow(n, -1.0)


def test_v_wrapper_at_sigma_inf_is_the_limit_and_eps_is_reported_non_finite():
    """D = alpha^2 x - sigma alpha v -> -v(n, T - 1) as sigma -> inf with x = sigma n; eps-prediction has no limit."""

    def linear_v(x_vp, t):
        return 0.3 * x_vp + 1e-4 * t[:, None]

    n = points(seed=5)
    wrapper = VPVDenoiser(linear_v, ACP)
    out = wrapper(n, math.inf)
    torch.testing.assert_close(out, -(0.3 * n + 1e-4 * 999.0), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(wrapper(1e6 * n, 1e6), out, rtol=0, atol=1e-5)
    assert bool(torch.isfinite(fastdiff.sample(wrapper, n, [math.inf, 5.0, 0.0], "dpmpp_2m")).all())
    with pytest.raises(fastdiff.NonFiniteError, match=r"denoiser returned NaN or Inf at step 0 \(sigma=inf"):
        fastdiff.sample(VPEpsDenoiser(lambda x_vp, t: x_vp, ACP), n, [math.inf, 5.0, 0.0], "euler")
