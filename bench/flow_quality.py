"""Regenerate bench/FLOW.md's tables and bench/flow_quality.png: fastdiff's samplers against diffusers' flow-matching
schedulers on exact rectified-flow targets, every run from t = 1, at equal numbers of network evaluations (NFE).

The network is the exact velocity v(x_t, t) = E[eps - x0 | x_t] of a Gaussian mixture (`GaussianMixture.flow_velocity`),
so every error is the sampler's own. Two targets: `ring_2d` (eight modes on a circle, unit variance per coordinate),
on which every tunable choice is made, and `mixture_16d` (eight anisotropic rotated components, unequal weights),
held out: its numbers come from the choices made on `ring_2d`.

- fastdiff: `fastdiff.sample(FlowDenoiser(gm.flow_velocity), n, sigmas, solver, seed=...)` for every solver in
  `fastdiff.SOLVERS` (defaults), n unit noise, sigmas starting at inf (t = 1); the grid is tuned per solver among
  `get_sigmas("flow", steps, shift=s)` and inf followed by a Karras (rho 7) or log-SNR grid from 80 to 0.002.
- diffusers: the scheduler driven in a plain loop as its pipelines do (x = randn, model output = v at the
  scheduler's own sigma, `scheduler.step`), its flow shift tuned among the same values.
- metrics: MMD, the maximum mean discrepancy of the samples to the exact target law (three Gaussian kernels, the
  unbiased estimate with the exact-law terms in closed form, see `MMD`); for deterministic samplers also the RMS
  distance to the exact flow-ODE map of the same noise (`GaussianMixture.flow_ode_solution`, RK4 reference). Tuning
  minimises the mean log error over NFE >= 8 (ODE error for deterministic samplers, MMD for stochastic ones). Steps
  per NFE come from the dry run `fastdiff.stepping.evaluation_plan` (fastdiff) and `len(scheduler.timesteps)`
  (diffusers): the most steps whose NFE does not exceed the target.

    python bench/flow_quality.py [--nfe 4 6 8 10 15 20 30 50] [--samples 16384] [--mmd-points 4096] [--tune-samples 2048]
"""

from __future__ import annotations

import argparse
import inspect
import math
import pathlib
import platform
import time
from dataclasses import dataclass

import torch

import fastdiff
from fastdiff.models import FlowDenoiser
from fastdiff.solvers import make_solver
from fastdiff.stepping import evaluation_plan
from fastdiff.toy import GaussianMixture

F64 = torch.float64
NFES = (4, 6, 8, 10, 15, 20, 30, 50)
SHIFTS = (1.0, 2.0, 3.0, 5.0)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SEED_START, SEED_SAMPLER, SEED_DIRECTIONS, SEED_EXACT = 0, 1, 2, 3
DIRECTIONS = 64
ODE_POINTS = 2048  # noises per run checked against the exact ODE map
ODE_STEPS = 1024  # RK4 steps of the reference map (error ~1e-10, far below every sampler's)
TUNE_FROM_NFE = 8


# ----------------------------------------------------------------- targets
def ring_2d() -> GaussianMixture:
    """Eight equal modes of std 0.1 on a circle of radius 1.4: variance 0.99 per coordinate."""
    return GaussianMixture.ring(k=8, radius=1.4, std=0.1)


def mixture_16d() -> GaussianMixture:
    """Eight 16-D components: means N(0, 0.8^2 I), covariance eigenvalues log-uniform in [0.003, 0.3] under random
    rotations, weights 1 + U(0, 2) normalised."""
    g = torch.Generator().manual_seed(16)
    k, d = 8, 16
    means = 0.8 * torch.randn(k, d, generator=g, dtype=F64)
    rot = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=F64))[0]
    lam = torch.exp(math.log(0.003) + math.log(100.0) * torch.rand(k, d, generator=g, dtype=F64))
    covs = rot @ torch.diag_embed(lam) @ rot.mT
    return GaussianMixture(means, covs=0.5 * (covs + covs.mT), weights=1 + 2 * torch.rand(k, generator=g, dtype=F64))


