"""Regenerate bench/SHOOTOUT.md, bench/shootout.png and bench/results/shootout.json: every fastdiff sampler (each name
in `fastdiff.SOLVERS`, read at run time) against ComfyUI's and diffusers' samplers (bench/shootout_peers.py, the peers'
own installed code, default options) on exact targets, at equal counted numbers of network evaluations (NFE).

Targets (float64), "tuning" and "held-out" (no fastdiff choice was made on a held-out target):
- Gaussians N(mu, Sigma), 1-D and 8-D (unequal eigenvalues, rotated; a second 8-D one with another spectrum is held
  out): stochastic samplers by KL(output law || target), the output law exact (`fastdiff.gaussian_law.
  exact_output_law`, the sampler's noise as impulses through its noise_sampler); deterministic samplers by the RMSE to
  the exact ODE map over a fixed batch of starts (`GaussianMixture.ode_solution` / `flow_ode_solution`).
- Gaussian mixtures, 2-D with five components (tuning) and 8-D with six unequal full covariances (held out):
  stochastic samplers by the energy distance of SAMPLES outputs to SAMPLES exact draws (`fastdiff.metrics.
  energy_distance`; its Monte Carlo floor, exact vs exact, is measured and stated), the mean over REPEATS runs with
  independent starts, noise and exact draws, with its standard error; deterministic samplers by the RMSE
  to the exact ODE map (`flow_ode_solution`, RK4 reference; the VE probability-flow ODE is the same ODE in
  x_t = x / (1 + sigma), t = sigma / (1 + sigma)).
- Every target again as a rectified-flow model (all held out): the exact velocity, fastdiff through `FlowDenoiser` on
  `get_sigmas("flow", n, shift=3)` from t = 1, ComfyUI in its CONST coordinates, diffusers on its flow grids.
Grids: VE Karras (rho 7) and log-SNR from 80 to 0.002 (`fastdiff.get_sigmas`), start N(0, 80^2 I); flow models from
the unit noise at t = 1 on three grids: the shift-3 flow grid, the same log-SNR grid after sigma = inf
(`get_sigmas("logsnr", n, 0.002, 80, from_infinity=True)`: one step from t = 1 to sigma 80, then n - 1 log-SNR steps),
and diffusers' own flow grid (DPMSolverMultistepScheduler's `use_flow_sigmas`, from t = 1 - 3.3e-4 to 0; the only grid
family on which the diffusers rows of the flow targets run).
fastdiff rows: every solver with its default options on the shared grid; on flow targets also every deterministic one
in flow-time coordinates (`FlowTimeDenoiser`, label "(t)"), SA-Solver with the flow model's noise window, and options
that are a peer's convention (`OPTION_ROWS`); `dpm_fast` takes the grid's ends as ComfyUI's does.
NFE: a call counter around the model on every sampler; a sampler runs with the most steps whose counted NFE does not
exceed the column's NFE (the table shows its true NFE when it differs). Noise: through each sampler's noise_sampler,
the impulses for the exact law, else torch.randn from a generator with the same seed for every sampler.

    python bench/peer_shootout.py [--quick] [--targets gauss_1d mix_2d_flow] [--nfe 8 16] [--samplers euler comfy]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from shootout_peers import (  # noqa: E402
    COMFY_SKIPPED,
    FLOW_SHIFT,
    SIGMA_MAX,
    SIGMA_MIN,
    Sampler,
    diffusers_flow_grid,
    peer_samplers,
)

import fastdiff  # noqa: E402
from fastdiff.flow_time import flow_t_to_sigma, sigma_to_flow_t  # noqa: E402
from fastdiff.gaussian_law import exact_output_law, gaussian_kl  # noqa: E402
from fastdiff.metrics import energy_distance  # noqa: E402
from fastdiff.models import FlowDenoiser, FlowTimeDenoiser  # noqa: E402
from fastdiff.sampling import sample_dpm_fast  # noqa: E402
from fastdiff.solvers import make_solver  # noqa: E402
from fastdiff.toy import GaussianMixture  # noqa: E402

F64 = torch.float64
NFES = (4, 6, 8, 10, 12, 16, 24, 32, 64)
VE_GRIDS = ("karras", "logsnr")
# the shifted flow grid, the log-SNR grid from 80 to 0.002 after sigma = inf, and diffusers' own flow grid
FLOW_GRIDS = ("flow", "logsnr", "diffusers")
SAMPLES = 1024  # Monte Carlo samples per mixture run (energy distance)
REPEATS = 4  # independent mixture runs per stochastic cell (starts, noise, exact draws): the mean and its standard error
ODE_POINTS = 128  # starts per ODE run
RK4_STEPS = 1024  # steps of the mixtures' reference ODE map (flow_ode_solution)
SEED_START, SEED_NOISE, SEED_EXACT, SEED_ODE = 0, 1, 2, 3
HERE = pathlib.Path(__file__).resolve().parent


# ----------------------------------------------------------------- targets
def _rotated(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=F64))[0]
    cov = q @ torch.diag(eigenvalues) @ q.T
    return 0.5 * (cov + cov.T)


def gauss_1d() -> GaussianMixture:
    return GaussianMixture.gaussian(torch.tensor([0.7], dtype=F64), 0.5)


def gauss_8d() -> GaussianMixture:
    """Eigenvalues log-spaced from 0.01 to 2, a random rotation, mean N(0, 0.5^2 I)."""
    mean = 0.5 * torch.randn(8, generator=torch.Generator().manual_seed(80), dtype=F64)
    return GaussianMixture.gaussian(mean, _rotated(torch.logspace(-2, math.log10(2.0), 8, dtype=F64), 81))


def gauss_8d_b() -> GaussianMixture:
    """Held out: eigenvalues log-spaced from 0.001 to 9 (another spectrum), another rotation and mean."""
    mean = torch.randn(8, generator=torch.Generator().manual_seed(90), dtype=F64)
    return GaussianMixture.gaussian(mean, _rotated(torch.logspace(-3, math.log10(9.0), 8, dtype=F64), 91))


def mix_2d() -> GaussianMixture:
    """Five isotropic 2-D components on a pentagon of radius 2, stds 0.15 to 0.55, unequal weights."""
    angles = 2 * math.pi * torch.arange(5, dtype=F64) / 5
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=-1)
    return GaussianMixture(means, stds=torch.linspace(0.15, 0.55, 5, dtype=F64), weights=torch.arange(1, 6, dtype=F64))


def mix_8d() -> GaussianMixture:
    """Held out: six 8-D components, means N(0, 1.5^2 I), eigenvalues log-uniform in [0.005, 1] under random rotations
    (unequal full covariances), weights 1 + U(0, 2)."""
    g = torch.Generator().manual_seed(8)
    k, d = 6, 8
    means = 1.5 * torch.randn(k, d, generator=g, dtype=F64)
    lam = torch.exp(math.log(0.005) + math.log(200.0) * torch.rand(k, d, generator=g, dtype=F64))
    covs = torch.stack([_rotated(lam[i], 100 + i) for i in range(k)])
    return GaussianMixture(means, covs=covs, weights=1 + 2 * torch.rand(k, generator=g, dtype=F64))


BASE_TARGETS: dict[str, tuple[Callable[[], GaussianMixture], str]] = {
    "gauss_1d": (gauss_1d, "tuning"),
    "gauss_8d": (gauss_8d, "tuning"),
    "mix_2d": (mix_2d, "tuning"),
    "gauss_8d_b": (gauss_8d_b, "held-out"),
    "mix_8d": (mix_8d, "held-out"),
}
TARGETS = {**{n: (f, r, False) for n, (f, r) in BASE_TARGETS.items()},
           **{f"{n}_flow": (f, "held-out", True) for n, (f, _) in BASE_TARGETS.items()}}


# ----------------------------------------------------------------- one target on one grid family
class Counter:
    """Counts the calls of the model functions a sampler is given (one call = one NFE, whatever the batch)."""

    def __init__(self):
        self.calls = 0

    def wrap(self, fn: Callable) -> Callable:
        def counted(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)

        return counted


@dataclass
class Problem:
    """A target on one grid family: the counted exact model in VE (`denoiser`) and flow (`velocity`) form."""

    gm: GaussianMixture
    kind: str  # "karras" or "logsnr"; flow models also "flow" and "diffusers"
    flow: bool = False  # a flow model: sampled from the unit noise at t = 1 (sigma = inf; diffusers: t = 1 - 3.3e-4)
    counter: Counter = field(default_factory=Counter)

    def grid(self, steps: int) -> torch.Tensor:
        if self.kind == "flow":
            return fastdiff.get_sigmas("flow", steps, shift=FLOW_SHIFT)
        if self.kind == "diffusers":
            return flow_t_to_sigma(diffusers_flow_grid(steps))
        return fastdiff.get_sigmas(self.kind, steps, SIGMA_MIN, SIGMA_MAX, from_infinity=self.flow)

    def ve_start(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The start in fastdiff's VE coordinates: a flow model's unit noise taken as x_t at the grid's first level
        (x = x_t (1 + sigma_0); as is at sigma_0 = inf), a VE start as is."""
        return x * (1 + grid[0]) if self.flow and math.isfinite(grid[0]) else x

    def denoiser(self, x, sigma):
        return self.counter.wrap(self.gm.denoiser)(x, sigma)

    def velocity(self, x_t, t):
        return self.counter.wrap(self.gm.flow_velocity)(x_t, t)

    def start(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.gm.dim, generator=generator, dtype=F64)
        return z if self.flow else SIGMA_MAX * z

    def ode_map(self, x: torch.Tensor) -> torch.Tensor:
        """The exact ODE map of starts x to the data (t = 0)."""
        if self.flow:
            return self.gm.flow_ode_solution(x, 1.0, 0.0, steps=RK4_STEPS)
        if self.gm.n_components == 1 or self.gm.dim == 1:
            return self.gm.ode_solution(x, SIGMA_MAX, 0.0)
        t0 = SIGMA_MAX / (1 + SIGMA_MAX)
        return self.gm.flow_ode_solution(x / (1 + SIGMA_MAX), t0, 0.0, steps=RK4_STEPS)


