"""`learn_sigmas`: LD3's training loop (ALGORITHMS.md section 7; Tong et al. 2024, arXiv 2405.15506).

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
from fastdiff.validation import check_positive_int

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


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
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
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
    sigma_grad: how the loss reaches the sigma the network sees ("auto" probes the denoiser; `fastdiff.ld3.network`).
    checkpoint: recompute the network in the backward pass instead of storing its activations.
    Optimizers: RMSprop (`lr`, 5e-3) on xi as in ALGORITHMS.md section 7; on xi_c `model_time_optimizer` "rmsprop"
        (default, `lr_model_time` 5e-3) or "sgd" (the paper's choice, whose step scales with the loss: measured in
        bench/LD3.md, it oscillates on an 8-d target at lr 0.1 and is slow on a 1-D one at 0.02); gradients clipped to
        `grad_clip` (1.0) in total norm.
    Raises ValueError (TypeError for a wrong type) for bad input, naming the argument, before any training: nfe < 1,
    an unsupported solver, too few evaluations for one interior level or for one teacher step, non-positive or
    non-finite sigmas, lr, counts, a sigma range too narrow for the levels. Raises FloatingPointError for a non-finite
    loss or gradient before any epoch has improved on the starting grid (nothing was learned, nothing is returned);
    after that, such a failure stops training with a RuntimeWarning and the best grid so far is returned.
    """
    if solver not in learnable_solvers():
        if isinstance(solver, str):
            raise ValueError(
                f"solver {solver!r} does not support learned schedules; LD3 supports: {', '.join(learnable_solvers())}"
            )
        raise TypeError(f"solver must be a solver name (str), got {type(solver).__name__}")
    options = resolve_solver(solver, solver_options)
    steps, evaluations = steps_for_nfe(solver, options, nfe, to_zero)
    levels = steps if to_zero else steps + 1
    if levels < 3:
        raise ValueError(f"nfe={nfe} gives {solver!r} {steps} step(s): no interior grid point to learn (needs a larger nfe)")
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    shape = tuple(shape)
    if not shape or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ValueError(f"shape must be one sample's shape (positive ints), got {shape!r}")
    for name, value in (
        ("n_samples", n_samples),
        ("n_val", n_val),
        ("batch_size", batch_size),
        ("max_epochs", max_epochs),
        ("patience", patience),
        ("teacher_nfe", teacher_nfe),
    ):
        check_positive_int(value, name)
    sigma_min, sigma_max = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} and {sigma_max}")
    for name, value in (("lr", lr), ("lr_model_time", lr_model_time), ("grad_clip", grad_clip)):
        _positive(name, value)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2^64), got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    dim = math.prod(shape)
    r = default_radius(dim, nfe) if radius is None else radius
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0 (None for LD3's default), got {radius!r}")
    if model_time_optimizer not in ("rmsprop", "sgd"):
        raise ValueError(f"model_time_optimizer must be 'rmsprop' or 'sgd', got {model_time_optimizer!r}")
    if sigma_grad not in SIGMA_GRADS:
        raise ValueError(f"sigma_grad must be one of {SIGMA_GRADS}, got {sigma_grad!r}")
    dist = _distance(distance)
    if init != "best" and init not in HAND_DESIGNED:
        raise ValueError(f"init must be 'best' or one of {HAND_DESIGNED}, got {init!r}")
    check_teacher(teacher_solver, teacher_nfe, sigma_min, sigma_max, to_zero)
    grid = Discretization(levels, sigma_min, sigma_max, decoupled=decoupled, clip=model_time_clip, to_zero=to_zero)

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    x_all = (torch.randn(n_samples + n_val, *shape, generator=gen, dtype=torch.float64) * sigma_max).to(device, dtype)
    if sigma_grad == "auto":
        sigma_grad = (
            "autograd"
            if sigma_is_differentiable(denoiser, x_all[:2], math.sqrt(sigma_min * sigma_max), extra_args)
            else "finite_difference"
        )
    network = NetworkCall(denoiser, sigma_grad=sigma_grad, checkpoint=checkpoint, extra_args=extra_args)
    targets = teacher_outputs(
        teacher_solver, teacher_nfe, NetworkCall(denoiser, extra_args=extra_args), x_all, sigma_min, sigma_max, to_zero
    )
    x_train, y_train = x_all[:n_samples], targets[:n_samples]
    x_val, y_val = x_all[n_samples:], targets[n_samples:]

    grid = grid.to(device)
    optimizers = [torch.optim.RMSprop([grid.xi], lr=lr)]
    if decoupled:
        model_time_cls = torch.optim.RMSprop if model_time_optimizer == "rmsprop" else torch.optim.SGD
        optimizers.append(model_time_cls([grid.xi_c], lr=lr_model_time))
    slack = SlackNoise(x_train, r * sigma_max)

    def student(x, sigmas, model_sigmas):
        return solve(network, solver, options, list(sigmas.unbind()), x, list(model_sigmas.unbind()))

    @torch.no_grad()
    def validation_loss() -> float:
        sigmas, model_sigmas = grid()
        out = solve(network, solver, options, sigmas.tolist(), x_val, model_sigmas.tolist(), backend="auto")
        return float(dist(out, y_val).mean())

    starts = {}
    for kind in HAND_DESIGNED if init == "best" else (init,):
        grid.start_from(hand_designed_grid(kind, levels, sigma_min, sigma_max, to_zero))
        starts[kind] = validation_loss()
    finite = {kind: v for kind, v in starts.items() if math.isfinite(v)}
    if not finite:
        raise FloatingPointError(f"LD3: non-finite validation loss on every starting grid ({starts}); no schedule was produced")
    init = min(finite, key=finite.get)
    grid.start_from(hand_designed_grid(init, levels, sigma_min, sigma_max, to_zero))
    best_val, best_state = starts[init], {k: v.detach().clone() for k, v in grid.state_dict().items()}
    best_epoch = None  # the epoch whose grid is best_state (None: the starting grid)
    history = {"train": [], "val": [best_val]}
    stale = 0
    stop_reason = None  # set when a non-finite value ends training
    desc = f"ld3 {solver} NFE {nfe}"
    for epoch in progress_range(max_epochs, progress, desc=desc):
        order = torch.randperm(n_samples, generator=gen).to(device)
        losses = []
        for first in range(0, n_samples, batch_size):
            idx = order[first : first + batch_size]
            x = slack.batch(idx)
            sigmas, model_sigmas = grid()
            per_sample = dist(student(x, sigmas, model_sigmas), y_train[idx])
            loss = per_sample.mean()
            if not bool(torch.isfinite(loss)):
                stop_reason = f"non-finite training loss {float(loss.detach())} in epoch {epoch}"
                break
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for p in grid.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if not bool(torch.isfinite(norm)):
                stop_reason = f"non-finite gradient in epoch {epoch}"
                break
            for opt in optimizers:
                opt.step()
            grid.project_()
            losses.append(float(loss.detach()))
            if slack.radius > 0:
                candidate = slack.propose(idx, x, x.grad)
                with torch.no_grad():
                    sigmas, model_sigmas = grid()
                    both = solve(
                        network,
                        solver,
                        options,
                        sigmas.tolist(),
                        torch.cat([x.detach(), candidate]),
                        model_sigmas.tolist(),
                        backend="auto",
                    )
                    old, new = dist(both, torch.cat([y_train[idx], y_train[idx]])).split(len(idx))
                slack.accept(idx, candidate, old, new)
        if stop_reason is not None:
            break
        val = validation_loss()
        if not math.isfinite(val):
            stop_reason = f"non-finite validation loss in epoch {epoch}"
            break
        history["train"].append(sum(losses) / len(losses))
        history["val"].append(val)
        if val < best_val:
            best_val, best_epoch, stale = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in grid.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if stop_reason is not None:
        if best_epoch is None:
            raise FloatingPointError(
                f"LD3 ({desc}): {stop_reason}, before any epoch improved on the starting grid ({init}); no schedule was "
                "produced (check the denoiser and teacher, or lower lr)"
            )
        warnings.warn(
            f"LD3 ({desc}): {stop_reason}; training stopped, returning the best grid so far (epoch {best_epoch})",
            RuntimeWarning,
            stacklevel=2,
        )
    grid.load_state_dict(best_state)
    with torch.no_grad():
        sigmas, model_sigmas = grid()
    return LearnedSchedule(
        solver=solver,
        solver_options=minimal_options(solver, options),
        nfe=nfe,
        steps=steps,
        evaluations=evaluations,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        to_zero=to_zero,
        decoupled=decoupled,
        sigma_list=tuple(sigmas.tolist()),
        model_sigma_list=tuple(model_sigmas.tolist()),
        order=getattr(make_solver(solver, **options), "order", None),
        loss_history=history,
        teacher=describe_teacher(teacher_solver, teacher_nfe),
        config={
            "init": init,
            "start_val": {kind: v if math.isfinite(v) else None for kind, v in starts.items()},  # None: not finite
            "n_samples": n_samples,
            "n_val": n_val,
            "radius": r,
            "distance": getattr(dist, "__name__", "custom"),
            "batch_size": batch_size,
            "epochs": len(history["train"]),
            "lr": lr,
            "lr_model_time": lr_model_time,
            "model_time_optimizer": model_time_optimizer,
            "grad_clip": grad_clip,
            "model_time_clip": model_time_clip,
            "sigma_grad": sigma_grad,
            "seed": seed,
            "best_val": best_val,
            "best_epoch": best_epoch,
            "stop_reason": stop_reason,
            "slack_moves_accepted": slack.accepted,
            "train_seconds": round(time.perf_counter() - start, 3),
        },
        created={
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fastdiff": fastdiff.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