TARGETS = {"ring_2d": ring_2d, "mixture_16d": mixture_16d}
TUNE_ON = "ring_2d"


# ----------------------------------------------------------------- metrics
class MMD:
    """The maximum mean discrepancy of the samples to the exact target law, sum of three Gaussian kernels
    k_h(x, y) = exp(-|x - y|^2 / (2 h^2)), h = (0.1, 0.3, 1) sqrt(d tr(Cov) / (2 d)) (0.1, 0.3, 1 on the ring):

        MMD^2 = mean_{i != j} k(x_i, x_j) - 2 mean_i E_p k(x_i, .) + E_{p p} k,

    unbiased (the U-statistic; it can fall below 0) with the two exact terms in closed form: E_p k_h(x, .) =
    (2 pi h^2)^(d/2) q_h(x), q_h the mixture with covariances Sigma_k + h^2 I (`log_prob(x, sigma=h)`), and
    E_pp k_h = (2 pi h^2)^(d/2) sum_jk pi_j pi_k N(mu_j; mu_k, Sigma_j + Sigma_k + h^2 I). Reported as
    sqrt(max(MMD^2, 0)) on the first `points` samples."""

    def __init__(self, gm: GaussianMixture, points: int):
        self.gm, self.points = gm, points
        scale = math.sqrt(gm.cov_at(0.0).trace().item() / 2)
        self.bandwidths = tuple(f * scale for f in (0.1, 0.3, 1.0))
        eye = torch.eye(gm.dim, dtype=F64)
        self.pp = 0.0
        for h in self.bandwidths:
            cov = gm.covs[:, None] + gm.covs[None] + h**2 * eye
            law = torch.distributions.MultivariateNormal(gm.means[None].expand_as(cov[..., 0]), cov)
            dens = law.log_prob(gm.means[:, None].expand_as(cov[..., 0])).exp()
            self.pp += self._norm(h) * (gm.weights[:, None] * gm.weights[None] * dens).sum().item()

    def _norm(self, h: float) -> float:
        return (2 * math.pi * h**2) ** (self.gm.dim / 2)

    def squared(self, samples: torch.Tensor) -> float:
        x = samples[: self.points].to(F64)
        n = x.shape[0]
        qq = 0.0
        for i in range(0, n, 2048):
            d2 = torch.cdist(x[i : i + 2048], x).pow(2)
            qq += sum(torch.exp(-d2 / (2 * h**2)).sum().item() for h in self.bandwidths)
        qq = (qq - n * len(self.bandwidths)) / (n * (n - 1))  # the diagonal k(x_i, x_i) = 1 left out
        qp = sum(self._norm(h) * self.gm.log_prob(x, h).exp().mean().item() for h in self.bandwidths)
        return qq - 2 * qp + self.pp

    def __call__(self, samples: torch.Tensor) -> float:
        return math.sqrt(max(self.squared(samples), 0.0))


def ode_rmse(out: torch.Tensor, exact: torch.Tensor) -> float:
    """sqrt(mean over samples of |x - Phi(n)|^2) on the first ODE_POINTS samples."""
    return (out[: exact.shape[0]].to(F64) - exact).pow(2).sum(1).mean().sqrt().item()


# ----------------------------------------------------------------- samplers
@dataclass(frozen=True)
class Sampler:
    label: str
    library: str  # "fastdiff" or "diffusers"
    stochastic: bool
    options: tuple[str, ...]  # the tuning space (grid or shift names)
    run: object  # (gm, noise, nfe, option) -> (samples, nfe used)


