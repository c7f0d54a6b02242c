"""What a solver is: a step rule turning (sigma, sigma_next, history) into host float64
coefficients for `fastdiff.ops.solver_step`. The walk over the grid lives in `fastdiff.stepping`.

A step is a generator: it yields an `Evaluation(x, sigma)` for every network evaluation it
needs, receives D(x, sigma) back through `send`, and yields its `StepOutput` last (yielded, not
returned, and with no `yield from`: torch.compile traces generators written this way into one
graph, but not a StopIteration value or a delegated sub-generator). A step changes no solver state
before its first evaluation is answered, so a host may abandon it there and restart the step from
another x (the diffusers schedulers do when a pipeline edits the sample). The solver never calls the model,
so the same step rule runs inside `fastdiff.sample`, where the driver answers the requests, and
inside a diffusers pipeline, where the pipeline does (`fastdiff.integrations.diffusers`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar

import torch

from fastdiff.noise import NoiseSource
from fastdiff.ops.solver_step import NoiseDraw


@dataclass
class StepContext:
    """Everything a step rule may use; built once per sampling run by the driver.

    `sigmas` is the grid as host floats (float64), `sigmas_tensor` the same grid on the sample's device. To learn a
    grid (`fastdiff.ld3`), `sigmas` holds 0-d float64 tensors that require grad instead: the step rules whose class sets
    `learnable_schedule = True` compute their coefficients with `fastdiff.solvers.scalar` so that the solve is
    differentiable in the grid (with backend "reference").
    """

    sigmas: list[float]
    sigmas_tensor: torch.Tensor
    noise: NoiseSource | None
    backend: str

    def draw(self, i: int, stage: int = 0, sigma: float | None = None, sigma_next: float | None = None) -> NoiseDraw:
        """Noise request for stage `stage` of step `i`.

        A user noise_sampler is called with (sigma, sigma_next), by default the step's grid
        points as device tensors (k-diffusion semantics); a solver that needs several Gaussians
        per step passes sub-interval endpoints instead.
        """
        if self.noise is None:
            raise RuntimeError("this solver draws noise but the driver built no noise source")
        # grid entries are views (no copy); sub-interval ends stay host floats until a noise_sampler needs them
        s = self.sigmas_tensor[i] if sigma is None else sigma
        s_next = self.sigmas_tensor[i + 1] if sigma_next is None else sigma_next
        host = (self.sigmas[i] if sigma is None else sigma, self.sigmas[i + 1] if sigma_next is None else sigma_next)
        return NoiseDraw(self.noise, i, stage, s, s_next, tuple(float(end) for end in host))


@dataclass(frozen=True)
class Evaluation:
    """A step's request for D(x, sigma), sigma a host float; the answer comes back in x's dtype."""

    x: torch.Tensor
    sigma: float


@dataclass
class StepOutput:
    """The new state, plus what k-diffusion's callback reports for the step's first evaluation."""

    x_next: torch.Tensor
    denoised: torch.Tensor
    x_eval: torch.Tensor
    sigma_hat: float


class Solver:
    """Base of the step rules. Subclasses set `name`, `order` and `evaluations_per_step`, implement `step`, and keep
    any history (previous denoised outputs) on the instance; the driver makes a fresh instance per run.

    `order` is the measured global convergence order (strong order of the ODE solvers, weak order of the SDE
    solvers, as the order tests fit it); `evaluations_per_step` the network evaluations of a step that does not
    end at sigma' = 0 (the step to 0 is the loop's denoising step, one evaluation, unless `denoises_at_zero` is
    False). Both may be instance attributes where options change them.

    `from_infinity()` declares the step from sigma = inf (the flow time t = 1), which `fastdiff.stepping` takes: the
    state there is the unit noise n = lim x/sigma, and the step is x' = D(n, inf) + sigma' (kept n + fresh z) with
    (kept, fresh) the exact limit of the rule's own step as sigma -> inf (docs/ALGORITHMS.md section 14): (1, 0), the
    DDIM limit, for a deterministic rule; a rule that adds noise overrides it. The rule's multistep history starts after
    that step."""

    name: ClassVar[str]
    order: int
    evaluations_per_step: int
    stochastic: bool = False
    # True where the step rule runs on a grid of 0-d tensors that require grad (see StepContext), so fastdiff.ld3 can learn it.
    learnable_schedule: ClassVar[bool] = False
    # The step to sigma' = 0 is x' = D(x^, sigma^) at the step's start point (`start`), taken by `fastdiff.stepping`;
    # a step rule whose own formula differs there (ipndm) sets False and takes that step itself.
    denoises_at_zero: ClassVar[bool] = True

    def from_infinity(self) -> tuple[float, float]:
        """(kept, fresh) of the step from sigma = inf: x' = D(n, inf) + sigma' (kept n + fresh z); (1, 0) here."""
        return 1.0, 0.0

    def start(self, ctx: StepContext, i: int, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The point (x^, sigma^) where step i first evaluates D: (x, sigmas[i]), or x noised up by EDM churn."""
        return x, ctx.sigmas[i]

    def step(self, ctx: StepContext, i: int, x: torch.Tensor) -> Generator[Evaluation | StepOutput, torch.Tensor, None]:
        """Step i from x at sigmas[i] to sigmas[i + 1] > 0: yields evaluations, then the new state."""
        raise NotImplementedError
