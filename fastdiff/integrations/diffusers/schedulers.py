"""fastdiff's solvers as diffusers schedulers: `pipe.scheduler = SRKScheduler.from_config(pipe.scheduler.config)`.

Each scheduler runs one step rule of `fastdiff.solvers` unchanged. It works in the pipeline's VP space, as
DPMSolverMultistepScheduler does (`init_noise_sigma = 1`, identity `scale_model_input`), so it is correct both in
pipelines that scale the initial noise and the model input (Stable Diffusion) and in those that do not (DDPMPipeline,
DDIMPipeline); it converts to fastdiff's VE form internally (`vp_table`).

A step rule is a generator of evaluation requests (`fastdiff.solvers.base`), walked by `fastdiff.stepping` as in
`fastdiff.sample`. `set_timesteps` builds the grid (`timestep_grids`) and lists the solver's evaluation sigmas by a dry
run (`stepping.evaluation_plan`); their fractional training timesteps are `timesteps`, one per network evaluation.
Every `step()` answers the pending request with the model output converted to D(x, sigma), advances the run
(`stepping.SolverRun`), and returns the point of the next request as `prev_sample`, where the pipeline evaluates the
model next. diffusers' `order` is the evaluations per step: a solver spending k evaluations per step has `order = k`
and k timesteps per step (diffusers' convention for `order > 1`: the progress bar advances once per step). Where a
pipeline changes the sample between calls (inpainting blends, step-end callbacks), D is taken at the changed sample,
where the model saw it, and a step whose first evaluation is pending starts again from it; inside a step (SRK's stage
evaluations) the step keeps its own state, as HeunDiscreteScheduler does.

Flow-matching models (SD3, Flux, Wan, ...: `flow_table`) are served too: a config with prediction_type
"flow_prediction", or FlowMatchEulerDiscreteScheduler's (`shift` and no betas), is a flow config (`config_keys`,
`is_flow_config`). The pipeline's sample is then x_t = (1 - t) x0 + t eps, the model's output the velocity v, its
timesteps the float N t (N = num_train_timesteps, one per evaluation), D = x_t - t v, and the solver's VE state
x_t / (1 - t); the grid starts at t = 1, sigma = inf, where the state is the pipeline's unit noise x_t itself and the
loop takes the first step (`fastdiff.stepping`). `set_timesteps(num_inference_steps, sigmas=base, mu=mu)` as
FluxPipeline and StableDiffusion3Pipeline call it: `sigmas` is the pipeline's unshifted base grid of t, `mu` the
dynamic shift (used with use_dynamic_shifting, ignored without it, as diffusers does); the grids are in
`timestep_grids` (`flow_grid`). `scale_noise` (img2img, inpainting) is x_t = (1 - t) x0 + t noise at the run's
pending evaluation (or `begin_index`) as diffusers computes it. The noise of a stochastic solver, without a generator
or `seed`, is keyed by each sample's own starting latent (`seeds.sample_keys`): flow pipelines pass no generator.

Config (`COMMON_CONFIG`), first diffusers' keys: the betas (`beta_schedule` linear / scaled_linear / squaredcos_cap_v2,
`trained_betas`, `rescale_betas_zero_snr`), `prediction_type` epsilon / v_prediction / sample, `variance_type` (with
learned / learned_range the first half of the model's channels is its prediction), `timestep_spacing`, `steps_offset`,
the flags `use_karras_sigmas`, `use_exponential_sigmas`, `use_lu_lambdas`, read as schedules, the limits on x0
`thresholding` / `clip_sample` (`thresholding`) and `final_sigmas_type` ("zero": the last step goes to 0; "sigma_min":
the run stops at the grid's lowest level). Every other key of a peer's config is refused by name, dropped where it only
belongs to the peer's own algorithm, or warned about when unknown: the table is in `config_keys`. diffusers' model
timesteps are integers (rounded or truncated where the grid's sigma lies between table entries); here the model sees
the exact fractional timestep of the sigma the solver uses. Then fastdiff's: `schedule`
("discrete", the default: the training timesteps of `timestep_spacing`, placed as DPMSolverMultistepScheduler places
them; "karras" with `rho`, "logsnr", "time_uniform", "time_quadratic" between `sigma_min` and `sigma_max`, by default
the training range; "learned" with `sigmas_file`; see `timestep_grids`), `backend` (of the fused solver step), `seed`
(noise of the stochastic solvers when no generator is passed, see `seeds`), `noise` ("counter", the default, or
"brownian": the same keys give one Brownian path per sample, so a run with another step count changes the image
gradually; `fastdiff.ops.brownian`), `check_finite` (default True: a model
output or sample with NaN or Inf raises `fastdiff.NonFiniteError` at the run's last step, naming the first step and
sigma where it appeared; the flags stay on the device and are read once per run). Last, the solver's own options under
the solver's own names and defaults (SRK's `theta`, ...).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin, SchedulerOutput

from fastdiff.backends import BACKENDS
from fastdiff.driver import NOISE_KINDS
from fastdiff.dtypes import working_dtype
from fastdiff.finite_watch import FiniteWatch
from fastdiff.flow_time import sigma_to_flow_t
from fastdiff.integrations.diffusers.config_keys import FLOW_PREDICTION, check_foreign_keys, is_flow_config
from fastdiff.integrations.diffusers.flow_table import FlowTable
from fastdiff.integrations.diffusers.seeds import run_noise
from fastdiff.integrations.diffusers.thresholding import X0Limit
from fastdiff.integrations.diffusers.timestep_grids import (
    SCHEDULES,
    TIMESTEP_SPACINGS,
    flow_grid,
    flow_grid_from_timesteps,
    grid_from_sigmas,
    grid_from_timesteps,
    load_sigmas_file,
    schedule_grid,
)
from fastdiff.integrations.diffusers.vp_table import PREDICTION_TYPES, VPTable, training_betas
from fastdiff.ld3.model_time import ModelTimes
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.solvers import SOLVERS, Solver, StepContext, make_solver
from fastdiff.stepping import EvaluationPlan, SolverRun, evaluation_plan
from fastdiff.validation import check_flag, check_number, check_positive_int

PUBLIC_MODULE = "fastdiff.integrations.diffusers"
# Config keys of every fastdiff scheduler: diffusers' (defaults as in DPMSolverMultistepScheduler), then fastdiff's.
COMMON_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "rescale_betas_zero_snr": False,
    "prediction_type": "epsilon",
    "variance_type": None,
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_lu_lambdas": False,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "shift_terminal": None,
    "time_shift_type": "exponential",
    "invert_sigmas": False,
    "stochastic_sampling": False,
    "use_flow_sigmas": False,
    "flow_shift": 1.0,
    "schedule": "discrete",
    "rho": 7.0,
    "sigma_min": None,
    "sigma_max": None,
    "sigmas_file": None,
    "backend": "auto",
    "seed": None,
    "noise": "counter",
    "check_finite": True,
}
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
TIME_SHIFT_TYPES = ("exponential", "linear")
# flow config keys (FlowMatchEulerDiscreteScheduler's defaults): a VP config must leave them there
_FLOW_KEYS = ("shift", "use_dynamic_shifting", "shift_terminal", "time_shift_type", "use_flow_sigmas", "flow_shift")
VARIANCE_TYPES = (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
# diffusers' schedule flags, read when schedule="discrete" (an explicit fastdiff schedule wins over them)
_SCHEDULE_FLAGS = {"use_karras_sigmas": "karras", "use_exponential_sigmas": "logsnr", "use_lu_lambdas": "logsnr"}
# solver option values of other diffusers schedulers' configs (UniPC, DEIS) that mean the default here
_OPTION_ALIASES = {"solver_type": {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}}
# every option name of every fastdiff solver: dropped by a scheduler whose solver does not take it
_SOLVER_OPTIONS = frozenset(
    name
    for rule in SOLVERS.values()
    if rule.__init__ is not object.__init__
    for name in inspect.signature(rule.__init__).parameters
    if name != "self"
)


# solver name -> scheduler class, filled as the scheduler classes below are defined (FastdiffScheduler.__init_subclass__)
SCHEDULERS: dict[str, type[FastdiffScheduler]] = {}


@dataclass
class FastdiffSchedulerOutput(SchedulerOutput):
    """`prev_sample`: where the pipeline evaluates the model next (the final sample after the last call);
    `pred_original_sample`: the denoised estimate D of this call's evaluation."""

    pred_original_sample: torch.Tensor | None = None