def fastdiff_grids() -> dict[str, object]:
    """Grid families for steps n, each with n + 1 entries starting at inf (t = 1) and ending at 0."""
    inf = torch.tensor([math.inf], dtype=F64)
    grids = {f"flow shift {s:g}": (lambda n, s=s: fastdiff.get_sigmas("flow", n, shift=s)) for s in (1.0, 3.0)}
    for s in SHIFTS:  # uniform in t down to t_min = 1/n: the grid of diffusers' multistep flow schedulers
        grids[f"flow to 0, shift {s:g}"] = lambda n, s=s: fastdiff.get_sigmas("flow", n, shift=s, t_min=1 / n)
    for kind in ("karras", "logsnr"):
        grids[f"inf + {kind}"] = lambda n, kind=kind: torch.cat([inf, fastdiff.get_sigmas(kind, n - 1, SIGMA_MIN, SIGMA_MAX)])
    return grids


def most_steps(nfe_of, nfe: int, fewest: int = 1) -> int:
    """The most steps n >= fewest with nfe_of(n) <= nfe (nfe_of is non-decreasing)."""
    n = fewest
    while nfe_of(n + 1) <= nfe:
        n += 1
    return n


def fastdiff_sampler(name: str) -> Sampler:
    grids = fastdiff_grids()
    counts: dict[tuple[str, int], int] = {}

    def nfe_of(option: str, n: int) -> int:
        if (option, n) not in counts:
            counts[option, n] = len(evaluation_plan(lambda: make_solver(name), grids[option](n).tolist()).sigmas)
        return counts[option, n]

    def run(gm, noise, nfe, option):
        n = most_steps(lambda k: nfe_of(option, k), nfe, fewest=1 if option.startswith("flow shift") else 2)
        sigmas = grids[option](n)
        out = fastdiff.sample(FlowDenoiser(gm.flow_velocity), noise, sigmas, name, seed=SEED_SAMPLER)
        return out, nfe_of(option, n)

    stochastic = bool(getattr(make_solver(name), "stochastic", False))
    return Sampler(name, "fastdiff", stochastic, tuple(grids), run)


