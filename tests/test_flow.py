"""Flow-matching models from t = 1 (docs/ALGORITHMS.md section 14): every solver's declared step from sigma = inf is
the limit of its own first step, the loop takes exactly that step, and every solver samples a flow model on every
backend, converging to the exact law."""

from __future__ import annotations

import math

import pytest
import torch
from backend_params import backend_params

import fastdiff
from fastdiff import sampling
from fastdiff.gaussian_law import exact_output_law, gaussian_kl
from fastdiff.models import FlowDenoiser, flow_t_to_sigma, ve_to_flow
from fastdiff.noise import NoiseSource
from fastdiff.solvers import SOLVERS, StepContext, make_solver
from fastdiff.stepping import SolverRun
from fastdiff.toy import GaussianMixture

INF = math.inf
MU, STD = 1.5, 0.5  # the target x0 ~ N(MU, STD^2), per coordinate


def velocity(x_t, t):
    """The exact velocity E[eps - x0 | x_t] of x0 ~ N(MU, STD^2): with C = (1 - t)^2 STD^2 + t^2,
    v = (t - (1 - t) STD^2) (x_t - (1 - t) MU) / C - MU (x_t - MU at t = 1)."""
    t = t.to(torch.float64).reshape(-1, *([1] * (x_t.ndim - 1)))
    c = (1 - t) ** 2 * STD**2 + t**2
    return ((t - (1 - t) * STD**2) * (x_t.to(torch.float64) - (1 - t) * MU) / c - MU).to(x_t.dtype)


def t_grid(n: int) -> list[float]:
    """n steps uniform in flow time from t = 1 (sigma = inf) to t = 0."""
    return flow_t_to_sigma(torch.linspace(1, 0, n + 1, dtype=torch.float64)).tolist()


# Every solver with the option variants that change its step from infinity; churn (s_churn) keeps only the law.
VARIANTS = [
    ("euler", {}), ("euler", {"s_churn": 1.0}), ("heun", {}), ("heun", {"s_churn": 2.0}), ("dpmpp_2m", {}),
    ("ipndm", {}), ("ipndm", {"max_order": 2}), ("ipndm_v", {}), ("unipc", {}), ("unipc", {"lower_order_final": False}),
    ("dpmpp_3m", {}), ("dpmpp_3m", {"solver_type": "heun", "lower_order_final": False}), ("lms", {}), ("lms", {"order": 1}),
    ("gradient_estimation", {}), ("gradient_estimation", {"ge_gamma": 1.5}), ("deis", {}), ("deis", {"max_order": 4}),
    ("euler_ancestral", {}), ("euler_ancestral", {"eta": 0.5}), ("euler_ancestral", {"eta": 0.0}),
    ("euler_ancestral", {"eta": 2.0, "s_noise": 0.5}), ("euler_ancestral", {"eta": 0.3, "s_noise": 0.0}),
    ("res_multistep", {}), ("res_multistep_ancestral", {}), ("res_multistep_ancestral", {"eta": 0.5}),
    ("res_multistep_ancestral", {"eta": 2.0, "s_noise": 0.5}),
    ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 2.0}), ("dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}), ("dpmpp_3m_sde", {}), ("dpmpp_3m_sde", {"eta": 0.5, "s_noise": 0.5}),
    ("dpmpp_3m_sde", {"eta": 0.0}), ("srk", {}), ("srk", {"theta": 0.3}), ("srk", {"coupled": False}),
    ("srk", {"theta": 0.0}), ("srk_dp", {}), ("srk_dp", {"coupled": False}),
    ("euler_maruyama", {}), ("euler_maruyama", {"s_noise": 0.5}), ("srk_score", {}), ("srk_score", {"coupled": False}),
    ("exp_em", {}),
    ("er_sde", {}), ("er_sde", {"max_stage": 1, "s_noise": 0.5}), ("er_sde", {"noise_scaler": "reverse_sde"}),
    ("er_sde", {"noise_scaler": "reverse_sde", "eta": 0.0}), ("seeds_2", {}), ("seeds_2", {"eta": 0.0}), ("seeds_3", {}),
    ("seeds_3", {"eta": 0.5, "s_noise": 2.0}), ("seeds_3", {"eta": 0.0}),
    ("sa_solver", {}), ("sa_solver", {"eta": 0.0}), ("sa_solver", {"s_noise": 0.5, "simple_order_2": True}),
    ("sa_solver_pece", {}), ("sa_solver_pece", {"eta": 2.0, "s_noise": 0.5}),
    ("dpm_solver", {}), ("dpm_solver", {"order": 1}), ("dpm_solver", {"order": 2}),
]
NO_FINITE_LIMIT = {"euler_maruyama", "srk_score", "exp_em"}  # their docstrings: the own step diverges as sigma -> inf
SIGMA_NEXT, DENOISED = 0.7, 0.25