def fastdiff_sampler(name: str) -> Sampler:
    stochastic = make_solver(name).stochastic  # declared by the instance, from its default options

    def run(problem, x, steps, noise_sampler):
        model = FlowDenoiser(problem.velocity) if problem.flow else problem.denoiser
        noise = {"noise_sampler": noise_sampler} if stochastic else {}
        grid = problem.grid(steps)
        return fastdiff.sample(model, problem.ve_start(x, grid), grid, name, **noise)

    return Sampler(name, "fastdiff", run, stochastic)


def fastdiff_flow_time_sampler(label: str, name: str, options: dict) -> Sampler:
    """A deterministic fastdiff solver in flow-time coordinates (x_t, t): `FlowTimeDenoiser` on the same grid in t;
    flow targets only (on a VE target it is the plain solver)."""

    def run(problem, x, steps, noise_sampler):
        t = sigma_to_flow_t(problem.grid(steps))
        return fastdiff.sample(FlowTimeDenoiser(problem.velocity), x, t, name, **options)

    return Sampler(f"{label} (t)", "fastdiff", run, False, flow_only=True)


def fastdiff_dpm_fast() -> Sampler:
    """fastdiff's `sample_dpm_fast` given what ComfyUI's dpm_fast takes from the grid: its first and last nonzero
    level and the step count as NFE (it picks its own log-SNR steps); flow: from t = 1 in flow-time coordinates (in
    fastdiff's VE coordinates t = 1 is sigma = inf, where no log-SNR step can start)."""

    def run(problem, x, steps, noise_sampler):
        grid = problem.grid(steps)
        if problem.flow:
            t = sigma_to_flow_t(grid)
            return sample_dpm_fast(FlowTimeDenoiser(problem.velocity), x, float(t[-2]), float(t[0]), steps)
        return sample_dpm_fast(problem.denoiser, x, float(grid[-2]), float(grid[0]), steps)

    return Sampler("dpm_fast", "fastdiff", run, False)


