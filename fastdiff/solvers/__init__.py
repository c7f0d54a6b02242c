"""Step rules by name. `SOLVERS[name]` is the solver class; `make_solver` validates options."""

from __future__ import annotations

import inspect

from fastdiff.solvers.base import Evaluation, Solver, StepContext, StepOutput
from fastdiff.solvers.deis import DEIS
from fastdiff.solvers.dpm_solver import DPMSolver
from fastdiff.solvers.dpmpp_2m import DPMpp2M
from fastdiff.solvers.dpmpp_2m_sde import DPMpp2MSDE
from fastdiff.solvers.dpmpp_3m import DPMpp3M
from fastdiff.solvers.dpmpp_3m_sde import DPMpp3MSDE
from fastdiff.solvers.er_sde import ERSDE
from fastdiff.solvers.euler import Euler
from fastdiff.solvers.euler_ancestral import EulerAncestral
from fastdiff.solvers.euler_maruyama import EulerMaruyama
from fastdiff.solvers.gradient_estimation import GradientEstimation
from fastdiff.solvers.heun import Heun
from fastdiff.solvers.ipndm import IPNDM
from fastdiff.solvers.ipndm_v import IPNDMV
from fastdiff.solvers.lms import LMS
from fastdiff.solvers.res_multistep import ResMultistep, ResMultistepAncestral
from fastdiff.solvers.sa_solver import SASolver, SASolverPECE
from fastdiff.solvers.seeds import SEEDS2, SEEDS3
from fastdiff.solvers.srk import SRK
from fastdiff.solvers.srk_dp import SRKData
from fastdiff.solvers.srk_exp_em import ExpEM
from fastdiff.solvers.srk_score import SRKScore
from fastdiff.solvers.unipc import UniPC

SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (
        Euler,
        Heun,
        DPMpp2M,
        IPNDM,
        IPNDMV,
        UniPC,
        DPMpp3M,
        LMS,
        GradientEstimation,
        DEIS,
        EulerAncestral,
        EulerMaruyama,
        DPMpp2MSDE,
        DPMpp3MSDE,
        SRK,
        SRKScore,
        SRKData,
        ExpEM,
        ERSDE,
        SEEDS2,
        SEEDS3,
        ResMultistep,
        ResMultistepAncestral,
        SASolver,
        SASolverPECE,
        DPMSolver,
    )
}


def make_solver(name: str, **options) -> Solver:
    """A fresh step rule `name` with `options`; unknown names or options raise, naming them."""
    if not isinstance(name, str):
        raise TypeError(f"solver must be a solver name (str), got {type(name).__name__}")
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(sorted(SOLVERS))}")
    cls = SOLVERS[name]
    accepted = {} if cls.__init__ is object.__init__ else inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = [p for p in accepted if p != "self"]
        raise TypeError(f"solver {name!r} got unknown option(s) {unknown}; it accepts {allowed}")
    return cls(**options)


__all__ = ["SOLVERS", "Evaluation", "Solver", "StepContext", "StepOutput", "make_solver"]