def variant_id(variant) -> str:
    name, options = variant
    return name + "".join(f"-{k}={v}" for k, v in options.items())


class OneImpulse(NoiseSource):
    """Ones for the Gaussian of (step 0, `stage`), zeros for every other draw: reads one noise coefficient."""

    def __init__(self, stage: int | None):
        self.stage = stage

    def draw(self, like, step, stage, sigma=None, sigma_next=None):
        return torch.full_like(like, float(step == 0 and stage == self.stage))


def first_output(solver, sigma: float, x: torch.Tensor, denoiser, noise: NoiseSource | None = None) -> float:
    """x' of the first step from sigma to SIGMA_NEXT (then 0), the step as the loop takes it (the solver's own at a
    finite sigma), every request answered with denoiser(sigma)."""
    grid = [sigma, SIGMA_NEXT, 0.0]
    run = SolverRun(solver, StepContext(grid, torch.tensor(grid, dtype=torch.float64), noise, "reference"), x)
    finished = None
    while finished is None:
        finished = run.answer(torch.full_like(run.request.x, denoiser(run.request.sigma)))
    return float(finished.x_next)


def first_step(solver, sigma: float, n: float, stage: int | None) -> float:
    """x'/sigma' of the first step from x = sigma n (x = n at sigma = inf) with D = DENOISED everywhere, the impulse
    on noise `stage`."""
    x = torch.full((1, 1), n * (1.0 if math.isinf(sigma) else sigma), dtype=torch.float64)
    return first_output(solver, sigma, x, lambda s: DENOISED, OneImpulse(stage)) / SIGMA_NEXT


def measured(name: str, options: dict, sigma: float) -> tuple[float, float, float]:
    """(D weight, kept, fresh) of the first step from sigma: x' = w D + sigma' (kept n + fresh z), fresh the standard
    deviation over the step's noises (stages 0, 1 and 2)."""
    base = first_step(make_solver(name, **options), sigma, 0.0, None)
    kept = first_step(make_solver(name, **options), sigma, 1.0, None) - base
    fresh = math.hypot(*(first_step(make_solver(name, **options), sigma, 0.0, s) - base for s in (0, 1, 2)))
    return base * SIGMA_NEXT / DENOISED, kept, fresh


def test_variants_cover_every_solver():
    assert {name for name, _ in VARIANTS} == set(SOLVERS)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[0] not in NO_FINITE_LIMIT], ids=variant_id)
def test_declared_step_from_infinity_is_the_limit_of_the_solvers_own_first_step(variant):
    name, options = variant
    kept, fresh = make_solver(name, **options).from_infinity()
    errors = []
    for sigma_big in (1e4, 1e6, 1e8):
        weight, kept_big, fresh_big = measured(name, options, sigma_big)
        if options.get("s_churn"):  # churn noises the start: the limit holds in law (variance), not per sample
            errors.append(abs(weight - 1) + abs(kept_big**2 + fresh_big**2 - kept**2 - fresh**2))
        else:
            errors.append(abs(weight - 1) + abs(kept_big - kept) + abs(fresh_big - fresh))
    assert errors[-1] < 2e-4
    assert errors[2] <= errors[1] + 1e-12 and errors[1] <= errors[0] + 1e-12


@pytest.mark.parametrize("name", sorted(NO_FINITE_LIMIT))
def test_no_finite_limit_where_the_docstring_says_so(name):
    """Euler-Maruyama, srk_score and exp_em: the own step's coefficients grow like sigma; their declaration is the
    exact reverse-SDE transition's limit: kept = sigma'/sigma -> 0, fresh = sqrt(1 - (sigma'/sigma)^2) -> 1."""
    sizes = [abs(measured(name, {}, s)[1]) + measured(name, {}, s)[2] for s in (1e4, 1e8)]
    assert sizes[1] > 1e3 * sizes[0] > 1e6
    assert make_solver(name).from_infinity() == (0.0, 1.0)
    assert make_solver("euler_maruyama", s_noise=0.5).from_infinity() == (0.0, 0.5)