def fastdiff_sa_solver_model_window(name: str) -> Sampler:
    """SA-Solver with the noise window ComfyUI reads from a flow model, percent_to_sigma(0.2) .. (0.8) (the shifted
    flow times shift(0.8), shift(0.2), shift(t) = s t / (1 + (s - 1) t)), as fastdiff's ComfyUI sampler runs it;
    flow targets only (on the VE targets the default window is already that of the EDM model)."""

    def level(percent: float) -> float:
        t = 1.0 - percent
        t = FLOW_SHIFT * t / (1 + (FLOW_SHIFT - 1) * t)
        return t / (1 - t)

    def run(problem, x, steps, noise_sampler):
        grid = problem.grid(steps)
        return fastdiff.sample(FlowDenoiser(problem.velocity), problem.ve_start(x, grid), grid, name,
                               noise_sampler=noise_sampler, sde_start_sigma=level(0.2), sde_end_sigma=level(0.8))

    return Sampler(f"{name} (model window)", "fastdiff", run, True, flow_only=True)


def fastdiff_option_sampler(label: str, name: str, options: dict) -> Sampler:
    """A fastdiff solver with non-default options (a peer's convention that fastdiff offers as an option)."""
    base = fastdiff_sampler(name)

    def run(problem, x, steps, noise_sampler):
        model = FlowDenoiser(problem.velocity) if problem.flow else problem.denoiser
        noise = {"noise_sampler": noise_sampler} if base.takes_noise else {}
        grid = problem.grid(steps)
        return fastdiff.sample(model, problem.ve_start(x, grid), grid, name, **noise, **options)

    return Sampler(label, "fastdiff", run, base.takes_noise)


# Options that are a peer's convention: ComfyUI's ipndm steps to 0 by x' = D; its uni_pc is UniPC's B(h) = h.
OPTION_ROWS = {"ipndm (denoise to 0)": ("ipndm", {"denoise_to_zero": True}), "unipc (bh1)": ("unipc", {"solver_type": "bh1"})}


def fastdiff_samplers() -> list[Sampler]:
    """Every fastdiff solver on the shared grid; the deterministic ones again in flow-time coordinates; dpm_fast;
    SA-Solver with the model's noise window on flow targets."""
    specs = {name: (name, {}) for name in fastdiff.SOLVERS} | OPTION_ROWS
    plain = [fastdiff_sampler(name) for name in fastdiff.SOLVERS]
    plain += [fastdiff_option_sampler(label, name, options) for label, (name, options) in OPTION_ROWS.items()]
    flow_time = [fastdiff_flow_time_sampler(s.label, *specs[s.label]) for s in plain if not s.takes_noise]
    windowed = [fastdiff_sa_solver_model_window(name) for name in ("sa_solver", "sa_solver_pece")]
    return plain + [fastdiff_dpm_fast()] + flow_time + windowed


def _randn_sampler(shape: tuple[int, int], seed: int) -> Callable:
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=g, dtype=F64)


class Runner:
    """Step counts per NFE (dry runs, cached per sampler and grid family) and whether a peer draws noise."""

    def __init__(self):
        self._nfe: dict[tuple[str, str, int], int] = {}
        self._stochastic: dict[str, bool] = {}
        self._tiny = {(kind, False): Problem(gauss_1d(), kind) for kind in VE_GRIDS}
        self._tiny |= {(kind, True): Problem(gauss_1d(), kind, flow=True) for kind in FLOW_GRIDS}

    def counted_run(self, sampler: Sampler, problem: Problem, x: torch.Tensor, steps: int, noise_sampler) -> tuple:
        problem.counter.calls = 0
        out = sampler.run(problem, x, steps, noise_sampler)
        return out.to(F64), problem.counter.calls

    def _dry_run(self, sampler: Sampler, kind: tuple[str, bool], steps: int, draw: float = 0.0) -> tuple:
        """(output, counted NFE, noise_sampler calls) of a run on a one-sample 1-D Gaussian whose every noise draw is
        `draw`; kind = (grid kind, flow)."""
        p, draws = self._tiny[kind], []

        def noise(sigma, sigma_next):
            draws.append(1)
            return torch.full((1, 1), draw, dtype=F64)

        out, nfe = self.counted_run(sampler, p, p.start(1, torch.Generator().manual_seed(0)), steps, noise)
        return out, nfe, len(draws)

    def nfe_of(self, sampler: Sampler, kind: tuple[str, bool], steps: int) -> int:
        key = (sampler.label, kind, steps)
        if key not in self._nfe:
            self._nfe[key] = self._dry_run(sampler, kind, steps)[1]
        return self._nfe[key]

    def stochastic(self, sampler: Sampler) -> bool:
        """fastdiff: the solver's declaration; peers: whether the output of a run of 8 steps depends on its noise (a
        sampler that draws noise and scales it by 0, as ComfyUI's res_multistep at eta = 0, is deterministic)."""
        if sampler.library == "fastdiff":
            return sampler.takes_noise
        if sampler.label not in self._stochastic:
            try:
                quiet, _, draws = self._dry_run(sampler, ("karras", False), 8, draw=0.0)
                loud = self._dry_run(sampler, ("karras", False), 8, draw=1.0)[0]
                self._stochastic[sampler.label] = draws > 0 and not torch.equal(quiet, loud)
            except Exception:  # it fails in every run too, where the failure is recorded
                self._stochastic[sampler.label] = sampler.takes_noise
        return self._stochastic[sampler.label]

    def steps_for(self, sampler: Sampler, kind: tuple[str, bool], nfe: int) -> int | None:
        """The most steps whose counted NFE is <= nfe (None if the fewest steps it takes are already more; a sampler
        that refuses one step, as dpm_fast whose two ends would coincide, starts at two)."""
        try:
            fewest = 1 if self.nfe_of(sampler, kind, 1) <= nfe else None
        except ValueError:
            fewest = 2 if self.nfe_of(sampler, kind, 2) <= nfe else None
        if fewest is None:
            return None
        per_step = max(self.nfe_of(sampler, kind, 4) / 4, 0.5)
        n = max(fewest, int(nfe / per_step))
        while n > fewest and self.nfe_of(sampler, kind, n) > nfe:
            n -= 1
        while self.nfe_of(sampler, kind, n + 1) <= nfe:
            n += 1
        return n