def diffusers_schedulers() -> dict[str, tuple[object, bool]]:
    """label -> (shift -> scheduler, stochastic), each configured as its flow pipelines do."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        FlowMatchHeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    flow = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
    SDE_DPM = "sde-dpmsolver++"  # noqa: N806
    return {
        "FlowMatchEuler": (lambda s: FlowMatchEulerDiscreteScheduler(shift=s), False),
        "FlowMatchEuler stochastic": (lambda s: FlowMatchEulerDiscreteScheduler(shift=s, stochastic_sampling=True), True),
        "FlowMatchHeun": (lambda s: FlowMatchHeunDiscreteScheduler(shift=s), False),
        "DPM++ 2M (flow)": (lambda s: DPMSolverMultistepScheduler(flow_shift=s, **flow), False),
        "DPM++ 2M SDE (flow)": (lambda s: DPMSolverMultistepScheduler(flow_shift=s, algorithm_type=SDE_DPM, **flow), True),
        "UniPC bh2 (flow)": (lambda s: UniPCMultistepScheduler(flow_shift=s, **flow), False),
    }


def diffusers_sampler(label: str, make, stochastic: bool) -> Sampler:
    options = tuple(f"shift {s:g}" for s in SHIFTS)

    def scheduler(option: str, steps: int):
        sch = make(float(option.split()[1]))
        sch.set_timesteps(steps)
        return sch

    def run(gm, noise, nfe, option):
        steps = most_steps(lambda k: len(scheduler(option, k).timesteps), nfe)
        sch = scheduler(option, steps)
        takes_generator = "generator" in inspect.signature(sch.step).parameters
        extra = {"generator": torch.Generator().manual_seed(SEED_SAMPLER)} if takes_generator else {}
        x = noise.clone()
        for i, timestep in enumerate(sch.timesteps):
            t = torch.full((x.shape[0],), float(sch.sigmas[i]), dtype=F64)
            x = sch.step(gm.flow_velocity(x, t), timestep, x, **extra).prev_sample
        return x, len(sch.timesteps)

    return Sampler(label, "diffusers", stochastic, options, run)


def samplers() -> list[Sampler]:
    rows = [fastdiff_sampler(name) for name in fastdiff.SOLVERS]
    return rows + [diffusers_sampler(label, make, stoch) for label, (make, stoch) in diffusers_schedulers().items()]


# ----------------------------------------------------------------- measurement
@dataclass
class Target:
    name: str
    gm: GaussianMixture
    noise: torch.Tensor
    mmd: MMD
    ode_exact: torch.Tensor
    noise_level: float  # sqrt(2 std) of MMD^2 over 4 draws of exact samples: MMD below it is not resolved


def make_target(name: str, n: int, mmd_points: int) -> Target:
    gm = TARGETS[name]()
    noise = torch.randn(n, gm.dim, generator=torch.Generator().manual_seed(SEED_START), dtype=F64)
    mmd = MMD(gm, mmd_points)
    exact = gm.flow_ode_solution(noise[:ODE_POINTS], 1.0, 0.0, steps=ODE_STEPS)
    null = torch.tensor([mmd.squared(gm.sample(mmd_points, torch.Generator().manual_seed(SEED_EXACT + i))) for i in range(4)])
    return Target(name, gm, noise, mmd, exact, math.sqrt(2 * null.std().item()))


def measure(sampler: Sampler, target: Target, option: str, nfes) -> dict[int, tuple[int, float, float]]:
    """nfe -> (nfe used, MMD, ODE RMSE or nan)."""
    out = {}
    for nfe in nfes:
        x, used = sampler.run(target.gm, target.noise, nfe, option)
        ode = math.nan if sampler.stochastic else ode_rmse(x, target.ode_exact)
        out[nfe] = (used, target.mmd(x), ode)
    return out


def tune_score(sampler: Sampler, results, noise_level: float) -> float:
    column = 1 if sampler.stochastic else 2
    picked = [math.log(max(r[column], noise_level)) for nfe, r in results.items() if nfe >= TUNE_FROM_NFE]
    return sum(picked) / len(picked) if all(math.isfinite(v) for v in picked) else math.inf


def tune(rows, target: Target, nfes) -> dict[str, str]:
    chosen = {}
    for sampler in rows:
        scores = {}
        for option in sampler.options:
            try:
                scores[option] = tune_score(sampler, measure(sampler, target, option, nfes), target.noise_level)
            except Exception as err:  # a grid a solver refuses counts as a failed option
                print(f"  {sampler.label} / {option}: {type(err).__name__}: {err}")
                scores[option] = math.inf
        chosen[sampler.label] = min(scores, key=scores.get)
        print(f"  tuned {sampler.label}: {chosen[sampler.label]} (score {scores[chosen[sampler.label]]:.3f})", flush=True)
    return chosen


# ----------------------------------------------------------------- report
def fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.2e}"


def table(rows, chosen, results, nfes, column: int, title: str) -> list[str]:
    lines = [f"| {title} | tuned choice | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 2) + "|"]
    for s in rows:
        if column == 2 and s.stochastic:
            continue
        r = results[s.label]
        cells = [fmt(r[n][column]) + ("" if r[n][0] == n else f" ({r[n][0]})") for n in nfes]
        kind = "SDE" if s.stochastic else "ODE"
        lines.append(f"| {s.library} {s.label} ({kind}) | {chosen[s.label]} | " + " | ".join(cells) + " |")
    return lines


def best(rows, results, nfe: int, library: str, stochastic: bool | None, column: int = 1) -> tuple[str, float]:
    pool = [s for s in rows if s.library == library and (stochastic is None or s.stochastic == stochastic)]
    label = min(pool, key=lambda s: results[s.label][nfe][column]).label
    return label, results[label][nfe][column]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def verdict(rows, results, nfes, noise_level: float) -> list[str]:
    """Best fastdiff deterministic / stochastic sampler against the best diffusers scheduler by MMD at each NFE;
    "~" marks a value below the noise level (not resolved)."""
    head = "| NFE | best diffusers | best fastdiff ODE | ratio | best fastdiff SDE | ratio |"
    lines = [head, "|---" * 6 + "|"]

    def cell(label: str, v: float) -> str:
        return f"{label} {fmt(v)}" + (" ~" if v < noise_level else "")

    for n in nfes:
        d_label, d = best(rows, results, n, "diffusers", None)
        o_label, o = best(rows, results, n, "fastdiff", False)
        s_label, sde = best(rows, results, n, "fastdiff", True)
        row = [str(n), cell(d_label, d), cell(o_label, o), ratio(o, d), cell(s_label, sde), ratio(sde, d)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ode_verdict(rows, results, nfes) -> list[str]:
    """Best deterministic sampler of each library by the RMS distance to the exact ODE map."""
    lines = ["| NFE | best diffusers ODE | best fastdiff ODE | ratio |", "|---" * 4 + "|"]
    for n in nfes:
        d_label, d = best(rows, results, n, "diffusers", False, column=2)
        o_label, o = best(rows, results, n, "fastdiff", False, column=2)
        lines.append(f"| {n} | {d_label} {fmt(d)} | {o_label} {fmt(o)} | {ratio(o, d)} |")
    return lines


def plot(rows, all_results, targets, nfes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(targets), 2, figsize=(12, 4.6 * len(targets)), squeeze=False)
    for r, target in enumerate(targets):
        results = all_results[target.name]
        for c, (column, ylabel) in enumerate(((1, "MMD to the exact law"), (2, "RMS distance to the exact ODE map"))):
            ax = axes[r][c]
            for s in rows:
                if column == 2 and s.stochastic:
                    continue
                ys = [max(results[s.label][n][column], 1e-4) for n in nfes]
                style = "-" if s.library == "fastdiff" else "--"
                ax.plot(nfes, ys, style, marker="o" if s.library == "fastdiff" else "s", ms=3, lw=1.2,
                        label=f"{s.library} {s.label}")
            if column == 1:
                ax.axhline(target.noise_level, color="k", lw=0.8, ls=":", label="MMD noise level (exact samples)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(nfes, [str(n) for n in nfes])
            ax.set_xlabel("NFE")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{target.name}" + (" (tuned here)" if target.name == TUNE_ON else " (held out)"))
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    parser.add_argument("--samples", type=int, default=16384, help="samples per run")
    parser.add_argument("--mmd-points", type=int, default=4096, help="samples per run entering the MMD")
    parser.add_argument("--tune-samples", type=int, default=2048, help="samples per tuning run on ring_2d (all enter the MMD)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("flow_quality.png")))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the numbers do not depend on the machine's other load
    start = time.perf_counter()
    rows = samplers()
    print(f"# torch {torch.__version__}, Python {platform.python_version()}, {torch.get_num_threads()} threads")

    print(f"tuning on {TUNE_ON} with {args.tune_samples} samples", flush=True)
    chosen = tune(rows, make_target(TUNE_ON, args.tune_samples, args.tune_samples), args.nfe)
    print(f"tuned in {time.perf_counter() - start:.0f} s", flush=True)

    targets = [make_target(name, args.samples, args.mmd_points) for name in TARGETS]
    all_results = {}
    for target in targets:
        all_results[target.name] = {s.label: measure(s, target, chosen[s.label], args.nfe) for s in rows}
        res = all_results[target.name]
        print(f"\n## {target.name} ({target.gm.dim}-D, {target.gm.n_components} components; {args.samples} samples, "
              f"{args.mmd_points} in the MMD, MMD noise level {target.noise_level:.1e})\n")
        print("\n".join(table(rows, chosen, res, args.nfe, 1, "MMD")) + "\n")
        print("\n".join(table(rows, chosen, res, args.nfe, 2, "ODE RMSE")) + "\n")
        print("\n".join(verdict(rows, res, args.nfe, target.noise_level)) + "\n")
        print("\n".join(ode_verdict(rows, res, args.nfe)), flush=True)
    plot(rows, all_results, targets, args.nfe, args.out)
    print(f"\nwrote {args.out}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