def test_heun_has_a_limit_only_for_a_denoiser_constant_in_sigma():
    """Heun's corrector weight (sigma - sigma')/(2 sigma') multiplies D~ - D: with D = 1 below sigma = 1 and 0 above,
    the step's output grows like sigma / (2 sigma')."""

    for sigma in (1e4, 1e8):
        out = first_output(make_solver("heun"), sigma, torch.zeros(1, 1, dtype=torch.float64), lambda s: float(s < 1.0))
        assert out == pytest.approx((sigma - SIGMA_NEXT) / (2 * SIGMA_NEXT), rel=1e-9)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_loop_takes_the_declared_step_from_infinity(variant):
    name, options = variant
    kept, fresh = make_solver(name, **options).from_infinity()
    weight, kept_inf, fresh_inf = measured(name, options, INF)
    assert weight == pytest.approx(1.0, abs=1e-15)
    assert kept_inf == pytest.approx(kept, abs=1e-15) and fresh_inf == pytest.approx(fresh, abs=1e-15)


def test_step_from_infinity_requests_the_unit_noise_at_inf_and_history_starts_after_it():
    grid = t_grid(4)
    ctx = StepContext(grid, torch.tensor(grid, dtype=torch.float64), None, "reference")
    n = torch.randn(3, 2, dtype=torch.float64)
    solver = make_solver("dpmpp_2m")
    run = SolverRun(solver, ctx, n)
    assert run.request.x is n and run.request.sigma == INF
    run.answer(torch.zeros_like(n))
    assert solver.previous_denoised is None  # step 1 is DPM-Solver++(2M)'s first step


def test_grid_inf_to_zero_is_one_denoising_step():
    n = torch.randn(5, 2, dtype=torch.float64)

    def no_noise(sigma, sigma_next):
        raise AssertionError("the step from inf to 0 draws no noise")

    expected = FlowDenoiser(velocity)(n, INF)
    for name in SOLVERS:
        out = fastdiff.sample(FlowDenoiser(velocity), n, [INF, 0.0], name, noise_sampler=no_noise)
        assert torch.equal(out, expected), name
    assert torch.allclose(expected, torch.full_like(n, MU), atol=1e-15)  # D(n, inf) = E[x0]


@pytest.mark.parametrize(("backend", "device"), backend_params())
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_solver_samples_a_flow_model_on_every_backend(backend, device, model_dtype):
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=model_dtype)
    for name in SOLVERS:
        out = fastdiff.sample(FlowDenoiser(velocity), x, t_grid(3), name, seed=3, backend=backend)
        assert out.dtype == model_dtype and bool(torch.isfinite(out).all()), name
        assert float((out.float().mean() - MU).abs()) < 1.5, name


def test_every_solver_samples_a_mixture_flow_model():
    mixture = GaussianMixture.ring(4, radius=2.0, std=0.3)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for name in SOLVERS:
        out = fastdiff.sample(FlowDenoiser(mixture.flow_velocity), x, t_grid(12), name, seed=4)
        radius = out.norm(dim=1)
        assert bool(torch.isfinite(out).all()) and float((radius - 2.0).abs().median()) < 0.4, name


def test_euler_is_the_flow_coordinate_euler_step_and_diffusers_flow_match_euler():
    """x_t' = x_t + (t' - t) v(x_t, t) from t = 1: fastdiff's Euler on FlowDenoiser, every step, to float64 rounding;
    diffusers' FlowMatchEulerDiscreteScheduler (float32 arithmetic) to float32 rounding."""
    ts = torch.linspace(1, 0, 9, dtype=torch.float64)
    x_t = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    flow_states = [x_t]
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        flow_states.append(flow_states[-1] + (t_next - t) * velocity(flow_states[-1], t.expand(4)))
    seen = []
    out = fastdiff.sample(FlowDenoiser(velocity), x_t, t_grid(8), "euler",
                          callback=lambda info: seen.append(ve_to_flow(info["x"], info["sigma"])))
    for mine, flow in zip([*seen, out], flow_states, strict=True):
        assert torch.allclose(mine, flow, rtol=0, atol=1e-12)

    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=ts[:-1].tolist())
    sample = x_t.float()
    for timestep, t in zip(scheduler.timesteps, ts[:-1], strict=True):
        sample = scheduler.step(velocity(sample, t.expand(4).float()), timestep, sample).prev_sample
    assert torch.allclose(sample.double(), out, rtol=0, atol=1e-5)