@dataclass
class Result:
    target: str
    role: str
    grid: str
    kind: str  # "sde" or "ode"
    library: str
    sampler: str
    nfe_asked: int
    nfe: int | None
    metric: str
    error: float | None
    note: str = ""
    seconds: float = 0.0
    stderr: float | None = None  # the standard error of a mean over REPEATS Monte Carlo runs (mixtures, stochastic)


class TargetRun:
    """One target on one grid family: the fixed starts, exact samples and ODE references, the metric per sampler."""

    _ode_refs: dict[tuple[str, bool, int], tuple[torch.Tensor, torch.Tensor]] = {}  # the VE grids share one map

    def __init__(self, name: str, kind: str, samples: int, ode_points: int, repeats: int = REPEATS):
        make, self.role, flow = TARGETS[name]
        self.name, self.problem = name, Problem(make(), kind, flow=flow)
        gm = self.problem.gm
        self.exact_law = gm.n_components == 1
        self.samples = samples
        key = (name, self.problem.flow, ode_points)
        if key not in self._ode_refs:
            x = self.problem.start(ode_points, torch.Generator().manual_seed(SEED_ODE))
            self._ode_refs[key] = (x, self.problem.ode_map(x))
        self.ode_x, self.ode_ref = self._ode_refs[key]
        self.floor = None
        if not self.exact_law:  # repeat k: starts, noise and exact draws from seeds 10 k + SEED_*
            self.mc_x = [self.problem.start(samples, torch.Generator().manual_seed(10 * k + SEED_START)) for k in range(repeats)]
            self.exact = [gm.sample(samples, torch.Generator().manual_seed(10 * k + SEED_EXACT)) for k in range(repeats)]
            other = [gm.sample(samples, torch.Generator().manual_seed(SEED_EXACT + 100 + i)) for i in range(3)]
            self.floor = sum(energy_distance(o, self.exact[0]) for o in other) / len(other)

    def measure(self, runner: Runner, sampler: Sampler, stochastic: bool, steps: int) -> tuple[float, int, str, float | None]:
        """(error, counted NFE, metric, standard error of the error or None where it is exact)."""
        p, gm = self.problem, self.problem.gm
        if not stochastic:
            out, nfe = runner.counted_run(sampler, p, self.ode_x, steps, None)
            return float((out - self.ode_ref).pow(2).sum(1).mean().sqrt()), nfe, "RMSE to the ODE map", None
        if self.exact_law:
            used = []

            def fn(model, x, sigmas, noise_sampler):
                out, nfe = runner.counted_run(sampler, p, x, steps, noise_sampler)
                used.append(nfe)
                return out

            start = torch.tensor([1.0 if p.flow else SIGMA_MAX, 0.0], dtype=F64)
            var = 1.0 if p.flow else SIGMA_MAX**2
            m, S = exact_output_law(fn, gm.mean, gm.covs[0], start, start_mean=torch.zeros(gm.dim),
                                    start_cov=var * torch.eye(gm.dim, dtype=F64))
            return gaussian_kl(m, S, gm.mean, gm.covs[0]), used[-1], "KL(output || target), exact", None
        errors = []
        for k, (x, exact) in enumerate(zip(self.mc_x, self.exact, strict=True)):
            noise = _randn_sampler((self.samples, gm.dim), 10 * k + SEED_NOISE)
            out, nfe = runner.counted_run(sampler, p, x, steps, noise)
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError("non-finite samples")
            errors.append(energy_distance(out, exact))
        e = torch.tensor(errors, dtype=F64)
        stderr = float(e.std() / math.sqrt(len(errors))) if len(errors) > 1 else None
        return float(e.mean()), nfe, f"energy distance to exact samples, mean of {len(errors)} runs", stderr


def shootout(targets, grids, nfes, samplers, samples=SAMPLES, ode_points=ODE_POINTS, repeats=REPEATS,
             log=print) -> tuple[list, dict]:
    """Every sampler on every target and grid family at every NFE: the results and the Monte Carlo floors."""
    runner = Runner()
    results, floors = [], {}
    kinds = {s.label: runner.stochastic(s) for s in samplers}
    for name in targets:
        flow = TARGETS[name][2]
        for grid in FLOW_GRIDS if flow else grids:
            began = time.perf_counter()
            tr = TargetRun(name, grid, samples, ode_points, repeats)
            if tr.floor is not None:
                floors[f"{name}/{grid}"] = tr.floor
            for sampler in samplers:
                if (sampler.flow_only and not flow) or (flow and sampler.flow_grid not in (None, grid)):
                    continue
                stochastic = kinds[sampler.label]
                for nfe in nfes:
                    error, used, metric, note, stderr = None, None, "", "", None
                    tic = time.perf_counter()
                    try:
                        steps = runner.steps_for(sampler, (grid, flow), nfe)
                        if steps is None:
                            note = "one step needs more NFE"
                        else:
                            error, used, metric, stderr = tr.measure(runner, sampler, stochastic, steps)
                            if not math.isfinite(error):
                                error, note = None, "non-finite"
                    except Exception as err:  # a peer or solver that cannot run here: recorded, not fatal
                        note = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
                    results.append(Result(name, tr.role, grid, "sde" if stochastic else "ode", sampler.library,
                                          sampler.label, nfe, used, metric, error, note, time.perf_counter() - tic, stderr))
            log(f"{name:>16} {grid:>7}: {len(samplers)} samplers x {len(nfes)} NFE in {time.perf_counter() - began:.1f} s")
    return results, floors


# ----------------------------------------------------------------- report
def _fmt(r: Result) -> str:
    if r.error is None:
        return "n/a" if not r.note else "fail"
    text = f"{r.error:.2e}" + (f" ±{r.stderr:.0e}" if r.stderr is not None else "")
    return text if r.nfe == r.nfe_asked else f"{text} ({r.nfe})"


def best(rows: list[Result], nfe: int, library_is_fastdiff: bool) -> Result | None:
    pool = [r for r in rows if r.nfe_asked == nfe and r.error is not None and (r.library == "fastdiff") == library_is_fastdiff]
    return min(pool, key=lambda r: r.error) if pool else None


TIE = 0.01  # best errors within 1% of each other: a tie (several samplers are the same method in two libraries)


