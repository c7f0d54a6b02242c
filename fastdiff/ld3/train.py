"""`learn_sigmas`: LD3's training loop (docs/ALGORITHMS.md section 7; Tong et al. 2024, arXiv 2405.15506).

Teacher pairs (x_T, Psi*(x_T)) from a high-accuracy solve; the student solves from x_T' (the soft objective's
slack, `fastdiff.ld3.surrogate`) down the learned grid and its loss is distance(student, teacher), backpropagated
through the whole solver into xi and the decoupled model-time offsets xi_c (RMSprop both by default; the paper uses
SGD for xi_c), gradients clipped to norm 1. Every epoch measures the validation loss (held-out teacher pairs, no
slack); the best grid by validation loss is returned, and training stops after `patience` epochs without improvement.

Once training runs, it does not end in an exception that discards a learned grid: the parameterization cannot make
an invalid schedule (`fastdiff.ld3.parameterization`), every option is checked before the teacher's solve, and a
non-finite loss or gradient after some epoch improved on the starting grid stops training with a RuntimeWarning and
returns the best grid so far (config["stop_reason"] says why).
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import fastdiff
from fastdiff.ld3.baselines import HAND_DESIGNED, hand_designed_grid
from fastdiff.ld3.network import SIGMA_GRADS, NetworkCall, sigma_is_differentiable
from fastdiff.ld3.parameterization import Discretization
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.ld3.solve import solve
from fastdiff.ld3.solvers import learnable_solvers, minimal_options, resolve_solver, steps_for_nfe
from fastdiff.ld3.surrogate import SlackNoise, default_radius
from fastdiff.ld3.teacher import Teacher, check_teacher, describe_teacher, teacher_outputs
from fastdiff.progress import progress_range
from fastdiff.solvers import make_solver
from fastdiff.validation import check_positive, check_positive_int

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # the default sigma range (EDM's)


def l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean distance, [B]."""
    return (x - y).flatten(1).norm(dim=1)


def squared_l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Euclidean distance, [B]: its mean is the mean squared error, so rare large errors weigh more
    than under "l2" (bench/LD3.md: the choice when RMSE is the metric)."""
    return (x - y).flatten(1).pow(2).sum(dim=1)


DISTANCES = {"l2": l2_distance, "squared_l2": squared_l2_distance}


def _distance(distance: str | Distance) -> Distance:
    if isinstance(distance, str) and distance in DISTANCES:
        return DISTANCES[distance]
    if callable(distance):
        return distance
    raise ValueError(
        f"distance must be one of {sorted(DISTANCES)} or a callable (x, y) -> per-sample distances [B], got {distance!r}"
    )


@dataclass
class _Settings:
    """The arguments of `learn_sigmas` (by name, in its order); `_check` validates them and fills in the fields they
    imply."""

    denoiser: Callable
    solver: str
    nfe: int
    shape: Sequence[int]
    teacher_solver: Teacher
    teacher_nfe: int
    n_samples: int
    n_val: int
    radius: float | None
    decoupled: bool
    init: str
    distance: str | Distance
    sigma_min: float
    sigma_max: float
    to_zero: bool
    solver_options: dict | None
    batch_size: int
    max_epochs: int
    patience: int
    lr: float
    lr_model_time: float
    model_time_optimizer: str
    grad_clip: float
    model_time_clip: float
    sigma_grad: str
    checkpoint: bool
    extra_args: dict | None
    seed: int
    dtype: torch.dtype
    device: torch.device | str
    progress: bool | None
    options: dict = field(init=False)  # the solver's resolved options
    steps: int = field(init=False)
    evaluations: int = field(init=False)
    levels: int = field(init=False)  # positive grid levels: steps + 1, or steps with `to_zero`
    slack_radius: float = field(init=False)  # r in units of sigma_max, LD3's default filled in
    dist: Distance = field(init=False)

    @property
    def label(self) -> str:
        return f"ld3 {self.solver} NFE {self.nfe}"


@dataclass
class _Pairs:
    """Teacher pairs (x_T, Psi*(x_T)), split into training and validation, and the generator that drew x_T (it goes on
    to order the training batches)."""

    generator: torch.Generator
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass
class _Start:
    """The starting grid: the hand-designed kind with the lowest validation loss, and every candidate's loss."""

    kind: str
    losses: dict[str, float]