def exact_flow_law(name: str, steps: int, **options) -> float:
    """KL(output law || target) of `name` on the flow model, exactly (fastdiff.gaussian_law), from unit noise."""
    grid = t_grid(steps)

    def run(model, x, sigmas, noise_sampler):  # the law's probe grid [1, 0] only sets the start scale; the run is from inf
        return fastdiff.sample(FlowDenoiser(velocity), x, grid, name, noise_sampler=noise_sampler, **options)

    mean, cov = exact_output_law(run, [MU], [[STD**2]], [1.0, 0.0], start_mean=[0.0], start_cov=[[1.0]])
    return gaussian_kl(mean, cov, torch.tensor([MU]), torch.tensor([[STD**2]]))


FIT_STEPS = {"sa_solver_pece": (64, 256)}  # step counts of the slope fit where 32 -> 128 does not apply (below)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_converges_to_the_exact_law_at_its_declared_order(name):
    """KL to N(MU, STD^2) falls like steps^(-2 order) (weak error squared); measured slopes 32 -> 128 steps:
    1.8-2.0 for the first-order rules, 3.2-4.0 for the second-order ones. sa_solver_pece's weak error crosses zero
    near 32 steps (KL 4.1e-7 at 32 and 4.3e-7 at 64): fitted from 64 to 256 steps (4.07). The loop's step from t = 1 is
    first order (local error O(dt^2)), so from there a third-order rule converges at order 2 (dpm_solver: 4.06)."""
    kls = [exact_flow_law(name, steps) for steps in FIT_STEPS.get(name, (32, 128))]
    slope = math.log2(kls[0] / kls[1]) / 2
    assert kls[1] < 1e-3
    assert slope > 2 * min(make_solver(name).order, 2) - 0.9


@pytest.mark.parametrize(("name", "options"), [("euler_ancestral", {"eta": 0.5}), ("srk", {}), ("dpmpp_2m_sde", {})])
def test_step_from_infinity_has_the_declared_law_with_counter_noise(name, options):
    """One step from t = 1 to sigma' with the counter noise: x' = E[x0] + sigma' (kept n + fresh z), so the regression
    of x' on n has slope sigma' kept and residual standard deviation sigma' fresh."""
    kept, fresh = make_solver(name, **options).from_infinity()
    sigma_next = 2.0
    n = torch.randn(40000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = fastdiff.sample(FlowDenoiser(velocity), n, [INF, sigma_next], name, seed=6, **options) - MU
    slope = float((out * n).mean() / (n * n).mean())
    residual = float((out - slope * n).std())
    tol = 5 / math.sqrt(n.shape[0])
    assert slope == pytest.approx(sigma_next * kept, abs=sigma_next * tol)
    assert residual == pytest.approx(sigma_next * fresh, abs=sigma_next * tol)


def test_kdiffusion_functions_callbacks_and_gradients_from_infinity():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grid = t_grid(5)
    for name in ("euler", "dpmpp_2m_sde", "srk"):
        ours = fastdiff.sample(FlowDenoiser(velocity), x, grid, name, seed=1)
        assert torch.equal(getattr(sampling, f"sample_{name}")(FlowDenoiser(velocity), x, grid, seed=1), ours)
    reported = []
    fastdiff.sample(FlowDenoiser(velocity), x, grid, "heun", callback=lambda info: reported.append(info["sigma"]))
    assert float(reported[0]) == INF and len(reported) == 5
    start = x.clone().requires_grad_(True)
    fastdiff.sample(FlowDenoiser(velocity), start, grid, "dpmpp_2m", differentiable=True).sum().backward()
    assert bool(torch.isfinite(start.grad).all()) and float(start.grad.abs().sum()) > 0


def test_non_finite_model_output_at_t_one_names_sigma_inf():
    def broken(x_t, t):
        return torch.where(t.reshape(-1, 1) == 1, math.nan, 0.0) * x_t

    with pytest.raises(fastdiff.NonFiniteError, match=r"at step 0 \(sigma=inf"):
        fastdiff.sample(FlowDenoiser(broken), torch.randn(2, 2), t_grid(3), "euler")
