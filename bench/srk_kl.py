"""Regenerate the SRK quality tables of bench/SRK.md: output law of every stochastic sampler against its target, at equal
numbers of network evaluations (NFE), on the Karras (rho = 7) and logsnr grids from 80 to 0.002.

- 1-D N(1.5, 0.25^2) and a 16-D Gaussian (eigenvalues 0.01 .. 1, random rotation): exact KL(output || target) from
  `fastdiff.gaussian_law.exact_output_law` (no Monte Carlo noise);
- a 2-D three-component Gaussian mixture (`fastdiff.toy.GaussianMixture`): Monte Carlo with N samples, the NLL gap
  E_q[-log p] - H(p) (not a divergence: over-concentrated samples make it negative) and KL(q || p) estimated as
  E_q[-log p] - H_kNN(q), the nearest-neighbour entropy bias removed by the same estimate on N exact samples;
- the stage fraction at which srk's leading h^2 variance error changes sign (the origin of its default theta).

Two-evaluation samplers (srk_dp, srk_score) run NFE/2 steps, which costs NFE - 1 evaluations (the step to 0 is one
evaluation). Peers are k-diffusion's own functions, loaded as in tests/kdiffusion_loader.py, fed the same noise.

    python bench/srk_kl.py [--nfe 8 16 32 64 128] [--mixture-samples 262144] [--no-mixture]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import sys
import time

import torch

import fastdiff
from fastdiff.gaussian_law import exact_output_law, gaussian_kl
from fastdiff.toy import GaussianMixture

GRIDS = ("karras", "logsnr")
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def fastdiff_sampler(name: str, **options):
    def run(model, x, sigmas, noise_sampler=None):
        return fastdiff.sample(model, x, sigmas, name, noise_sampler=noise_sampler, **options)

    return run


def kdiffusion_sampler(fn, **options):
    def run(model, x, sigmas, noise_sampler=None):
        return fn(model, x, sigmas, noise_sampler=noise_sampler, disable=True, **options)

    return run


def samplers() -> list[tuple[str, object, int]]:
    """(label, k-diffusion-style function, evaluations per step)."""
    rows = [
        ("srk (fastdiff default)", fastdiff_sampler("srk"), 1),
        ("srk, coupled=False (ablation)", fastdiff_sampler("srk", coupled=False), 1),
        ("srk_dp", fastdiff_sampler("srk_dp"), 2),
        ("srk_score", fastdiff_sampler("srk_score"), 2),
        ("exp_em", fastdiff_sampler("exp_em"), 1),
        ("euler_maruyama", fastdiff_sampler("euler_maruyama"), 1),
    ]
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
    import pytest
    from kdiffusion_loader import load_kdiffusion_sampling

    try:
        K = load_kdiffusion_sampling()
    except pytest.skip.Exception as why:
        print(f"k-diffusion peers left out: {why}", file=sys.stderr)
        return rows
    return rows + [
        ("k-diff euler_ancestral", kdiffusion_sampler(K.sample_euler_ancestral), 1),
        ("k-diff dpmpp_2m_sde (midpoint)", kdiffusion_sampler(K.sample_dpmpp_2m_sde), 1),
        ("k-diff dpmpp_2m_sde (heun)", kdiffusion_sampler(K.sample_dpmpp_2m_sde, solver_type="heun"), 1),
        ("k-diff dpmpp_3m_sde", kdiffusion_sampler(K.sample_dpmpp_3m_sde), 1),
    ]


def grid(kind: str, nfe: int, per_step: int) -> torch.Tensor:
    return fastdiff.get_sigmas(kind, nfe // per_step, SIGMA_MIN, SIGMA_MAX)


def gaussian_16d() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    lam = torch.logspace(-2, 0, 16, dtype=torch.float64)
    return torch.randn(16, generator=g, dtype=torch.float64), q @ torch.diag(lam) @ q.T


def mixture() -> GaussianMixture:
    return GaussianMixture(
        means=[[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]],
        covs=[[[0.5, 0.2], [0.2, 0.3]], [[0.1, 0.0], [0.0, 0.6]], [[0.2, -0.1], [-0.1, 0.15]]],
        weights=[0.5, 0.3, 0.2],
    )


def exact_table(title: str, mean: torch.Tensor, cov: torch.Tensor, rows, nfes) -> str:
    lines = [f"### {title}: exact KL(output || target)", "", "| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    for label, fn, per in rows:
        for kind in GRIDS:
            cells = []
            for nfe in nfes:
                try:
                    m, S = exact_output_law(fn, mean, cov, grid(kind, nfe, per))
                    cells.append(f"{gaussian_kl(m, S, mean, cov):.2e}")
                except ValueError:
                    cells.append("diverged")
            lines.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def knn_entropy(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Kozachenko-Leonenko (k = 1) entropy in 2-D: per-sample terms whose mean is H, and the constant."""
    from scipy.spatial import cKDTree

    points = x.numpy()
    dist, _ = cKDTree(points).query(points, k=2)
    r = torch.as_tensor(dist[:, 1], dtype=torch.float64).clamp_min(1e-300)
    n = x.shape[0]
    euler_gamma = 0.5772156649015329
    return 2.0 * torch.log(r), math.log(math.pi) + math.log(n - 1) + euler_gamma