def comparison(rows: list[Result], nfes, floor: float | None) -> dict[int, tuple[float | None, str]]:
    """Per NFE: (best fastdiff / best peer, the winner's label; 'tie (MC floor)' when both are below twice the floor,
    'tie (MC noise)' when Monte Carlo means differ by less than twice the standard error of their difference,
    'tie (within 1%)' when the two best errors differ by less than TIE)."""
    out = {}
    for nfe in nfes:
        f, p = best(rows, nfe, True), best(rows, nfe, False)
        if f is None or p is None:
            out[nfe] = (None, "fastdiff " + f.sampler if f else (p.sampler if p else "-"))
            continue
        ratio = f.error / p.error if p.error > 0 else math.inf
        if floor is not None and f.error < 2 * floor and p.error < 2 * floor:
            out[nfe] = (ratio, "tie (MC floor)")
        elif f.stderr is not None and p.stderr is not None and abs(f.error - p.error) < 2 * math.hypot(f.stderr, p.stderr):
            out[nfe] = (ratio, "tie (MC noise)")
        elif abs(ratio - 1) < TIE:
            out[nfe] = (ratio, f"tie (within 1%): {f.sampler} / {p.sampler}")
        else:
            out[nfe] = (ratio, f"fastdiff {f.sampler}" if ratio <= 1 else p.sampler)
    return out


def groups(results: list[Result]) -> dict[tuple[str, str, str], list[Result]]:
    out: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        out.setdefault((r.target, r.grid, r.kind), []).append(r)
    return out


def _ratio_table(lines, results, floors, nfes, role):
    lines += ["| target | grid | kind | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
              "|---|---|---|" + "---|" * len(nfes)]
    for (target, grid, kind), rows in groups(results).items():
        if rows[0].role != role:
            continue
        cmp = comparison(rows, nfes, floors.get(f"{target}/{grid}") if kind == "sde" else None)
        cells = []
        for n in nfes:
            ratio, who = cmp[n]
            mark = "**" if who.startswith("fastdiff") else ""
            tie = " ~" if who.startswith("tie (MC") else (" =" if who.startswith("tie") else "")
            cells.append("-" if ratio is None else f"{mark}{ratio:.2g}{mark}{tie}")
        lines.append(f"| {target} | {grid} | {kind} | " + " | ".join(cells) + " |")


