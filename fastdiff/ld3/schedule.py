"""`LearnedSchedule`: a learned grid with its decoupled model times, what it was learned for, and its JSON file.

A schedule is tied to (solver, solver options, NFE) and to the sigma range. It is validated when built and when
loaded: finite, strictly decreasing sigmas from sigma_max to sigma_min (then 0 when `to_zero`), model times of the
same length, positive, strictly decreasing and equal to the grid at the endpoints. A broken schedule is never
built, so it is never saved.

JSON (version 1): {"format": "fastdiff.ld3.schedule", "version": 1, "solver", "solver_options", "order", "nfe",
"steps", "evaluations", "sigma_min", "sigma_max", "to_zero", "decoupled", "sigmas", "model_sigmas",
"loss_history": {"train": [...], "val": [...]}, "teacher", "config", "created"}. The "sigmas" key is what other
tools read (e.g. the diffusers schedulers' `sigmas_file`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from fastdiff.ld3.model_time import Evaluate, ModelTimes
from fastdiff.ld3.solvers import resolve_solver

FORMAT = "fastdiff.ld3.schedule"
VERSION = 1
_ENDPOINT_RTOL = 1e-12


@dataclass(frozen=True)
class LearnedSchedule:
    """A learned grid. `.sigmas` / `.model_sigmas` are float64 CPU tensors; pass the schedule itself as `sigmas` to
    `fastdiff.sample` (or a `fastdiff.sampling` function) with its solver to sample with both (it is a
    `fastdiff.driver.Schedule`). `solver_options` holds the options that differ from the solver's defaults."""

    solver: str
    solver_options: dict
    nfe: int
    steps: int
    evaluations: int
    sigma_min: float
    sigma_max: float
    to_zero: bool
    decoupled: bool
    sigma_list: tuple[float, ...]
    model_sigma_list: tuple[float, ...]
    order: int | None = None
    loss_history: dict = field(default_factory=dict)
    teacher: str = ""
    config: dict = field(default_factory=dict)
    created: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "sigma_list", tuple(float(s) for s in self.sigma_list))
        object.__setattr__(self, "model_sigma_list", tuple(float(s) for s in self.model_sigma_list))
        self.validate()

    @property
    def sigmas(self) -> torch.Tensor:
        return torch.tensor(self.sigma_list, dtype=torch.float64)

    @property
    def model_sigmas(self) -> torch.Tensor:
        return torch.tensor(self.model_sigma_list, dtype=torch.float64)

    def model_times(self) -> ModelTimes:
        return ModelTimes(self.sigma_list, self.model_sigma_list)

    def solver_grid(self) -> list[float]:
        """The grid as host floats (the driver's `Schedule`)."""
        return list(self.sigma_list)

    def at_model_times(self, evaluate: Evaluate) -> Evaluate:
        """`evaluate(x, sigma)` answered at the model time of sigma (the driver's `Schedule`)."""
        return self.model_times().wrap(evaluate)

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ValueError, naming the field, unless this is a usable schedule."""
        if not isinstance(self.solver_options, dict):
            raise ValueError(f"solver_options must be a dict, got {type(self.solver_options).__name__}")
        resolve_solver(self.solver, self.solver_options)  # a known solver that can learn a grid, with valid options
        for name in ("nfe", "steps", "evaluations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"schedule {name} must be an int >= 1, got {value!r}")
        if self.evaluations > self.nfe:
            raise ValueError(f"schedule uses {self.evaluations} evaluations, more than its nfe={self.nfe}")
        if not (math.isfinite(self.sigma_min) and math.isfinite(self.sigma_max) and 0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"sigma range must satisfy 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        s, m = self.sigma_list, self.model_sigma_list
        levels = self.steps + 1
        if len(s) != levels:
            raise ValueError(f"sigmas must have steps + 1 = {levels} entries, got {len(s)}")
        if len(m) != len(s):
            raise ValueError(f"model_sigmas must have as many entries as sigmas ({len(s)}), got {len(m)}")
        for name, grid in (("sigmas", s), ("model_sigmas", m)):
            if not all(math.isfinite(v) for v in grid):
                raise ValueError(f"{name} contains NaN or Inf")
            if not all(b < a for a, b in zip(grid[:-1], grid[1:], strict=True)):
                raise ValueError(f"{name} must be strictly decreasing, got {list(grid)}")
        positive = s[:-1] if self.to_zero else s
        if self.to_zero and s[-1] != 0.0:
            raise ValueError(f"a to_zero schedule must end with 0, got {s[-1]}")
        if min(positive) <= 0:
            raise ValueError("sigmas must be positive down to sigma_min")
        for name, got, want in (
            ("first sigma", positive[0], self.sigma_max),
            ("last positive sigma", positive[-1], self.sigma_min),
        ):
            if not math.isclose(got, want, rel_tol=_ENDPOINT_RTOL, abs_tol=0.0):
                raise ValueError(f"{name} must equal the sigma range endpoint {want}, got {got}")
        ends = [0, len(positive) - 1] + ([len(s) - 1] if self.to_zero else [])
        if any(m[j] != s[j] for j in ends):
            raise ValueError("model_sigmas must equal sigmas at the endpoints (the endpoints are not decoupled)")

    def check_solver(self, solver: str, options: dict) -> None:
        """Raise ValueError unless `solver` with `options` is what this schedule was learned for."""
        if solver != self.solver:
            raise ValueError(
                f"this schedule was learned for solver {self.solver!r} (NFE {self.nfe}), got solver={solver!r}; "
                f"learn one for {solver!r}, or pass schedule.sigmas to use the bare grid anyway"
            )
        if resolve_solver(solver, options) != resolve_solver(self.solver, self.solver_options):
            raise ValueError(
                f"this schedule was learned for {solver!r} with options {self.solver_options or 'defaults'}, got {options}"
            )

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "solver": self.solver,
            "solver_options": self.solver_options,
            "order": self.order,
            "nfe": self.nfe,
            "steps": self.steps,
            "evaluations": self.evaluations,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "to_zero": self.to_zero,
            "decoupled": self.decoupled,
            "sigmas": list(self.sigma_list),
            "model_sigmas": list(self.model_sigma_list),
            "loss_history": self.loss_history,
            "teacher": self.teacher,
            "config": self.config,
            "created": self.created,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the schedule as JSON (floats round-trip exactly), after validating it once more; atomically."""
        self.validate()
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        temporary = f"{os.fspath(path)}.tmp"
        try:  # written aside, then renamed: a failed write leaves any previous file intact
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    @classmethod
    def from_dict(cls, data: object, source: str = "schedule") -> LearnedSchedule:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a fastdiff LD3 schedule (expected a JSON object with format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"{source} has schedule version {data.get('version')!r}; this fastdiff reads version {VERSION}")
        required = (
            "solver",
            "solver_options",
            "nfe",
            "steps",
            "evaluations",
            "sigma_min",
            "sigma_max",
            "to_zero",
            "decoupled",
            "sigmas",
            "model_sigmas",
        )
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {missing}")
        for key in ("sigmas", "model_sigmas"):
            if not isinstance(data[key], list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in data[key]
            ):
                raise ValueError(f"{source}: {key} must be a list of numbers")
        try:
            return cls(
                solver=data["solver"],
                solver_options=data["solver_options"],
                nfe=data["nfe"],
                steps=data["steps"],
                evaluations=data["evaluations"],
                sigma_min=float(data["sigma_min"]),
                sigma_max=float(data["sigma_max"]),
                to_zero=bool(data["to_zero"]),
                decoupled=bool(data["decoupled"]),
                sigma_list=tuple(data["sigmas"]),
                model_sigma_list=tuple(data["model_sigmas"]),
                order=data.get("order"),
                loss_history=data.get("loss_history", {}),
                teacher=data.get("teacher", ""),
                config=data.get("config", {}),
                created=data.get("created", {}),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source} is not a valid schedule: {err}") from err

    @classmethod
    def load(cls, path: str | os.PathLike) -> LearnedSchedule:
        """Read and validate a schedule written by `save`; raises ValueError saying what is wrong."""
        with open(path, encoding="utf-8") as f:
            try:
                data = json.loads(f.read(), parse_constant=lambda c: float("nan"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{os.fspath(path)!r} is not valid JSON: {err}") from err
        return cls.from_dict(data, repr(os.fspath(path)))
