"""Which solver and grid to use at a budget of network evaluations: the measured winners of bench/SHOOTOUT.md.

`recommend(nfe, stochastic=True, flow=False)` returns the fastdiff solver and grid kind with the lowest error at that
NFE on the shootout's held-out targets (exact Gaussians and Gaussian mixtures in 8-D, VE on Karras and log-SNR grids
80 -> 0.002, flow models on the shift-3 flow grid; geometric mean of each candidate's error over the best fastdiff
error per target). `tests/test_recommend.py` checks every entry against `bench/results/shootout.json`.

    choice = fastdiff.recommend.recommend(16)                  # Recommendation(solver='srk', grid='logsnr')
    sigmas = fastdiff.get_sigmas(choice.grid, 16, 0.002, 80.0)
    x = fastdiff.sample(denoiser, x, sigmas, choice.solver, seed=0)
"""

from __future__ import annotations

from typing import NamedTuple

from fastdiff.validation import check_flag, check_positive_int


class Recommendation(NamedTuple):
    solver: str
    grid: str


# (family, kind) -> [(from NFE, solver, grid)], each entry used from its NFE up to the next entry's.
TABLE: dict[tuple[str, str], list[tuple[int, str, str]]] = {
    ("ve", "sde"): [(1, "dpmpp_3m_sde", "logsnr"), (6, "srk", "logsnr")],
    ("ve", "ode"): [
        (1, "gradient_estimation", "logsnr"),
        (8, "ipndm", "logsnr"),
        (12, "ipndm_v", "karras"),
        (16, "ipndm_v", "logsnr"),
        (24, "unipc", "logsnr"),
    ],
    ("flow", "sde"): [(1, "srk", "flow"), (6, "er_sde", "flow"), (8, "seeds_3", "flow"), (10, "er_sde", "flow")],
    ("flow", "ode"): [(1, "gradient_estimation", "flow"), (8, "ipndm", "flow"), (64, "lms", "flow")],
}


def recommend(nfe: int, stochastic: bool = True, flow: bool = False) -> Recommendation:
    """The measured best fastdiff (solver, grid kind) for `nfe` network evaluations; `stochastic`: an SDE sampler
    (else an ODE one); `flow`: a flow-matching model (grid kind "flow", `fastdiff.get_sigmas("flow", n, shift=...)`)."""
    nfe = check_positive_int(nfe, "nfe")
    key = ("flow" if check_flag(flow, "flow") else "ve", "sde" if check_flag(stochastic, "stochastic") else "ode")
    chosen = [(solver, grid) for start, solver, grid in TABLE[key] if start <= nfe][-1]
    return Recommendation(*chosen)