def _check_positive(value: object, name: str) -> float:
    if not check_number(value, name) > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _config_init(solver: str, extra: dict):
    """An `__init__` whose signature lists COMMON_CONFIG, the scheduler's `extra_config` and then the options of
    `solver` (its own names and defaults), wrapped by diffusers' `register_to_config`, so that `from_config`,
    `save_config` and `from_pretrained` see them."""
    init = SOLVERS[solver].__init__
    options = [] if init is object.__init__ else [p for name, p in inspect.signature(init).parameters.items() if name != "self"]
    clash = sorted((set(COMMON_CONFIG) | set(extra)) & {p.name for p in options})
    if clash or any(p.default is inspect.Parameter.empty for p in options):
        raise TypeError(f"solver {solver!r}: options must have defaults and not reuse scheduler config names {clash}")
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("self", kind)]
        + [inspect.Parameter(name, kind, default=default) for name, default in {**COMMON_CONFIG, **extra}.items()]
        + [p.replace(kind=kind) for p in options]
    )

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config = {name: value for name, value in bound.arguments.items() if name != "self"}
        self._configure(config, {p.name: config[p.name] for p in options})

    __init__.__signature__ = signature
    return register_to_config(__init__)


class FastdiffScheduler(SchedulerMixin, ConfigMixin):
    """Base of the fastdiff schedulers; a subclass names its step rule in `solver`, and `order` (diffusers' name for
    the evaluations per step) follows from it. See the module docstring for how it runs and what it is configured with."""

    solver: ClassVar[str]
    order: ClassVar[int] = 1
    extra_config: ClassVar[dict] = {}  # config keys of this scheduler only (name: default), checked by _configure_extra
    option_aliases: ClassVar[dict] = _OPTION_ALIASES  # solver option values of other configs read as this solver's
    _compatibles = [e.name for e in KarrasDiffusionSchedulers]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "solver" in cls.__dict__:
            cls.__init__ = _config_init(cls.solver, cls.extra_config)
            cls.order = SOLVERS[cls.solver].evaluations_per_step
        if cls.__module__ == __name__:
            cls.__module__ = PUBLIC_MODULE  # a saved pipeline records the class's module: record the public one
            SCHEDULERS[cls.solver] = cls

    def __init__(self, *args, **kwargs):
        raise TypeError("FastdiffScheduler is a base class; use one of fastdiff.integrations.diffusers.SCHEDULERS")

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' `from_config` drops the keys of a config that `__init__` does not take; first refuse those that
        would change the result and warn about unknown ones (`config_keys`). A key passed to from_config overrides."""
        if "solver" in cls.__dict__ or hasattr(cls, "solver"):
            init_keys = set(inspect.signature(cls.__init__).parameters)
            skip = init_keys | set(kwargs) | set(config_dict.get("_use_default_values", [])) | {"quantization_config"}
            foreign = {k: v for k, v in config_dict.items() if not k.startswith("_") and k not in skip}
            check_foreign_keys(cls.__name__, foreign, _SOLVER_OPTIONS)
            if is_flow_config(config_dict):  # recorded as prediction_type="flow_prediction" and no betas
                marks = {"prediction_type": FLOW_PREDICTION}
                if not config_dict.get("use_flow_sigmas"):
                    marks["beta_schedule"] = None
                marks = {k: v for k, v in marks.items() if k not in kwargs}
                defaults = config_dict.get("_use_default_values", [])
                config_dict = {**config_dict, **marks, "_use_default_values": [k for k in defaults if k not in marks]}
        return super().extract_init_dict(config_dict, **kwargs)

    # ---- configuration

    def _configure(self, config: dict, options: dict) -> None:
        self._options = self._solver_options(options)
        self.is_flow = config["prediction_type"] == FLOW_PREDICTION and (
            config["beta_schedule"] is None or config["use_flow_sigmas"] is True
        )
        if config["prediction_type"] not in PREDICTION_TYPES and not self.is_flow:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES} with a VP noise table (the betas), got "
                f"{config['prediction_type']!r}; {FLOW_PREDICTION!r} (a velocity model) goes with beta_schedule=None (a flow "
                "model has no betas; from_config of FlowMatchEulerDiscreteScheduler's config sets it) or use_flow_sigmas=True"
            )
        self._check_flow_keys(config)
        if config["variance_type"] not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {config['variance_type']!r}")
        if config["final_sigmas_type"] not in FINAL_SIGMAS_TYPES:
            raise ValueError(f"final_sigmas_type must be one of {FINAL_SIGMAS_TYPES}, got {config['final_sigmas_type']!r}")
        self._limit = X0Limit(
            config["thresholding"],
            config["dynamic_thresholding_ratio"],
            config["sample_max_value"],
            config["clip_sample"],
            config["clip_sample_range"],
        )
        self._configure_extra(config)
        if config["timestep_spacing"] not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {config['timestep_spacing']!r}")
        check_positive_int(config["steps_offset"], "steps_offset", minimum=0)
        if config["backend"] not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {config['backend']!r}")
        seed = config["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if config["noise"] not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {config['noise']!r}")
        _check_positive(config["rho"], "rho")
        check_flag(config["check_finite"], "check_finite")
        if self.is_flow:
            self._table = FlowTable(config["num_train_timesteps"])
            self.betas = self.alphas_cumprod = None
        else:
            betas = training_betas(
                config["num_train_timesteps"],
                config["beta_start"],
                config["beta_end"],
                config["beta_schedule"],
                config["trained_betas"],
                config["rescale_betas_zero_snr"],
            )
            self._table = VPTable(betas)
            self.betas = betas
            self.alphas_cumprod = self._table.alphas_cumprod
        self._schedule = self._resolve_schedule(config)
        self._learned = None
        self._model_times = None
        self._run_on_learned_grid = False
        if self._schedule == "learned":
            self._learned = self._learned_grid(config["sigmas_file"], config["final_sigmas_type"] == "zero")
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        if self.is_flow:  # FlowMatchEulerDiscreteScheduler's training grid before its shift
            self.timesteps = torch.linspace(self._table.num_train_timesteps, 1, self._table.num_train_timesteps)
            self.sigmas = torch.cat([self.timesteps / self._table.num_train_timesteps, torch.zeros(1)])
        else:
            self.timesteps = torch.arange(self._table.num_train_timesteps - 1, -1, -1, dtype=torch.float32)
            self.sigmas = torch.cat([self._table.sigmas.flip(0), torch.zeros(1, dtype=torch.float64)]).float()
        self.solver_sigmas = None
        self._plan: EvaluationPlan | None = None
        self._fresh_steps: frozenset[int] = frozenset()
        self._begin_index = None
        self._reset_run()

    def _configure_extra(self, config: dict) -> None:
        """Check the keys of `extra_config` (none here)."""

    def _check_flow_keys(self, config: dict) -> None:
        """The flow keys: checked on a flow config, left at their defaults by a VP one; refusals name the key."""
        if not self.is_flow:
            changed = [k for k in _FLOW_KEYS if config[k] != COMMON_CONFIG[k]]
            if config["use_flow_sigmas"]:
                raise ValueError(
                    f"{type(self).__name__} does not implement config key use_flow_sigmas=True with "
                    f"prediction_type={config['prediction_type']!r}; accepted: use_flow_sigmas=True with "
                    "prediction_type='flow_prediction' (a velocity model), or False"
                )
            if changed:
                raise ValueError(
                    f"config keys {', '.join(f'{k}={config[k]!r}' for k in changed)} apply to flow models only; set "
                    f"prediction_type='flow_prediction' for one, or leave them at {[COMMON_CONFIG[k] for k in changed]}"
                )
            return
        for name in ("invert_sigmas", "stochastic_sampling", "use_dynamic_shifting", "use_flow_sigmas"):
            check_flag(config[name], name)
        refused = {
            "invert_sigmas": "False (Mochi's inverted flow time is not implemented)",
            "stochastic_sampling": "False (the step rule decides the noise: pick a stochastic fastdiff scheduler)",
            "use_lu_lambdas": "False on a flow config (schedule='logsnr' is fastdiff's)",
        }
        if config["use_flow_sigmas"]:
            refused["use_karras_sigmas"] = refused["use_exponential_sigmas"] = (
                "False with use_flow_sigmas (diffusers reads it on its VP table there)"
            )
        refused = {key: accepted for key, accepted in refused.items() if config[key]}
        if config["final_sigmas_type"] != "zero":  # diffusers' flow mode takes that last sigma from its VP beta table
            refused["final_sigmas_type"] = "'zero' on a flow config (diffusers' 'sigma_min' reads its VP beta table there)"
        for key, accepted in refused.items():
            name = type(self).__name__
            raise ValueError(f"{name} does not implement config key {key}={config[key]!r}; accepted: {accepted}")
        _check_positive(config["shift"], "shift")
        _check_positive(config["flow_shift"], "flow_shift")
        for name in ("base_shift", "max_shift"):
            check_number(config[name], name, low=-math.inf)
        for name in ("base_image_seq_len", "max_image_seq_len"):
            check_positive_int(config[name], name)
        terminal = config["shift_terminal"]
        if terminal is not None and not 0 < check_number(terminal, "shift_terminal") < 1:
            raise ValueError(f"shift_terminal must be None or a number in (0, 1), got {terminal!r}")
        if config["time_shift_type"] not in TIME_SHIFT_TYPES:
            raise ValueError(f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {config['time_shift_type']!r}")

    def _history_resets(self, grid: list[float]) -> frozenset[int]:
        """The steps of `grid` that start without the multistep history of the steps before (none here)."""
        return frozenset()

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max) of the training table in fastdiff's VE sigmas: where the model can be evaluated, e.g.
        the range to learn a schedule in: `fastdiff.ld3.learn_sigmas(..., sigma_min=lo, sigma_max=hi)`."""
        return self._table.sigma_min, self._table.sigma_max

    def _solver_options(self, options: dict) -> dict:
        for name, aliases in self.option_aliases.items():
            if name in options and options[name] in aliases:
                options[name] = aliases[options[name]]
                self.register_to_config(**{name: options[name]})
        make_solver(self.solver, **options)  # validates the options, naming any bad one
        return options

    def _new_solver(self) -> Solver:
        return make_solver(self.solver, **self._options)

    def _evaluation_plan(self, grid: list[float], fresh_steps: frozenset[int]) -> EvaluationPlan:
        """The solver's evaluation sigmas on `grid`; raises unless its first request is D(x, sigmas[0]) at its input:
        a pipeline evaluates the model on the sample it holds, so a run must start there."""
        plan = evaluation_plan(self._new_solver, grid, fresh_steps)
        if not plan.starts_at_input:
            raise ValueError(
                f"solver {self.solver!r} with options {self._options} does not first evaluate D at its input (x, sigmas[0]), "
                "where a diffusers pipeline evaluates the model on the sample it holds (EDM churn on the first step does "
                "that: keep sigmas[0] above s_tmax)"
            )
        return plan

    def _resolve_schedule(self, config: dict) -> str:
        schedule = config["schedule"]
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        flags = [flag for flag in _SCHEDULE_FLAGS if config[flag]]
        if len(flags) > 1:
            raise ValueError(f"at most one of {sorted(_SCHEDULE_FLAGS)} may be True, got {flags}")
        if schedule == "discrete" and flags and not self.is_flow:  # a flow grid respaces itself (flow_grid)
            schedule = _SCHEDULE_FLAGS[flags[0]]
        if (schedule == "learned") != (config["sigmas_file"] is not None):
            raise ValueError(
                f"schedule='learned' and sigmas_file go together: got schedule={schedule!r}, "
                f"sigmas_file={config['sigmas_file']!r}"
            )
        bounds = [_check_positive(config[name], name) for name in ("sigma_min", "sigma_max") if config[name] is not None]
        self._table.check_sigma_range(bounds, "sigma_min and sigma_max")
        if config["sigma_min"] is not None and config["sigma_max"] is not None and not config["sigma_min"] < config["sigma_max"]:
            raise ValueError(f"sigma_min must be < sigma_max, got {config['sigma_min']} and {config['sigma_max']}")
        return schedule

    def _learned_grid(self, path: str, config_to_zero: bool) -> list[float]:
        """The grid in `sigmas_file`. An LD3 schedule must be one learned for this scheduler's solver and options; its
        decoupled model times then decide where the model is evaluated (`_model_sigma`). With final_sigmas_type="zero"
        a schedule that stops at sigma_min gets a last step to 0 here, at one more evaluation, so that the pipeline
        ends with a clean sample (learn it with `to_zero=True` to spend exactly its NFE)."""
        stored = load_sigmas_file(path)
        if isinstance(stored, LearnedSchedule):
            stored.check_solver(self.solver, self._options)
            sigmas, model_sigmas = list(stored.sigma_list), list(stored.model_sigma_list)
            if sigmas[-1] != 0.0 and config_to_zero:
                sigmas, model_sigmas = [*sigmas, 0.0], [*model_sigmas, 0.0]
            self._model_times = ModelTimes(sigmas, model_sigmas)
            stored = sigmas
        return grid_from_sigmas(self._table, stored, "sigmas_file", config_to_zero)

    def _model_sigma(self, sigma: float) -> float:
        """Where the model is evaluated for a solver request at `sigma`: sigma itself, or its decoupled model time when
        the grid comes from an LD3 schedule file (host floats, no sync)."""
        if self._model_times is None or not self._run_on_learned_grid:
            return sigma
        return self._model_times(sigma)

    def _reset_run(self) -> None:
        self._run: SolverRun | None = None
        self._returned: torch.Tensor | None = None
        self._step_index: int | None = None
        self._watch: FiniteWatch | None = None

    def __getstate__(self) -> dict:
        """Copies and pickles drop a run in progress (its generator cannot be copied)."""
        state = self.__dict__.copy()
        state.update(_run=None, _returned=None, _step_index=None, _watch=None)
        return state

    # ---- diffusers' scheduler interface

    def __len__(self) -> int:
        return self._table.num_train_timesteps

    @property
    def step_index(self) -> int | None:
        """Index into `timesteps` of the next evaluation (None before the first `step` of a run)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Index into `timesteps` where the run starts (img2img pipelines call this)."""
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[float] | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        **kwargs,
    ) -> None:
        """Grid of `num_inference_steps` steps from the configured schedule, or at the given training `timesteps`
        (decreasing, may be fractional), or at the given VE `sigmas` (decreasing; a final 0 is appended when missing).
        On a flow config `sigmas` is the pipeline's base grid of flow times t (shifted as configured), `timesteps`
        the model times N t, and `mu` the dynamic shift. `timesteps` then holds one entry per network evaluation."""
        unexpected = sorted(name for name, value in kwargs.items() if value is not None)
        if unexpected:
            raise TypeError(f"set_timesteps got unexpected arguments {unexpected}")
        if mu is not None and not self.is_flow:
            raise ValueError(f"mu (the dynamic shift of a flow grid) applies to flow configs only, got mu={mu!r}")
        given = [
            name
            for name, v in (("num_inference_steps", num_inference_steps), ("timesteps", timesteps), ("sigmas", sigmas))
            if v is not None
        ]
        if len(given) != 1 and not (given == [] and self._learned is not None):
            raise ValueError(f"pass exactly one of num_inference_steps, timesteps, sigmas; got {given or 'none'}")
        self._run_on_learned_grid = sigmas is None and timesteps is None and self._learned is not None
        to_zero = self.config.final_sigmas_type == "zero"
        if self.is_flow and sigmas is not None and self._learned is None:
            grid = flow_grid(self._table, None, self.config, mu, base=sigmas, to_zero=to_zero)
        elif self.is_flow and timesteps is not None:
            grid = flow_grid_from_timesteps(self._table, timesteps, to_zero)
        elif sigmas is not None:
            grid = grid_from_sigmas(self._table, sigmas, to_zero=to_zero)
        elif timesteps is not None:
            grid = grid_from_timesteps(self._table, timesteps, to_zero)
        elif self._learned is not None:
            steps = len(self._learned) - 1
            if num_inference_steps not in (None, steps):
                raise ValueError(
                    f"sigmas_file holds a schedule of {steps} steps; run with num_inference_steps={steps}, "
                    f"got {num_inference_steps} (set_timesteps() without a count takes the schedule's)"
                )
            grid = self._learned
        else:
            grid = self._scheduled_grid(num_inference_steps, to_zero, mu)
        fresh = self._history_resets(grid)
        plan = self._evaluation_plan(grid, fresh)
        if plan.max_per_step > self.order:
            raise RuntimeError(
                f"{type(self).__name__}.order = {self.order} but {self.solver!r} evaluates {plan.max_per_step} times in a step"
            )
        model_sigmas = [self._model_sigma(s) for s in plan.sigmas]
        # A stage below the table (srk_dp's lies past its step's end when h = log(sigma/sigma') > 1) is evaluated at
        # timestep 0, the model's least noisy level, and D formed with the stage's own sigma; one above it is an error.
        self._table.check_sigma_range(
            [s for s in model_sigmas if s >= self._table.sigma_min], f"the evaluation sigmas of {self.solver!r} on this grid"
        )
        t = self._table.timesteps_of(model_sigmas).astype(np.float32)
        self._timesteps_host = t
        self.timesteps = torch.from_numpy(t).to(device)
        levels = [*model_sigmas, grid[-1]]
        if self.is_flow:  # diffusers' flow schedulers list flow times t as `sigmas`
            levels = [float(sigma_to_flow_t(s)) for s in levels]
        self.sigmas = torch.tensor(levels, dtype=torch.float32)
        self.solver_sigmas = torch.tensor(grid, dtype=torch.float64)
        self.num_inference_steps = len(grid) - 1
        self._plan = plan
        self._fresh_steps = fresh
        self._begin_index = None
        self._reset_run()

    def _scheduled_grid(self, n: int, to_zero: bool, mu: float | None = None) -> list[float]:
        """The grid of n steps of the configured schedule."""
        c = self.config
        if self.is_flow:
            return flow_grid(self._table, n, c, mu, to_zero=to_zero)
        return schedule_grid(
            self._table,
            n,
            self._schedule,
            timestep_spacing=c.timestep_spacing,
            steps_offset=c.steps_offset,
            rho=c.rho,
            sigma_min=c.sigma_min,
            sigma_max=c.sigma_max,
            to_zero=to_zero,
        )

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """The identity: the model sees the pipeline's VP (or flow) sample as it is."""
        return sample

    def scale_noise(self, sample: torch.Tensor, timestep: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """FlowMatchEulerDiscreteScheduler's forward process for img2img and inpainting: the sample of clean `sample`
        with `noise` at the run's pending evaluation once a run is under way, else at `begin_index` when set, else at
        `timestep` (one, or one per sample; looked up in `timesteps`). No host sync but that lookup's."""
        if self._plan is None:
            raise RuntimeError(f"{type(self).__name__}: call set_timesteps(...) before scale_noise()")
        index = self._step_index if self._run is not None else self._begin_index
        if index is None:
            indices = [self.index_for_timestep(t) for t in torch.as_tensor(timestep).reshape(-1)]
        else:
            indices = [index]
        times = torch.from_numpy(self._timesteps_host[indices].astype(np.float64)).to(sample.device)
        return self._table.add_noise(sample, noise, times, working_dtype(sample.dtype)).to(sample.dtype)

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """The index of `timestep` in `timesteps` (its first occurrence): read off a view of `timesteps` without a sync,
        else by value (one host read)."""
        if schedule_timesteps is not None and schedule_timesteps is not self.timesteps:
            hits = (schedule_timesteps == timestep).nonzero()
            if hits.numel() == 0:
                raise ValueError(f"timestep {float(timestep)} is not one of schedule_timesteps")
            return int(hits[0])
        return self._index_of(timestep)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> FastdiffSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Answer the pending evaluation with `model_output` (the model at `sample`, `timestep`) and return the point of
        the next one. `generator` (one, or one per sample) keys the noise of the run at its first call; later calls
        ignore it. Other keyword arguments (DDIMPipeline's `eta`, ...) are accepted and ignored. No host sync but the
        run's single finiteness read at its last step (`check_finite`)."""
        if self._plan is None:
            raise RuntimeError(f"{type(self).__name__}: call set_timesteps(...) before step()")
        if self._run is None:
            self._run = self._start_run(timestep, sample, generator)
            edited = False
        elif self._run.done:
            raise RuntimeError(f"{type(self).__name__}: the run already reached sigma = 0; call set_timesteps() to start another")
        else:
            edited = sample is not self._returned  # the pipeline changed the sample (inpainting blends, step-end callbacks)
        run = self._run
        x = run.request.x
        model_sigma = self._model_sigma(run.request.sigma)
        if edited:
            x = self._table.to_solver(sample, model_sigma, x.dtype)  # D is taken where the model saw the sample
            if run.at_step_start:
                run.restart_step(x)  # and a step not yet begun starts again from it; inside a step the run keeps its state
        if self._watch is not None:
            self._watch.record(sample, model_output, self._plan.steps[self._step_index], model_sigma, "model")
        estimate = self._table.denoised(self._mean_output(model_output, sample), x, model_sigma, self.config.prediction_type)
        estimate = self._limit.apply(estimate)
        run.answer(estimate)
        self._step_index += 1
        if run.done:
            if self._watch is not None:
                self._watch.check()  # the run's one host read
            prev_sample = self._table.to_pipeline(run.result, run.ctx.sigmas[-1], sample.dtype)
        else:
            prev_sample = self._table.to_pipeline(run.request.x, self._model_sigma(run.request.sigma), sample.dtype)
        self._returned = prev_sample
        estimate = estimate.to(sample.dtype)
        if not return_dict:
            return prev_sample, estimate
        return FastdiffSchedulerOutput(prev_sample=prev_sample, pred_original_sample=estimate)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The VP sample sqrt(abar) x0 + sqrt(1 - abar) noise at (fractional) training timesteps (on a flow config
        x_t = (1 - t) x0 + t noise at t = timesteps / N); no host sync."""
        work = working_dtype(original_samples.dtype)
        t = torch.as_tensor(timesteps, device=original_samples.device)
        return self._table.add_noise(original_samples, noise, t, work).to(original_samples.dtype)

    # ---- the run

    def _first_evaluation(self, timestep: float | torch.Tensor) -> int:
        """Index of `timestep` in `timesteps`: `begin_index` when set, else `_index_of`."""
        index = self._begin_index if self._begin_index is not None else self._index_of(timestep)
        if not check_positive_int(index, "begin index", minimum=0) < len(self._plan.sigmas):
            raise ValueError(f"begin index must be an int in [0, {len(self._plan.sigmas)}), got {index!r}")
        return index

    def _index_of(self, timestep: float | torch.Tensor) -> int:
        """Index of `timestep` in `timesteps`: read off a view of `timesteps` (what iterating over them yields) without a
        sync; else looked up by value (one host read, as diffusers' schedulers do)."""
        if (
            isinstance(timestep, torch.Tensor)
            and timestep.ndim == 0
            and timestep.dtype == self.timesteps.dtype
            and timestep.device == self.timesteps.device
            and timestep.untyped_storage().data_ptr() == self.timesteps.untyped_storage().data_ptr()
        ):
            index = timestep.storage_offset() - self.timesteps.storage_offset()
        else:
            hits = np.flatnonzero(self._timesteps_host == np.float32(float(timestep)))
            if hits.size == 0:
                raise ValueError(
                    f"timestep {float(timestep)} is not one of scheduler.timesteps; call set_begin_index() "
                    "to start a run elsewhere than at timesteps[0]"
                )
            index = int(hits[0])
        return index

    def _start_run(self, timestep, sample: torch.Tensor, generator) -> SolverRun:
        if not isinstance(sample, torch.Tensor) or not sample.is_floating_point() or sample.ndim < 1:
            raise TypeError(f"sample must be a floating-point tensor of shape [B, ...], got {type(sample).__name__}")
        first = self._first_evaluation(timestep)
        grid = self._plan.grid_from(first)
        if first > 0 and not self._starts_there(grid, first):
            raise ValueError(
                f"{type(self).__name__} cannot start a run at timesteps[{first}] (inside a step of "
                f"{self.order} evaluations); start at a multiple of scheduler.order"
            )
        solver = self._new_solver()
        work = working_dtype(sample.dtype)
        noise = None
        if solver.stochastic:
            start = sample if self.is_flow else None
            noise = run_noise(
                sample.shape[0], sample.device, generator, self.config.seed, self.config.backend, start, self.config.noise
            )
        ctx = StepContext(
            sigmas=grid,
            sigmas_tensor=torch.tensor(grid, dtype=work, device=sample.device),
            noise=noise,
            backend=self.config.backend,
        )
        self._step_index = first
        self._watch = FiniteWatch("check_finite=False in the scheduler's config") if self.config.check_finite else None
        fresh = self._fresh_steps_from(first)
        return SolverRun(solver, ctx, self._table.to_solver(sample, grid[0], work), fresh, self._new_solver)

    def _fresh_steps_from(self, first: int) -> frozenset[int]:
        """The history resets of a run starting at evaluation `first` (its step 0 is the plan's step of `first`)."""
        offset = self._plan.steps[first]
        return frozenset(i - offset for i in self._fresh_steps if i >= offset)

    def _starts_there(self, grid: list[float], first: int) -> bool:
        """Whether a fresh run on `grid` evaluates where the planned run does from evaluation `first` on."""
        if any(b >= a for a, b in zip(grid, grid[1:], strict=False)):
            return False
        planned = self._plan.sigmas[first:]
        sigmas = self._evaluation_plan(grid, self._fresh_steps_from(first)).sigmas
        return len(sigmas) == len(planned) and np.allclose(sigmas, planned, rtol=1e-12, atol=0)

    def _mean_output(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The model's prediction; the first half of the channels for a model that also predicts its variance."""
        if model_output.shape == sample.shape:
            return model_output
        learned = self.config.variance_type in ("learned", "learned_range")
        if learned and model_output.ndim > 1 and model_output.shape[1] == 2 * sample.shape[1]:
            return model_output[:, : sample.shape[1]]
        also = " (or twice its channels with a learned variance)" if learned else ""
        raise ValueError(
            f"model_output must have the sample's shape {tuple(sample.shape)}{also}, got {tuple(model_output.shape)}"
        )


class SRKScheduler(FastdiffScheduler):
    """fastdiff's multistep stochastic Runge-Kutta (`srk`), one evaluation per step, at a stage point (options `theta`,
    `coupled`)."""

    solver = "srk"


class SRKDPScheduler(FastdiffScheduler):
    """Stochastic Runge-Kutta in data-prediction form (`srk_dp`): two evaluations per step (option `coupled`)."""

    solver = "srk_dp"


class DPMpp2MScheduler(FastdiffScheduler):
    """DPM-Solver++(2M) (`dpmpp_2m`), DPMSolverMultistepScheduler's algorithm: with the same config it gives the same
    samples (float32 rounding). It also takes DPMSolverMultistepScheduler's solver keys:
    `solver_order` 2, or 1 (every step first order, x' = (sigma'/sigma) x + (1 - e^{-h}) D: DDIM);
    `lower_order_final` (the last step is first order when the run has fewer than 15 steps) and `euler_at_final` (the
    last step is first order), which matter with final_sigmas_type="sigma_min" (a step to 0 is x' = D anyway);
    `algorithm_type` "dpmsolver++" ("deis" is read as it, as diffusers does); `solver_type` "midpoint" ("logrho", "bh1",
    "bh2" are read as it). Other values (solver_order 3, the noise-prediction or SDE algorithms, solver_type "heun")
    are refused by name; DPMpp2MSDEScheduler is "sde-dpmsolver++"."""

    solver = "dpmpp_2m"
    extra_config = {
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
    }
    _ALIASES: ClassVar[dict] = {
        "algorithm_type": {"deis": "dpmsolver++"},
        "solver_type": {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"},
    }
    _ACCEPTED: ClassVar[dict] = {"solver_order": (1, 2), "algorithm_type": ("dpmsolver++",), "solver_type": ("midpoint",)}

    def _configure_extra(self, config: dict) -> None:
        for name, aliases in self._ALIASES.items():
            if config[name] in aliases:
                config[name] = aliases[config[name]]
                self.register_to_config(**{name: config[name]})
        for name, accepted in self._ACCEPTED.items():
            value = config[name]
            if isinstance(value, bool) or value not in accepted:
                hint = "; DPMpp2MSDEScheduler runs 'sde-dpmsolver++'" if name == "algorithm_type" else ""
                raise ValueError(f"DPMpp2MScheduler implements {name} in {accepted}, got {value!r}{hint}")
        for name in ("lower_order_final", "euler_at_final"):
            check_flag(config[name], name)

    def _history_resets(self, grid: list[float]) -> frozenset[int]:
        """diffusers' rule: every step with solver_order=1; else the last one when it ends above 0 and euler_at_final,
        or lower_order_final with fewer than 15 steps."""
        n, c = len(grid) - 1, self.config
        if c.solver_order == 1:
            return frozenset(range(n))
        if grid[-1] > 0 and (c.euler_at_final or (c.lower_order_final and n < 15)):
            return frozenset({n - 1})
        return frozenset()


class UniPCScheduler(FastdiffScheduler):
    """UniPC (`unipc`), UniPCMultistepScheduler's algorithm (predict_x0=True): with the same config it gives the same
    samples (float32 rounding). Its keys `solver_order`, `solver_type` ("bh1", "bh2"; "midpoint", "heun", "logrho" are
    read as "bh2", as diffusers does), `lower_order_final` and `disable_corrector` (steps of the run) are the solver's
    options (solver_order: fastdiff's default 3 where a config leaves diffusers' default 2 implicit, as diffusers'
    from_config does with defaults); predict_x0=False (noise prediction) and a `solver_p` are refused by name. Where
    diffusers' step to 0 is not finite (bh1, or order > 1 without lower_order_final) the step is x' = D. Where diffusers'
    grid ends with a zero-length step (final_sigmas_type="sigma_min" on a grid that ends at the table's sigma_min, e.g.
    Karras), diffusers evaluates once more there for the corrector of the step before (whose order counts it); this
    grid has no such step: one evaluation fewer, the last step uncorrected."""

    solver = "unipc"
    extra_config = {"predict_x0": True, "solver_p": None}
    option_aliases = {"solver_type": {"midpoint": "bh2", "heun": "bh2", "logrho": "bh2"}}

    def _solver_options(self, options: dict) -> dict:
        options = super()._solver_options(options)
        self.register_to_config(disable_corrector=sorted(options["disable_corrector"]))  # a list, as a saved config has it
        return options

    def _configure_extra(self, config: dict) -> None:
        if config["predict_x0"] is not True:
            raise ValueError(f"UniPCScheduler implements predict_x0=True (data prediction), got {config['predict_x0']!r}")
        if config["solver_p"] is not None:
            raise ValueError("UniPCScheduler does not implement solver_p (another scheduler as predictor); pass None")


class DPMpp2MSDEScheduler(FastdiffScheduler):
    """DPM-Solver++(2M) SDE (`dpmpp_2m_sde`; options `eta`, `s_noise`, `solver_type`)."""

    solver = "dpmpp_2m_sde"


class DPMpp3MSDEScheduler(FastdiffScheduler):
    """DPM-Solver++(3M) SDE (`dpmpp_3m_sde`; options `eta`, `s_noise`)."""

    solver = "dpmpp_3m_sde"


class ERSDEScheduler(FastdiffScheduler):
    """ER-SDE-Solver-3 (`er_sde`; options `max_stage`, `s_noise`, `noise_scaler`, `eta`): the measured best stochastic
    solver on a flow pipeline's own shifted grid at 6 and from 10 evaluations on (`fastdiff.recommend.recommend(n,
    flow=True, grid="flow")`, bench/SHOOTOUT.md), where `srk` falls far behind."""

    solver = "er_sde"


class EulerMaruyamaScheduler(FastdiffScheduler):
    """Euler-Maruyama on the reverse SDE (`euler_maruyama`; option `s_noise`)."""

    solver = "euler_maruyama"


class EulerAncestralScheduler(FastdiffScheduler):
    """Euler ancestral sampling (`euler_ancestral`; options `eta`, `s_noise`)."""

    solver = "euler_ancestral"


class IPNDMScheduler(FastdiffScheduler):
    """iPNDM, Adams-Bashforth on eps (`ipndm`; option `max_order`)."""

    solver = "ipndm"


class EulerScheduler(FastdiffScheduler):
    """Euler on the probability-flow ODE, i.e. DDIM (`euler`; EDM churn options `s_churn`, `s_tmin`, `s_tmax`, `s_noise`,
    where the first step cannot be churned: the pipeline evaluates its own initial sample)."""

    solver = "euler"


class HeunScheduler(FastdiffScheduler):
    """Heun's second-order method (`heun`, EDM Alg. 2): two evaluations per step, the second at the step's end, so
    `timesteps` repeats entries as diffusers' HeunDiscreteScheduler does; churn options as `EulerScheduler`."""

    solver = "heun"