def mixture_table(rows, nfes, n: int) -> str:
    gm = mixture()
    exact = gm.sample(n, generator=torch.Generator().manual_seed(1))
    big = gm.sample(1 << 22, generator=torch.Generator().manual_seed(2))
    entropy = float(-gm.log_prob(big).mean())
    terms, const = knn_entropy(exact)
    knn_bias = float(terms.mean()) + const - entropy

    def knn_kl(out: torch.Tensor) -> tuple[float, float]:
        nll = float(-gm.log_prob(out).mean())
        return nll, nll - (float(knn_entropy(out)[0].mean()) + const - knn_bias)

    control = knn_kl(gm.sample(n, generator=torch.Generator().manual_seed(5)))
    lines = [f"### 2-D mixture, {n} samples per cell: NLL gap E_q[-log p] - H(p) / KL(q||p) (kNN)", "",
             f"H(p) = {entropy:.4f}; kNN entropy bias at this N, removed from every KL: {knn_bias:+.4f}; "
             f"standard error of the NLL gap {float((-gm.log_prob(exact)).std()) / math.sqrt(n):.0e}; "
             f"a second set of exact samples scores {control[0] - entropy:+.3f} / {control[1]:.3f}", "",
             "| sampler | grid | " + " | ".join(f"NFE {m}" for m in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for label, fn, per in rows:
        for kind in GRIDS:
            cells = []
            for nfe in nfes:
                gen = torch.Generator().manual_seed(3)
                x = torch.randn(n, 2, generator=gen, dtype=torch.float64) * SIGMA_MAX
                noise = torch.Generator().manual_seed(4)
                out = fn(gm.denoiser, x, grid(kind, nfe, per),
                         noise_sampler=lambda s, t, g=noise: torch.randn(n, 2, generator=g, dtype=torch.float64))
                if not bool(torch.isfinite(out).all()):
                    cells.append("diverged")
                    continue
                nll, kl = knn_kl(out)
                cells.append(f"{nll - entropy:+.3f} / {kl:.3f}")
            lines.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def theta_sign_change(steps: int = 512) -> str:
    """Variance error of srk times steps^2 on N(0, 1), logsnr grid, at two fixed stage fractions; the final denoising
    step's own bias -sigma_min^2 (the same for every sampler) is removed first."""
    values = []
    for theta in (0.08, 0.09):
        sigmas = fastdiff.get_sigmas("logsnr", steps, SIGMA_MIN, SIGMA_MAX)
        _, S = exact_output_law(fastdiff_sampler("srk", theta=theta), [0.0], [[1.0]], sigmas)
        values.append((float(S[0, 0]) - 1.0 + SIGMA_MIN**2) * steps**2)
    a, b = values
    return (f"srk variance error x steps^2 at {steps} logsnr steps: {a:+.3f} (theta 0.08), {b:+.3f} (theta 0.09); "
            f"sign change at theta = {0.08 + 0.01 * a / (a - b):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--mixture-samples", type=int, default=1 << 18)
    parser.add_argument("--no-mixture", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    rows = samplers()
    print(f"fastdiff {fastdiff.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"float64, grids from {SIGMA_MAX} to {SIGMA_MIN}\n")
    print(exact_table("1-D N(1.5, 0.25^2)", torch.tensor([1.5], dtype=torch.float64),
                      torch.tensor([[0.0625]], dtype=torch.float64), rows, args.nfe), "\n", flush=True)
    print(exact_table("16-D Gaussian, eigenvalues 0.01 .. 1", *gaussian_16d(), rows, args.nfe), "\n", flush=True)
    print(theta_sign_change(), "\n", flush=True)
    if not args.no_mixture:
        print(mixture_table(rows, args.nfe, args.mixture_samples), "\n")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
