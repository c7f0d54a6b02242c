"""float16 / bfloat16 samples: every solver on karras, logsnr and time_uniform grids from 4 to 100 steps gives finite
outputs close to the float32 run from the same (rounded) noise, on an exact mixture and on a network that computes in
its input's dtype. The state is float32 whatever the model's dtype; the model sees and returns its own dtype.

Tolerance: the median over samples of |x_half - x_float32| / (|x_float32| + 1) is at most 10 eps of the dtype. Heun is
the exception by construction: its correction weights the model output at sigma' by (sigma - sigma') / (2 sigma'),
so a step with a large ratio sigma / sigma' amplifies the rounding of a low-precision model output by that factor;
DPM-Solver++(3M) extrapolates differences of three outputs, which amplifies it by its weights' absolute sum.
"""

import pytest
import torch

import fastdiff
from fastdiff.toy import GaussianMixture

EPS = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
GRIDS = ["karras", "logsnr", "time_uniform"]
STEPS = [1, 4, 5, 8, 10, 20, 50, 100]
MIXTURE = GaussianMixture.ring(k=8, radius=4.0, std=0.3)


def low_precision_net(x, sigma):
    """A denoiser that computes in its input's dtype, as a float16 / bfloat16 network does."""
    s = sigma.to(x.dtype)[:, None]
    return torch.tanh(x / (1 + s * s) * 3.0) * 4.0


MODELS = {"mixture": MIXTURE.denoiser, "network": low_precision_net}


def amplification(solver: str, sigmas: list[float]) -> float:
    """How much the solver's update can enlarge an error of the model output (1 for the bounded ones)."""
    if solver == "dpmpp_3m":
        return multistep_amplification(sigmas)
    if solver != "heun":
        return 1.0
    return max([1.0] + [s / (2 * s_next) for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True) if s_next > 0])


def multistep_amplification(sigmas: list[float]) -> float:
    """DPM-Solver++(3M)'s update is x' = (sigma'/sigma) x + sum_j b_j D_j over three model outputs whose differences it
    extrapolates: a rounding error of the outputs grows by sum |b_j| / |sum b_j| (read off the solver's own calls)."""
    from fastdiff.solvers import dpmpp_3m

    ratios = []

    def record(x, ks, a, bs, backend="auto"):
        ratios.append(sum(abs(b) for b in bs) / abs(sum(bs)))
        return x

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dpmpp_3m, "solver_step", record)
        fastdiff.sample(lambda x, s: x, torch.zeros(1, 1), sigmas, "dpmpp_3m")
    return max([1.0, *ratios])


@pytest.mark.parametrize("solver", fastdiff.SOLVERS)
@pytest.mark.parametrize("model", MODELS)
def test_half_precision_is_finite_and_close_to_float32(solver, model):
    denoiser = MODELS[model]
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    failures = []
    for grid in GRIDS:
        for n in STEPS:
            sigmas = fastdiff.get_sigmas(grid, n, 0.002, 80.0)
            for dtype, eps in EPS.items():
                x = (noise * 80.0).to(dtype)
                out = fastdiff.sample(denoiser, x, sigmas, solver, seed=0)
                assert out.dtype == dtype and torch.isfinite(out).all(), f"{grid} n={n} {dtype}: not finite"
                ref = fastdiff.sample(denoiser, x.float(), sigmas, solver, seed=0)
                error = float(((out.float() - ref).norm(dim=1) / (ref.norm(dim=1) + 1)).median())
                if error > 10 * eps * amplification(solver, sigmas.tolist()):
                    failures.append(f"{grid} n={n} {dtype}: {error / eps:.1f} eps")
    assert not failures, failures
