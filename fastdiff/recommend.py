"""Which solver and grid to use at a budget of network evaluations: the measured winners of bench/SHOOTOUT.md.

`recommend(nfe, stochastic=True, flow=False, grid=None)` returns the fastdiff solver, grid kind and coordinates with the
lowest error at that NFE on the shootout's held-out targets (exact Gaussians and Gaussian mixtures in 8-D and, as flow
models, 1-D to 8-D; VE on Karras and log-SNR grids 80 -> 0.002, flow models on the shift-3 flow grid and on the
log-SNR grid after sigma = inf; geometric mean of each candidate's error over the best fastdiff error per target).
`grid` fixes the grid kind (a pipeline's own grid: "flow" for a flow model's shifted grid) and returns the best solver
on it. `bench/recommend_table.py` derives `TABLE` from `bench/results/shootout.json` and `tests/test_recommend.py`
checks every entry against it. For a flow model the grid is `get_sigmas("flow", n, shift=...)` for grid "flow", else
`get_sigmas(grid, n, 0.002, 80.0, from_infinity=True)`; `flow_time=True` runs the solver in flow-time coordinates
(`fastdiff.models.FlowTimeDenoiser` on the grid in t, `fastdiff.flow_time.sigma_to_flow_t(sigmas)`, starting from
x = the unit noise).

    choice = fastdiff.recommend.recommend(16)                  # Recommendation(solver='srk', grid='logsnr', ...)
    sigmas = fastdiff.get_sigmas(choice.grid, 16, 0.002, 80.0)
    x = fastdiff.sample(denoiser, x, sigmas, choice.solver, seed=0)
    recommend(16, flow=True, grid="flow").solver               # the best on a flow pipeline's shifted grid
"""

from __future__ import annotations

from typing import NamedTuple

from fastdiff.validation import check_flag, check_positive_int


class Recommendation(NamedTuple):
    solver: str
    grid: str
    flow_time: bool = False  # a flow model in its own coordinates (x_t, t): FlowTimeDenoiser


R = Recommendation
GRIDS = {"ve": ("karras", "logsnr"), "flow": ("flow", "logsnr")}  # the grid kinds measured per model family
# (family, kind, grid kind or None for any) -> [(from NFE, choice)], each entry used from its NFE up to the next
# entry's; printed by bench/recommend_table.py from bench/results/shootout.json.
TABLE: dict[tuple[str, str, str | None], list[tuple[int, Recommendation]]] = {
    ("ve", "sde", None): [
        (1, R("dpmpp_3m_sde", "logsnr")),
        (6, R("srk", "logsnr")),
    ],
    ("ve", "ode", None): [
        (1, R("gradient_estimation", "logsnr")),
        (8, R("ipndm", "logsnr")),
        (12, R("ipndm_v", "karras")),
        (16, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
    ("flow", "sde", None): [
        (1, R("dpmpp_3m_sde", "logsnr")),
        (6, R("sa_solver", "logsnr")),
        (8, R("seeds_3", "flow")),
        (10, R("srk", "logsnr")),
    ],
    ("flow", "ode", None): [
        (1, R("ipndm_v", "logsnr", flow_time=True)),
        (6, R("gradient_estimation", "logsnr")),
        (8, R("dpmpp_2m", "logsnr")),
        (10, R("ipndm", "flow")),
        (12, R("ipndm", "flow", flow_time=True)),
        (16, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
    ("flow", "sde", "flow"): [
        (1, R("dpmpp_2m_sde", "flow")),
        (6, R("er_sde", "flow")),
        (8, R("seeds_3", "flow")),
        (10, R("er_sde", "flow")),
    ],
    ("flow", "ode", "flow"): [
        (1, R("ipndm", "flow", flow_time=True)),
        (64, R("lms", "flow", flow_time=True)),
    ],
    ("ve", "sde", "karras"): [
        (1, R("seeds_3", "karras")),
        (6, R("er_sde", "karras")),
        (64, R("seeds_3", "karras")),
    ],
    ("ve", "ode", "karras"): [
        (1, R("unipc", "karras")),
        (6, R("gradient_estimation", "karras")),
        (8, R("deis", "karras")),
        (10, R("ipndm_v", "karras")),
        (24, R("dpmpp_3m", "karras")),
        (64, R("unipc", "karras")),
    ],
    ("ve", "sde", "logsnr"): [
        (1, R("dpmpp_3m_sde", "logsnr")),
        (6, R("srk", "logsnr")),
    ],
    ("ve", "ode", "logsnr"): [
        (1, R("gradient_estimation", "logsnr")),
        (8, R("ipndm", "logsnr")),
        (12, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
    ("flow", "sde", "logsnr"): [
        (1, R("dpmpp_3m_sde", "logsnr")),
        (6, R("sa_solver", "logsnr")),
        (8, R("srk", "logsnr")),
    ],
    ("flow", "ode", "logsnr"): [
        (1, R("ipndm_v", "logsnr", flow_time=True)),
        (6, R("gradient_estimation", "logsnr")),
        (8, R("dpmpp_2m", "logsnr")),
        (12, R("unipc", "logsnr")),
        (16, R("ipndm_v", "logsnr")),
        (24, R("unipc", "logsnr")),
    ],
}


def recommend(nfe: int, stochastic: bool = True, flow: bool = False, grid: str | None = None) -> Recommendation:
    """The measured best fastdiff (solver, grid kind, flow_time) for `nfe` network evaluations; `stochastic`: an SDE
    sampler (else an ODE one); `flow`: a flow-matching model (the module docstring says how to build its grid);
    `grid`: the grid kind the solver must use (one of GRIDS[family]), None to choose it too."""
    nfe = check_positive_int(nfe, "nfe")
    family = "flow" if check_flag(flow, "flow") else "ve"
    if grid is not None and grid not in GRIDS[family]:
        raise ValueError(f"grid must be None or one of {GRIDS[family]} for a {'flow' if flow else 'VE'} model, got {grid!r}")
    key = (family, "sde" if check_flag(stochastic, "stochastic") else "ode", grid)
    return [choice for start, choice in TABLE[key] if start <= nfe][-1]