@dataclass
class _Outcome:
    """What the optimization leaves: the best grid by validation loss and how training went."""

    best_val: float
    best_state: dict[str, torch.Tensor]
    history: dict[str, list[float]]
    best_epoch: int | None = None  # the epoch whose grid is best_state (None: the starting grid)
    stop_reason: str | None = None  # set when a non-finite value ends training
    slack_moves_accepted: int = 0


def _check(s: _Settings) -> Discretization:
    """Refuse bad options, naming the argument, before any work; fill in the fields they imply and return the
    (untrained) parameterized grid, whose constructor checks the levels, the sigma range and model_time_clip."""
    if s.solver not in learnable_solvers():
        if isinstance(s.solver, str):
            raise ValueError(
                f"solver {s.solver!r} does not support learned schedules; LD3 supports: {', '.join(learnable_solvers())}"
            )
        raise TypeError(f"solver must be a solver name (str), got {type(s.solver).__name__}")
    s.options = resolve_solver(s.solver, s.solver_options)
    s.steps, s.evaluations = steps_for_nfe(s.solver, s.options, s.nfe, s.to_zero)
    s.levels = s.steps if s.to_zero else s.steps + 1
    if s.levels < 3:
        raise ValueError(
            f"nfe={s.nfe} gives {s.solver!r} {s.steps} step(s): no interior grid point to learn (needs a larger nfe)"
        )
    if not callable(s.denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(s.denoiser).__name__}")
    s.shape = tuple(s.shape)
    if not s.shape or not all(isinstance(n, int) and n >= 1 for n in s.shape):
        raise ValueError(f"shape must be one sample's shape (positive ints), got {s.shape!r}")
    for name in ("n_samples", "n_val", "batch_size", "max_epochs", "patience", "teacher_nfe"):
        check_positive_int(getattr(s, name), name)
    if isinstance(s.sigma_max, float) and s.sigma_max == math.inf:
        raise ValueError(
            "sigma_max must be a positive finite number, got inf (the flow time t = 1): LD3 learns the grid in "
            "lambda = -log sigma between finite ends and draws x_T = sigma_max z; for a flow model pass e.g. "
            "fastdiff.models.flow_t_to_sigma(0.99) = 99"
        )
    s.sigma_min, s.sigma_max = check_positive(s.sigma_min, "sigma_min"), check_positive(s.sigma_max, "sigma_max")
    if s.sigma_min >= s.sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {s.sigma_min} and {s.sigma_max}")
    for name in ("lr", "lr_model_time", "grad_clip"):
        check_positive(getattr(s, name), name)
    if isinstance(s.seed, bool) or not isinstance(s.seed, int) or not 0 <= s.seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2^64), got {s.seed!r}")
    if not isinstance(s.dtype, torch.dtype) or not s.dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {s.dtype!r}")
    r = default_radius(math.prod(s.shape), s.nfe) if s.radius is None else s.radius
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0 (None for LD3's default), got {s.radius!r}")
    s.slack_radius = r
    if s.model_time_optimizer not in ("rmsprop", "sgd"):
        raise ValueError(f"model_time_optimizer must be 'rmsprop' or 'sgd', got {s.model_time_optimizer!r}")
    if s.sigma_grad not in SIGMA_GRADS:
        raise ValueError(f"sigma_grad must be one of {SIGMA_GRADS}, got {s.sigma_grad!r}")
    s.dist = _distance(s.distance)
    if s.init != "best" and s.init not in HAND_DESIGNED:
        raise ValueError(f"init must be 'best' or one of {HAND_DESIGNED}, got {s.init!r}")
    check_teacher(s.teacher_solver, s.teacher_nfe, s.sigma_min, s.sigma_max, s.to_zero)
    return Discretization(s.levels, s.sigma_min, s.sigma_max, decoupled=s.decoupled, clip=s.model_time_clip, to_zero=s.to_zero)


def _teacher_pairs(s: _Settings) -> _Pairs:
    """x_T = sigma_max z for n_samples + n_val samples (z drawn in float64 from `seed`), the sigma gradient settled
    ("auto" probes the denoiser on two of them), and the teacher's Psi*(x_T)."""
    generator = torch.Generator().manual_seed(s.seed)
    x_all = torch.randn(s.n_samples + s.n_val, *s.shape, generator=generator, dtype=torch.float64) * s.sigma_max
    x_all = x_all.to(s.device, s.dtype)
    if s.sigma_grad == "auto":
        probe = sigma_is_differentiable(s.denoiser, x_all[:2], math.sqrt(s.sigma_min * s.sigma_max), s.extra_args)
        s.sigma_grad = "autograd" if probe else "finite_difference"
    teacher_network = NetworkCall(s.denoiser, extra_args=s.extra_args)
    targets = teacher_outputs(s.teacher_solver, s.teacher_nfe, teacher_network, x_all, s.sigma_min, s.sigma_max, s.to_zero)
    n = s.n_samples
    return _Pairs(generator, x_all[:n], targets[:n], x_all[n:], targets[n:])


class _Student:
    """The learned grid and the solves down it."""

    def __init__(self, s: _Settings, grid: Discretization):
        self.grid = grid
        self.network = NetworkCall(s.denoiser, sigma_grad=s.sigma_grad, checkpoint=s.checkpoint, extra_args=s.extra_args)
        self.solver, self.options, self.dist = s.solver, s.options, s.dist

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dist(student(x), y) per sample, differentiable in the grid (and in x where it requires grad)."""
        sigmas, model_sigmas = self.grid()
        out = solve(self.network, self.solver, self.options, list(sigmas.unbind()), x, list(model_sigmas.unbind()))
        return self.dist(out, y)

    @torch.no_grad()
    def losses_without_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """dist(student(x), y) per sample down the current grid as host floats (any backend)."""
        sigmas, model_sigmas = self.grid()
        out = solve(self.network, self.solver, self.options, sigmas.tolist(), x, model_sigmas.tolist(), backend="auto")
        return self.dist(out, y)

    def validation_loss(self, pairs: _Pairs) -> float:
        return float(self.losses_without_grad(pairs.x_val, pairs.y_val).mean())


def _initial_grid(student: _Student, s: _Settings, pairs: _Pairs) -> _Start:
    """Measure the validation loss of `init` (every hand-designed grid for "best"), and start from the lowest finite
    one; raises FloatingPointError when none is finite."""
    losses = {}
    for kind in HAND_DESIGNED if s.init == "best" else (s.init,):
        student.grid.start_from(hand_designed_grid(kind, s.levels, s.sigma_min, s.sigma_max, s.to_zero))
        losses[kind] = student.validation_loss(pairs)
    finite = {kind: v for kind, v in losses.items() if math.isfinite(v)}
    if not finite:
        raise FloatingPointError(f"LD3: non-finite validation loss on every starting grid ({losses}); no schedule was produced")
    kind = min(finite, key=finite.get)
    student.grid.start_from(hand_designed_grid(kind, s.levels, s.sigma_min, s.sigma_max, s.to_zero))
    return _Start(kind, losses)


def _optimizers(s: _Settings, grid: Discretization) -> list[torch.optim.Optimizer]:
    """RMSprop on xi; on xi_c (decoupled) RMSprop or SGD as `model_time_optimizer` says."""
    optimizers = [torch.optim.RMSprop([grid.xi], lr=s.lr)]
    if s.decoupled:
        model_time_cls = torch.optim.RMSprop if s.model_time_optimizer == "rmsprop" else torch.optim.SGD
        optimizers.append(model_time_cls([grid.xi_c], lr=s.lr_model_time))
    return optimizers


def _snapshot(grid: Discretization) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in grid.state_dict().items()}


def _train_epoch(
    student: _Student, s: _Settings, pairs: _Pairs, slack: SlackNoise, optimizers: list, epoch: int
) -> tuple[list[float], str | None]:
    """One pass over the training pairs in random batches: a clipped optimizer step on the grid per batch, then the
    slack's move of each sample's x_T' (kept where its loss fell). Returns the batch losses and, when a non-finite loss
    or gradient stopped the epoch, why."""
    order = torch.randperm(s.n_samples, generator=pairs.generator).to(s.device)
    losses = []
    for first in range(0, s.n_samples, s.batch_size):
        idx = order[first : first + s.batch_size]
        x = slack.batch(idx)
        loss = student.losses(x, pairs.y_train[idx]).mean()
        if not bool(torch.isfinite(loss)):
            return losses, f"non-finite training loss {float(loss.detach())} in epoch {epoch}"
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in student.grid.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        if not bool(torch.isfinite(norm)):
            return losses, f"non-finite gradient in epoch {epoch}"
        for opt in optimizers:
            opt.step()
        student.grid.project_()
        losses.append(float(loss.detach()))
        if slack.radius > 0:
            candidate = slack.propose(idx, x, x.grad)
            targets = pairs.y_train[idx]
            both = student.losses_without_grad(torch.cat([x.detach(), candidate]), torch.cat([targets, targets]))
            old, new = both.split(len(idx))
            slack.accept(idx, candidate, old, new)
    return losses, None


def _optimize(student: _Student, s: _Settings, pairs: _Pairs, start: _Start) -> _Outcome:
    """Train for at most max_epochs epochs, keeping the grid with the lowest validation loss; stop after `patience`
    epochs without improvement, or at the first non-finite loss or gradient (`stop_reason`)."""
    optimizers = _optimizers(s, student.grid)
    slack = SlackNoise(pairs.x_train, s.slack_radius * s.sigma_max)
    start_val = start.losses[start.kind]
    outcome = _Outcome(start_val, _snapshot(student.grid), {"train": [], "val": [start_val]})
    stale = 0
    for epoch in progress_range(s.max_epochs, s.progress, desc=s.label):
        losses, outcome.stop_reason = _train_epoch(student, s, pairs, slack, optimizers, epoch)
        if outcome.stop_reason is not None:
            break
        val = student.validation_loss(pairs)
        if not math.isfinite(val):
            outcome.stop_reason = f"non-finite validation loss in epoch {epoch}"
            break
        outcome.history["train"].append(sum(losses) / len(losses))
        outcome.history["val"].append(val)
        if val < outcome.best_val:
            outcome.best_val, outcome.best_epoch, stale = val, epoch, 0
            outcome.best_state = _snapshot(student.grid)
        else:
            stale += 1
            if stale >= s.patience:
                break
    outcome.slack_moves_accepted = slack.accepted
    return outcome


def _report_stop(outcome: _Outcome, s: _Settings, start: _Start) -> None:
    """A non-finite stop raises FloatingPointError before any epoch improved on the start, else warns (at the caller
    of learn_sigmas) that the best grid so far is returned."""
    if outcome.stop_reason is None:
        return
    if outcome.best_epoch is None:
        raise FloatingPointError(
            f"LD3 ({s.label}): {outcome.stop_reason}, before any epoch improved on the starting grid ({start.kind}); no "
            "schedule was produced (check the denoiser and teacher, or lower lr)"
        )
    warnings.warn(
        f"LD3 ({s.label}): {outcome.stop_reason}; training stopped, returning the best grid so far (epoch {outcome.best_epoch})",
        RuntimeWarning,
        stacklevel=3,
    )


def _learned_schedule(student: _Student, s: _Settings, start: _Start, outcome: _Outcome, started: float) -> LearnedSchedule:
    """The best grid as a LearnedSchedule, with its losses, the training's configuration and provenance."""
    student.grid.load_state_dict(outcome.best_state)
    with torch.no_grad():
        sigmas, model_sigmas = student.grid()
    config = {
        "init": start.kind,
        "start_val": {kind: v if math.isfinite(v) else None for kind, v in start.losses.items()},  # None: not finite
        "n_samples": s.n_samples,
        "n_val": s.n_val,
        "radius": s.slack_radius,
        "distance": getattr(s.dist, "__name__", "custom"),
        "batch_size": s.batch_size,
        "epochs": len(outcome.history["train"]),
        "lr": s.lr,
        "lr_model_time": s.lr_model_time,
        "model_time_optimizer": s.model_time_optimizer,
        "grad_clip": s.grad_clip,
        "model_time_clip": s.model_time_clip,
        "sigma_grad": s.sigma_grad,
        "seed": s.seed,
        "best_val": outcome.best_val,
        "best_epoch": outcome.best_epoch,
        "stop_reason": outcome.stop_reason,
        "slack_moves_accepted": outcome.slack_moves_accepted,
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return LearnedSchedule(
        solver=s.solver,
        solver_options=minimal_options(s.solver, s.options),
        nfe=s.nfe,
        steps=s.steps,
        evaluations=s.evaluations,
        sigma_min=s.sigma_min,
        sigma_max=s.sigma_max,
        to_zero=s.to_zero,
        decoupled=s.decoupled,
        sigma_list=tuple(sigmas.tolist()),
        model_sigma_list=tuple(model_sigmas.tolist()),
        order=getattr(make_solver(s.solver, **s.options), "order", None),
        loss_history=outcome.history,
        teacher=describe_teacher(s.teacher_solver, s.teacher_nfe),
        config=config,
        created={
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fastdiff": fastdiff.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )


def learn_sigmas(
    denoiser: Callable,
    solver: str,
    nfe: int,
    *,
    shape: Sequence[int],
    teacher_solver: Teacher = "heun",
    teacher_nfe: int = 200,
    n_samples: int = 100,
    n_val: int = 200,
    radius: float | None = None,
    decoupled: bool = True,
    init: str = "best",
    distance: str | Distance = "l2",
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    to_zero: bool = False,
    solver_options: dict | None = None,
    batch_size: int = 20,
    max_epochs: int = 100,
    patience: int = 15,
    lr: float = 5e-3,
    lr_model_time: float = 5e-3,
    model_time_optimizer: str = "rmsprop",
    grad_clip: float = 1.0,
    model_time_clip: float = 0.5,
    sigma_grad: str = "auto",
    checkpoint: bool = False,
    extra_args: dict | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> LearnedSchedule:
    """Learn the grid of `solver` at `nfe` network evaluations for `denoiser` (LD3).

    shape: one sample's shape (x_T = sigma_max * randn(n, *shape)).
    teacher_solver: a solver name run with `teacher_nfe` evaluations, or an exact map `f(x, sigma_from, sigma_to)`.
    radius: the soft objective's slack r in units of sigma_max (None: LD3's 0.001 d / NFE^2; 0: the hard objective).
    decoupled: learn the model-time offsets too.
    init: the starting grid, one of `fastdiff.ld3.baselines.HAND_DESIGNED` ("logsnr" is LD3's xi = 1), or "best"
        (whichever has the lowest validation loss).
    distance: "l2" (per-sample Euclidean norm, LD3's choice), "squared_l2" (its square: the mean squared error) or
        `f(student, teacher) -> [B]`.
    to_zero: the grid runs sigma_max -> sigma_min, then 0 when set; `fastdiff.ld3.solvers` maps NFE to steps.
    Flow models (`fastdiff.models.FlowDenoiser`) learn like any denoiser on a finite range, sigma = t / (1 - t): the
        defaults (0.002, 80) are t in [0.002, 0.988]; pass sigma_max = `fastdiff.models.flow_t_to_sigma(t_max)` for
        another t_max (t = 1, sigma_max = inf, raises).
    sigma_grad: how the loss reaches the sigma the network sees ("auto" probes the denoiser; `fastdiff.ld3.network`).
    checkpoint: recompute the network in the backward pass instead of storing its activations.
    Optimizers: RMSprop (`lr`, 5e-3) on xi as in docs/ALGORITHMS.md section 7; on xi_c `model_time_optimizer` "rmsprop"
        (default, `lr_model_time` 5e-3) or "sgd" (the paper's choice, whose step scales with the loss: measured in
        bench/LD3.md, it oscillates on an 8-d target at lr 0.1 and is slow on a 1-D one at 0.02); gradients clipped to
        `grad_clip` (1.0) in total norm.
    Raises ValueError (TypeError for a wrong type) for bad input, naming the argument, before any training: nfe < 1,
    an unsupported solver, too few evaluations for one interior level or for one teacher step, non-positive or
    non-finite sigmas, lr, counts, a sigma range too narrow for the levels. Raises FloatingPointError for a non-finite
    loss or gradient before any epoch has improved on the starting grid (nothing was learned, nothing is returned);
    after that, such a failure stops training with a RuntimeWarning and the best grid so far is returned.
    """
    settings = _Settings(**locals())  # every argument, by name
    grid = _check(settings)
    started = time.perf_counter()
    pairs = _teacher_pairs(settings)
    student = _Student(settings, grid.to(settings.device))
    start = _initial_grid(student, settings, pairs)
    outcome = _optimize(student, settings, pairs, start)
    _report_stop(outcome, settings, start)
    return _learned_schedule(student, settings, start, outcome, started)