def _who_wins(lines, results, floors, nfes, role):
    for kind, title in (("ode", "deterministic (ODE) samplers"), ("sde", "stochastic samplers")):
        wins, total, ties, peers = 0, 0, 0, {}
        for (target, grid, k), rows in groups(results).items():
            if k != kind or rows[0].role != role:
                continue
            for ratio, who in comparison(rows, nfes, floors.get(f"{target}/{grid}") if k == "sde" else None).values():
                if ratio is None or who.startswith("tie (MC"):
                    continue
                total += 1
                if who.startswith("tie"):
                    ties += 1
                    continue
                if who.startswith("fastdiff"):
                    wins += 1
                else:
                    peers[who] = peers.get(who, 0) + 1
        if total == 0:
            continue
        top = ", ".join(f"{name} ({count})" for name, count in sorted(peers.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"- {title}: fastdiff's best wins {wins} of {total} (target, grid, NFE) cells, ties (within 1%) {ties}"
                     + (f"; the peers' winners: {top}" if top else "") + ".")
        for (target, grid, k), rows in groups(results).items():
            if k != kind or rows[0].role != role:
                continue
            cmp = comparison(rows, nfes, floors.get(f"{target}/{grid}") if k == "sde" else None)
            lost = [f"{n} ({cmp[n][1]}, x{cmp[n][0]:.3g})" for n in nfes if cmp[n][0] is not None and cmp[n][0] > 1
                    and not cmp[n][1].startswith(("tie", "fastdiff"))]
            won = [str(n) for n in nfes if cmp[n][1].startswith("fastdiff")]
            even = [str(n) for n in nfes if cmp[n][1].startswith("tie (within")]
            lines.append(f"  - {target} / {grid}: fastdiff wins at NFE {', '.join(won) or 'none'}"
                         + (f"; ties at {', '.join(even)}" if even else "")
                         + (f"; loses at NFE {'; '.join(lost)}" if lost else ""))


KNOWN_DIFFERENCES = (
    "grids: diffusers' schedulers step on their own grids (Karras or exponential over their discrete training sigmas, "
    "`use_flow_sigmas` for flow, also in the flow targets' logsnr tables), and ComfyUI's dpm_fast on its own log-SNR "
    "steps between the grid's ends (fastdiff's `dpm_fast` row takes the same ends and equals it); fastdiff's "
    "`dpmpp_2m`, `dpmpp_3m` and `unipc` equal diffusers' DPM++ 2M, 3M and UniPC on one grid (tests/test_diffusers_dpm.py, "
    "tests/test_dpmpp_3m.py, tests/test_unipc.py), so those wins are the grid's",
    "ComfyUI's KSampler gives `uni_pc`, `uni_pc_bh2`, `dpm_2` and `dpm_2_ancestral` the grid of n + 1 steps without "
    "its penultimate level, so their lowest level is higher (0.0031 instead of 0.002 on the logsnr grid at 24 steps), "
    "and `uni_pc` stops at sigma 0.001 instead of stepping to 0; on the same grid with the same stop fastdiff's `unipc` "
    "(`solver_type` bh2, and the `unipc (bh1)` row for ComfyUI's uni_pc) equals ComfyUI's to 1e-14 "
    "(tests/test_unipc.py), so ComfyUI's UniPC leads are its grid's: on gauss_8d_b / logsnr at NFE 24 fastdiff's unipc "
    "on ComfyUI's grid has ComfyUI's error (docs/ALGORITHMS.md section 17); the same grid gives ComfyUI's "
    "dpm_2_ancestral its lead on gauss_1d_flow / flow at NFE 64 (KL 1.0e-6 there, 1.6e-3 on the shared grid: the flow "
    "grid's penultimate level t = 0.0089 is the one dropped)",
    "flow models, coordinates: ComfyUI steps in the flow coordinates (x_t, t) with its sampler's sigma = t, fastdiff by "
    "default in x = x_t / (1 - t), sigma = t / (1 - t), from t = 1 exactly. Euler is the same method in both; a linear "
    "multistep rule extrapolates (x - D) / sigma in sigma there and (x_t - D) / t in t here, so ipndm, ipndm_v, deis, "
    "lms, UniPC, dpmpp_2m and SA-Solver are different methods on the flow targets. fastdiff runs every deterministic "
    "solver in ComfyUI's coordinates too (`fastdiff.models.FlowTimeDenoiser`, the `(t)` rows; "
    "tests/test_flow_time_coordinates.py: equal to ComfyUI's euler, heun, lms, ipndm, deis and dpmpp_2m to 1e-13); "
    "the counts below say neither coordinate system is better everywhere",
    "ComfyUI `ipndm`: its step to sigma' = 0 is x' = D; fastdiff's `ipndm` keeps the Adams-Bashforth formula there by "
    "default and takes ComfyUI's with `denoise_to_zero=True` (the `ipndm (denoise to 0)` rows; tests/test_ipndm.py)",
    "ComfyUI `ipndm_v`: its last order-4 weight is -q h1/h2 (weights summing to 1.076 on uneven grids); fastdiff's "
    "`ipndm_v` uses the consistent -q h2/h3, which converges on flow grids and is 1.6-2.7x behind on Karras grids at "
    "NFE 16-32 (fastdiff/solvers/ipndm_v.py)",
    "ComfyUI `sa_solver`: its noise window is `percent_to_sigma(0.2 / 0.8)` of the model, on the shift-3 flow model "
    "sigma 0.75 to 12, where fastdiff's default `sde_start_sigma` / `sde_end_sigma` are those of an EDM model on "
    "[0.002, 80]; the `sa_solver (model window)` rows run fastdiff's with the flow model's window, as fastdiff's ComfyUI "
    "sampler does",
    "ComfyUI `deis`: coefficients from a 10^4-point rectangle rule with float32 VP constants (up to ~1% off the exact "
    "tAB weights fastdiff integrates); on the flow targets its lead is the coordinates' (the `deis (t)` rows)",
    "ComfyUI's log-SNR SDE samplers on a flow model (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, er_sde, seeds_2, seeds_3, "
    "sa_solver) first move the grid's t = 1 to `percent_to_sigma(1e-4)` (`offset_first_sigma_for_snr`); fastdiff "
    "steps from t = 1 exactly. Given that first level, fastdiff's dpmpp_3m_sde and `sa_solver (model window)` equal "
    "ComfyUI's dpmpp_3m_sde and sa_solver (tests/test_peer_shootout.py), so their leads on flow targets are that "
    "start's; it helps in some cells and hurts in others (dpmpp_3m_sde on gauss_1d_flow / flow at NFE 4: KL 0.061 "
    "from t = 1, 0.33 from the offset)",
    "ComfyUI `ddpm` applies its VE step (alpha_cumprod = 1 / (sigma^2 + 1)) to a flow model's (x_t, t) as if t were a "
    "VE sigma, and `res_multistep_ancestral` its ancestral split there: other stochastic processes than the flow "
    "model's, which do not converge to the target (below), not methods fastdiff offers; their leads at NFE 4-8 are "
    "where such a process passes near the target",
)
NON_CONVERGENT = ("comfy ddpm", "comfy res_multistep_ancestral")


def _growth_with_nfe(results, label: str) -> str:
    """On the flow targets: how often a sampler's error at the largest NFE exceeds its own smallest error, and its
    error there over the best fastdiff error at that NFE."""
    runs: dict[tuple[str, str], dict[int, float]] = {}
    top = max(r.nfe_asked for r in results)
    best_fastdiff: dict[tuple[str, str], float] = {}
    for r in results:
        if r.error is None or not r.target.endswith("_flow"):
            continue
        if r.sampler == label:
            runs.setdefault((r.target, r.grid), {})[r.nfe_asked] = r.error
        elif r.library == "fastdiff" and r.nfe_asked == top and r.kind == "sde":
            key = (r.target, r.grid)
            best_fastdiff[key] = min(best_fastdiff.get(key, math.inf), r.error)
    runs = {key: errs for key, errs in runs.items() if top in errs and key in best_fastdiff}
    if not runs:
        return f"{label}: not run at NFE {top}"
    growth = sorted(errs[top] / min(errs.values()) for errs in runs.values())
    behind = sorted(errs[top] / best_fastdiff[key] for key, errs in runs.items())
    return (f"{label}: at NFE {top} its error is {behind[len(behind) // 2]:.2g} times the best fastdiff stochastic "
            f"sampler's (median over {len(runs)} flow (target, grid) runs; {behind[0]:.2g} to {behind[-1]:.2g}), and "
            f"more than twice its own smallest error over NFE on {sum(g > 2 for g in growth)} of them")


FLOW_PAIRS = tuple((ours + suffix, theirs) for ours, theirs in (
    ("euler", "comfy euler"), ("heun", "comfy heun"), ("dpmpp_2m", "comfy dpmpp_2m"), ("ipndm", "comfy ipndm"),
    ("ipndm_v", "comfy ipndm_v"), ("deis", "comfy deis"), ("lms", "comfy lms"), ("unipc", "comfy uni_pc_bh2"),
) for suffix in ("", " (t)"))


def _flow_pairs(results) -> list[tuple[str, str, int, int]]:
    """(fastdiff sampler, ComfyUI sampler, cells fastdiff's error is below 99% of ComfyUI's, cells compared) on flow."""
    errors = {(r.sampler, r.target, r.grid, r.nfe_asked): r.error for r in results
              if TARGETS[r.target][2] and r.kind == "ode" and r.error is not None and math.isfinite(r.error)}
    out = []
    for ours, theirs in FLOW_PAIRS:
        cells = [(t, g, n) for s, t, g, n in errors if s == ours and (theirs, t, g, n) in errors]
        won = sum(errors[(ours, t, g, n)] < 0.99 * errors[(theirs, t, g, n)] for t, g, n in cells)
        out.append((ours, theirs, won, len(cells)))
    return out


def write_report(results, floors, nfes, notes, meta, out_dir: pathlib.Path, plot: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results").mkdir(exist_ok=True)
    payload = {"meta": meta, "floors": floors, "notes": notes, "results": [asdict(r) for r in results]}
    (out_dir / "results" / "shootout.json").write_text(json.dumps(payload, indent=1) + "\n")
    L = [  # noqa: N806
        "# Sampler shootout: fastdiff vs ComfyUI and diffusers",
        "",
        "Regenerated by `python bench/peer_shootout.py` (the method is in its docstring). "
        f"{meta['machine']}; torch {meta['torch']}, diffusers {meta['diffusers']}; "
        f"{meta['samples']} samples per mixture run, {meta.get('repeats', 1)} runs per stochastic mixture cell, "
        f"{meta['ode_points']} starts per ODE run; "
        f"run time {meta['seconds']:.0f} s (summed over the runs merged into these tables).",
        "",
        f"fastdiff samplers: {', '.join(meta['fastdiff'])}.",
        "",
        "Grids: fastdiff and ComfyUI run on the same grid (ComfyUI's flow coordinates take it as t = sigma / (1 + sigma)); "
        "diffusers' schedulers on their own grid of the same kind (`use_karras_sigmas` / `use_exponential_sigmas` over "
        "training sigmas from 0.002 to 80). The flow targets run on three grids: the shift-3 flow grid "
        "(`get_sigmas(\"flow\", n, shift=3)`), the log-SNR grid from 80 to 0.002 after sigma = inf "
        "(`get_sigmas(\"logsnr\", n, 0.002, 80, from_infinity=True)`; no constant of it was chosen on a flow target: it "
        "is the VE grid), and diffusers' flow grid (`use_flow_sigmas`, `flow_shift=3` of DPMSolverMultistepScheduler; "
        "the diffusers rows of the flow targets run there only, UniPC, DEIS and SA-Solver on their own, nearly equal, "
        "flow grids). ComfyUI's dpm_fast and fastdiff's `dpm_fast` choose their own log-SNR steps between "
        "the grid's ends. fastdiff rows beyond the solvers' defaults: `(t)` = the solver in flow-time coordinates "
        "(`FlowTimeDenoiser`, flow targets), `sa_solver (model window)` = SA-Solver with the flow model's noise window "
        "(as ComfyUI reads it from the model), and the options that are a peer's convention: "
        + ", ".join(f"`{label}` = {name} with {options}" for label, (name, options) in OPTION_ROWS.items()) + ".",
        "",
        f"Peers: {len(meta['peers'])} ({', '.join(meta['peers'])}), each with its default options. Left out: "
        + "; ".join(f"ComfyUI `{k}` ({v})" for k, v in COMFY_SKIPPED.items()) + ".",
        "",
    ]
    L += [f"- {note}" for note in notes]
    L += ["", "Errors: KL(output law || target) exact for stochastic samplers on Gaussians, energy distance to "
          "exact samples for stochastic samplers on mixtures, RMSE to the exact ODE map for deterministic samplers. "
          "A cell with `(k)` ran at its true NFE k (the most steps not exceeding the column's NFE); `n/a`: one step "
          "needs more evaluations; `fail`: the sampler raised or returned non-finite values (the json has the "
          "message); `±`: the standard error of a mixture cell's mean over its runs (independent starts, noise and "
          "exact draws). Ratio = best fastdiff error / best peer error: below 1 (bold) fastdiff wins; `~`: a Monte "
          "Carlo tie, both best errors below twice the Monte Carlo floor or the two means within twice the standard "
          "error of their difference; `=`: the two best errors within 1% (a tie; several "
          "samplers are the same method in both libraries, e.g. euler, dpmpp_2m, ipndm, er_sde).", ""]
    L += [f"The mixtures' ODE references are {RK4_STEPS} RK4 steps of `flow_ode_solution` (halving to {RK4_STEPS // 2} "
          "steps moves them by at most 2.2e-10 RMS on these targets, so their error is about 1e-11). The VE start is "
          "N(0, 80^2 I) for every sampler (diffusers: divided by sqrt(1 + sigma_0^2) into its VP coordinates), the "
          "flow start the unit noise. SA-Solver (diffusers) draws its noise with its module's `randn_tensor`, routed "
          "to the shared noise_sampler while it runs; DPM-Solver SDE (diffusers) gets it as `variance_noise`.", ""]
    L += ["Monte Carlo floors of the energy distance (exact vs exact, mean of three draws of the same size): "
          + ", ".join(f"{k} {v:.1e}" for k, v in floors.items()) + ".", ""]
    for role in ("held-out", "tuning"):
        L += [f"## Best fastdiff / best peer on {role} targets", ""]
        _ratio_table(L, results, floors, nfes, role)
        L.append("")
    L += ["## Why the peers' same-named methods differ", "",
          "Where a peer's winner is a method fastdiff also has, fastdiff's version equals the peer's on the same grid "
          "and noise (each solver's test against the peer's own code); the differences that remain are these:", ""]
    L += [f"- {why}" for why in KNOWN_DIFFERENCES]
    L += ["", "Samplers that do not converge on the flow targets:", ""]
    L += [f"- {_growth_with_nfe(results, label)}" for label in NON_CONVERGENT]
    L += ["", "Same-named methods on the flow targets (deterministic, every NFE): cells where fastdiff's version has "
          "the lower error.", ""]
    L += [f"- {ours} vs {theirs}: {won} of {total}" for ours, theirs, won, total in _flow_pairs(results)]
    L += ["", "## Who wins where", "", "Counted from the tables below (Monte Carlo ties left out).", ""]
    for role in ("held-out", "tuning"):
        L += [f"{role.capitalize()} targets:", ""]
        _who_wins(L, results, floors, nfes, role)
        L.append("")
    failures = sorted({(r.sampler, r.target, r.grid, r.note) for r in results if r.error is None and r.note
                       and not r.note.startswith("one step")})
    if failures:
        L += ["## Runs that failed", "", "| sampler | target | grid | error |", "|---|---|---|---|"]
        L += [f"| {label} | {target} | {grid} | {note.replace('|', '/')} |" for label, target, grid, note in failures]
        L.append("")
    L += ["## Tables", ""]
    for (target, grid, kind), rows in groups(results).items():
        metric = next((r.metric for r in rows if r.metric), "")
        L += [f"### {target} ({rows[0].role}), {grid} grid, {'stochastic' if kind == 'sde' else 'deterministic'}: {metric}", ""]
        L += ["| sampler | " + " | ".join(str(n) for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
        by_sampler: dict[str, list[Result]] = {}
        for r in rows:
            by_sampler.setdefault(r.sampler, []).append(r)
        for label, srows in by_sampler.items():
            lib = srows[0].library
            L.append(f"| {label if lib != 'fastdiff' else '**' + label + '**'} | "
                     + " | ".join(_fmt(r) for r in sorted(srows, key=lambda r: r.nfe_asked)) + " |")
        cmp = comparison(rows, nfes, floors.get(f"{target}/{grid}") if kind == "sde" else None)
        ratios = ("-" if cmp[n][0] is None else f"{cmp[n][0]:.2g}" for n in nfes)
        L.append("| best fastdiff / best peer | " + " | ".join(ratios) + " |")
        L.append("| winner | " + " | ".join(cmp[n][1] for n in nfes) + " |")
        L.append("")
    (out_dir / "SHOOTOUT.md").write_text("\n".join(L))
    if plot:
        write_plot(results, floors, nfes, out_dir / "shootout.png")


def write_plot(results, floors, nfes, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = list(groups(results).items())
    cols = 5
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.2 * rows_n), squeeze=False)
    for ax, ((target, grid, kind), rows) in zip(axes.flat, panels, strict=False):
        by: dict[str, list[Result]] = {}
        for r in rows:
            if r.error is not None and r.error > 0:
                by.setdefault(r.sampler, []).append(r)
        for srows in by.values():
            srows.sort(key=lambda r: r.nfe_asked)
            color = "tab:blue" if srows[0].library == "fastdiff" else "tab:red"
            ax.plot([r.nfe for r in srows], [r.error for r in srows], color=color, alpha=0.15, lw=0.8)
        for is_fd, color, label in ((True, "tab:blue", "best fastdiff"), (False, "tab:red", "best peer")):
            pts = [(b.nfe, b.error) for n in nfes if (b := best(rows, n, is_fd)) is not None and b.error > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color, lw=2.2, marker="o", ms=3, label=label)
        floor = floors.get(f"{target}/{grid}")
        if kind == "sde" and floor is not None:
            ax.axhline(floor, color="grey", ls=":", lw=1, label="MC floor")
        ax.set(xscale="log", yscale="log", title=f"{target} {grid} {kind}", xlabel="NFE")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(list(nfes), [str(n) for n in nfes], fontsize=7)
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------- command line
def select(samplers: list[Sampler], patterns: list[str] | None) -> list[Sampler]:
    """The samplers named by `patterns`: a pattern that is a label selects that sampler only, any other its substrings."""
    if not patterns:
        return samplers
    labels = {s.label for s in samplers}
    return [s for s in samplers if any(p == s.label if p in labels else p in s.label for p in patterns)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: two targets, NFE 8 and 16, small sample sizes")
    ap.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=None)
    ap.add_argument("--grids", nargs="+", choices=VE_GRIDS, default=list(VE_GRIDS), help="VE grid families")
    ap.add_argument("--nfe", nargs="+", type=int, default=None)
    ap.add_argument("--samplers", nargs="+", default=None, help="labels or substrings (e.g. euler comfy diffusers)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--report-only", action="store_true", help="rewrite SHOOTOUT.md and the plot from the json")
    ap.add_argument("--merge", action="store_true",
                    help="run only the selected samplers and targets and replace those rows in the saved json (same NFEs, seeds)")
    ap.add_argument("--out", type=pathlib.Path, default=None, help="output folder (default bench/; --quick: no files)")
    args = ap.parse_args(argv)
    if args.report_only:
        out = args.out or HERE
        saved = json.loads((out / "results" / "shootout.json").read_text())
        results = [Result(**r) for r in saved["results"]]
        write_report(results, saved["floors"], tuple(saved["meta"]["nfes"]), saved["notes"], saved["meta"], out)
        return
    targets = args.targets or (["gauss_1d", "mix_2d"] if args.quick else list(TARGETS))
    nfes = tuple(args.nfe or ((8, 16) if args.quick else NFES))
    samples = args.samples or (512 if args.quick else SAMPLES)
    peers, notes = peer_samplers()
    samplers = select(fastdiff_samplers() + peers, args.samplers)
    began = time.perf_counter()
    repeats = 2 if args.quick else REPEATS
    results, floors = shootout(targets, args.grids, nfes, samplers, samples, 64 if args.quick else ODE_POINTS, repeats)
    seconds = time.perf_counter() - began
    import diffusers

    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "samples": samples,
        "ode_points": 64 if args.quick else ODE_POINTS, "repeats": repeats, "seconds": seconds, "nfes": list(nfes),
        "fastdiff": [s.label for s in samplers if s.library == "fastdiff"],
        "peers": [s.label for s in samplers if s.library != "fastdiff"],
    }
    failed = sorted({f"{r.sampler} on {r.target}/{r.grid}: {r.note}" for r in results if r.error is None and r.note
                     and not r.note.startswith("one step")})
    print(f"{len(results)} results in {seconds:.0f} s, {len(failed)} (sampler, target) failures")
    for line in failed[:40]:
        print("  fail:", line)
    out = args.out if args.out is not None else (None if args.quick else HERE)
    if out is not None and args.merge:
        saved = json.loads((out / "results" / "shootout.json").read_text())
        ran = {(s.label, target) for s in samplers for target in targets}
        results = [Result(**r) for r in saved["results"] if (r["sampler"], r["target"]) not in ran] + results
        floors = saved["floors"] | floors
        for key in ("fastdiff", "peers"):
            meta[key] = saved["meta"][key] + [label for label in meta[key] if label not in saved["meta"][key]]
        meta["seconds"] = saved["meta"]["seconds"] + seconds
        order = {label: i for i, label in enumerate(meta["fastdiff"] + meta["peers"])}
        places = {name: i for i, name in enumerate(TARGETS)}
        results.sort(key=lambda r: (places[r.target], r.grid != "karras", order[r.sampler], r.nfe_asked))
    if out is not None:
        write_report(results, floors, nfes, notes, meta, out)
        print(f"wrote {out / 'SHOOTOUT.md'}")


if __name__ == "__main__":
    main()
