"""Which solver and grid to use at a budget of network evaluations: the measured winners of bench/SHOOTOUT.md.

`recommend(nfe, stochastic=True, flow=False)` returns the fastdiff solver, grid kind and coordinates with the lowest
error at that NFE on the shootout's held-out targets (exact Gaussians and Gaussian mixtures in 8-D and, as flow
models, 1-D to 8-D; VE on Karras and log-SNR grids 80 -> 0.002, flow models on the shift-3 flow grid and on the
log-SNR grid after sigma = inf; geometric mean of each candidate's error over the best fastdiff error per target).
`tests/test_recommend.py` checks every entry against `bench/results/shootout.json`. For a flow model the grid is
`get_sigmas("flow", n, shift=...)` for grid "flow", else `get_sigmas(grid, n, 0.002, 80.0, from_infinity=True)`;
`flow_time=True` runs the solver in flow-time coordinates (`fastdiff.models.FlowTimeDenoiser` on the grid in t,
`fastdiff.flow_time.sigma_to_flow_t(sigmas)`, starting from x = the unit noise).

    choice = fastdiff.recommend.recommend(16)                  # Recommendation(solver='srk', grid='logsnr', ...)
    sigmas = fastdiff.get_sigmas(choice.grid, 16, 0.002, 80.0)
    x = fastdiff.sample(denoiser, x, sigmas, choice.solver, seed=0)
"""

from __future__ import annotations

from typing import NamedTuple

from fastdiff.validation import check_flag, check_positive_int


class Recommendation(NamedTuple):
    solver: str
    grid: str
    flow_time: bool = False  # a flow model in its own coordinates (x_t, t): FlowTimeDenoiser


R = Recommendation
# (family, kind) -> [(from NFE, choice)], each entry used from its NFE up to the next entry's.
TABLE: dict[tuple[str, str], list[tuple[int, Recommendation]]] = {
    ("ve", "sde"): [(1, R("dpmpp_3m_sde", "logsnr")), (6, R("srk", "logsnr"))],
    ("ve", "ode"): [
        (1, R("gradient_estimation", "logsnr")),
        (8, R("ipndm", "logsnr")),
        (12, R("ipndm_v", "karras")),
        (16, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
    ("flow", "sde"): [
        (1, R("dpmpp_3m_sde", "logsnr")),
        (6, R("srk", "logsnr")),
        (8, R("seeds_3", "flow")),
        (10, R("srk", "logsnr")),
    ],
    ("flow", "ode"): [
        (1, R("ipndm_v", "logsnr", flow_time=True)),
        (6, R("gradient_estimation", "logsnr")),
        (8, R("dpmpp_2m", "logsnr")),
        (10, R("ipndm", "flow")),
        (12, R("ipndm", "flow", flow_time=True)),
        (16, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
}


def recommend(nfe: int, stochastic: bool = True, flow: bool = False) -> Recommendation:
    """The measured best fastdiff (solver, grid kind, flow_time) for `nfe` network evaluations; `stochastic`: an SDE
    sampler (else an ODE one); `flow`: a flow-matching model (the module docstring says how to build its grid)."""
    nfe = check_positive_int(nfe, "nfe")
    key = ("flow" if check_flag(flow, "flow") else "ve", "sde" if check_flag(stochastic, "stochastic") else "ode")
    return [choice for start, choice in TABLE[key] if start <= nfe][-1]
