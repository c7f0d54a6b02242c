"""Wrappers that make a trained network a VE denoiser D(x, sigma) for `fastdiff.sample` (DESIGN.md section 3).

A variance-preserving model sees x_vp = alpha x with alpha = 1 / sqrt(1 + sigma^2) (so the VP noise level is
sigma_vp = sigma alpha and alpha^2 + sigma_vp^2 = 1) at the model time t of sigma, and its output converts to
    eps-prediction:  D = x - sigma eps
    v-prediction:    D = alpha x_vp - sigma_vp v = alpha^2 x - sigma alpha v
    score:           D = x + sigma^2 s,  with s = alpha s_vp(x_vp, t) for a score in VP coordinates.
At sigma = inf (a grid from pure noise) the state is the unit noise n = lim x/sigma = x_vp and the v-prediction
wrappers return the limit D = -v(n, t(inf)) (a zero-terminal-SNR model's last step); eps-prediction has no limit
there (D = x - sigma eps is infinite, which `fastdiff.sample`'s finite check reports at sigma = inf), so a grid from
sigma = inf needs a v-prediction or flow model.

A rectified-flow model (`FlowDenoiser`, docs/ALGORITHMS.md section 14) sees x_t = (1 - t) x0 + t eps: in VE terms
sigma = t/(1 - t), x = x_t/(1 - t), and t = 1 is sigma = inf, where the state is the unit noise x_t itself.

Every wrapper is an `nn.Module` (the wrapped network is a submodule, so `.to()` and `.parameters()` reach
it), takes sigma as a float, a 0-d tensor or a [B] tensor, and passes extra keyword arguments to the model.
Sigma arithmetic runs in float64 for float64 inputs and float32 otherwise; the output has x's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fastdiff.dtypes import working_dtype
from fastdiff.flow_time import flow_t_to_sigma, sigma_to_flow_t
from fastdiff.grids import vp_sigma, vp_time
from fastdiff.validation import check_flag, check_number, check_positive, values_checkable

_PREDICTIONS = ("eps", "v")
FLOW_PREDICTIONS = ("velocity", "x0", "eps")


def sigma_batch(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sigma (a float, a 0-d tensor or a [B] tensor) as a [B] tensor in the working dtype of x, on x's device."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape [B, ...], got {got}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, torch.Tensor)):
        raise TypeError(f"sigma must be a float, a 0-d tensor or a [B] tensor, got {type(sigma).__name__}")
    s = torch.as_tensor(sigma, dtype=working_dtype(x.dtype), device=x.device)
    if s.ndim == 0:
        return s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float, a 0-d tensor or a [B] = [{x.shape[0]}] tensor, got shape {tuple(s.shape)}")
    return s


def _as_float64(value: float | torch.Tensor) -> torch.Tensor:
    """A float64 tensor of a number or tensor (Python numbers never pass through float32)."""
    return value.to(torch.float64) if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float64)


def _check_betas(beta_min: float, beta_d: float) -> tuple[float, float]:
    """The linear-beta VP SDE's beta(t) = beta_min + beta_d t must be non-negative and not identically 0."""
    for name, value in (("beta_min", beta_min), ("beta_d", beta_d)):
        if not check_number(value, name, low=-math.inf) >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if not beta_min + beta_d > 0:
        raise ValueError(f"beta_min + beta_d must be positive, got beta_min={beta_min}, beta_d={beta_d}")
    return float(beta_min), float(beta_d)


def _per_sample(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] broadcasting against x."""
    return s.view(-1, *([1] * (x.ndim - 1)))


def _checked_output(out: object, x: torch.Tensor, what: str) -> torch.Tensor:
    """The network's output, which must be a floating-point tensor shaped like x; `what` names the network."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    if not out.dtype.is_floating_point:
        raise TypeError(f"{what} must return a floating-point tensor, got dtype {out.dtype}")
    return out


def _flow_t_batch(t: float | torch.Tensor, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """A flow time (a float, a 0-d or a [B] tensor) as a [B] tensor like `sigma_batch`, refused outside [0, 1];
    `name` is the argument that holds it."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a float, a 0-d tensor or a [B] tensor, got {type(t).__name__}")
    tb = sigma_batch(t, x)
    if values_checkable(tb) and not bool(((tb >= 0) & (tb <= 1)).all()):
        bad = tb[~((tb >= 0) & (tb <= 1))][0].item()
        raise ValueError(f"{name} must lie in [0, 1] (flow time: x_t = (1 - t) x0 + t eps), got {bad!r}")
    return tb


def _check_sigma_batch(s: torch.Tensor) -> torch.Tensor:
    if values_checkable(s) and not bool((s >= 0).all()):
        bad = s[~(s >= 0)][0].item()
        raise ValueError(f"sigma must be non-negative (inf allowed: the flow time t = 1), got {bad!r}")
    return s


def flow_to_ve(x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """The flow state x_t at time t in [0, 1] as fastdiff's VE state x = x_t/(1 - t) at sigma = t/(1 - t); at t = 1
    (sigma = inf) the VE state is the unit noise x_t itself. Computed in the working dtype, returned in x_t's dtype."""
    tb = _per_sample(_flow_t_batch(t, x_t), x_t)
    scale = torch.where(tb == 1, 1.0, 1.0 / (1.0 - tb))
    return (x_t.to(tb.dtype) * scale).to(x_t.dtype)


def ve_to_flow(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """fastdiff's VE state x at sigma >= 0 as the flow state x_t = x/(1 + sigma) at t = sigma/(1 + sigma); at sigma = inf
    x is the unit noise and x_t = x. The inverse of `flow_to_ve`."""
    sb = _per_sample(_check_sigma_batch(sigma_batch(sigma, x)), x)
    scale = torch.where(torch.isinf(sb), 1.0, 1.0 / (1.0 + sb))
    return (x.to(sb.dtype) * scale).to(x.dtype)


class _VPDenoiser(nn.Module):
    """Shared body of the VP wrappers: subclasses give the time map `sigma_to_t`."""

    def __init__(self, model: Callable[..., torch.Tensor], prediction: str):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_vp, t, **extra_args), got {type(model).__name__}")
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {prediction!r}")
        self.model = model
        self.prediction = prediction

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, **extra_args) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        sb = _per_sample(s, x)
        at_infinity = torch.isinf(sb)
        alpha = torch.rsqrt(1.0 + sb**2)
        t = self.sigma_to_t(s)
        t = t.to(s.dtype) if t.is_floating_point() else t
        # x_vp = alpha x; at sigma = inf the state is the unit noise n = x_vp itself
        out = self.model((x * torch.where(at_infinity, 1.0, alpha)).to(x.dtype), t, **extra_args)
        out = _checked_output(out, x, "model").to(s.dtype)
        if self.prediction == "eps":
            denoised = x - sb * out
        else:  # alpha^2 x - sigma alpha v, which tends to -v(n, t) as sigma -> inf with x = sigma n
            keep = torch.where(at_infinity, 0.0, alpha**2)
            gain = torch.where(at_infinity, 1.0, sb * alpha)
            denoised = keep * x - gain * out
        return denoised.to(x.dtype)


class _DiscreteVPDenoiser(_VPDenoiser):
    """A model trained on T discrete timesteps with cumulative products alphas_cumprod[t] (decreasing in t).

    Table: sigma_t = sqrt((1 - acp_t) / acp_t), increasing. A continuous sigma maps to the fractional
    timestep that interpolates log sigma linearly between neighbouring entries (clamped to [0, T - 1]);
    with `quantize=True` to the nearest timestep in log sigma, passed to the model as an integer tensor.
    """

    def __init__(self, model: Callable[..., torch.Tensor], alphas_cumprod: object, prediction: str, quantize: bool = False):
        super().__init__(model, prediction)
        try:
            acp = (
                alphas_cumprod.detach()
                if isinstance(alphas_cumprod, torch.Tensor)
                else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"alphas_cumprod must be a 1-D tensor or sequence, got {type(alphas_cumprod).__name__}") from err
        if not acp.dtype.is_floating_point or acp.ndim != 1 or acp.shape[0] < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D float tensor of T >= 2 entries, got dtype {acp.dtype}, "
                             f"shape {tuple(acp.shape)}")
        acp = acp.to("cpu", torch.float64)
        if not bool(((acp > 0) & (acp < 1)).all()):
            raise ValueError(f"alphas_cumprod entries must lie in (0, 1), got {acp.min().item():g}..{acp.max().item():g}")
        if not bool((acp[1:] < acp[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (noise grows with the timestep)")
        self.quantize = check_flag(quantize, "quantize")
        self._sigmas = ((1.0 - acp) / acp).sqrt()
        self._log_sigmas = self._sigmas.log()
        self._tables: dict[torch.device, torch.Tensor] = {}

    @property
    def sigmas(self) -> torch.Tensor:
        """The table sigma_t for t = 0..T-1, float64 on the CPU, increasing."""
        return self._sigmas

    @property
    def sigma_min(self) -> float:
        return self._sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self._sigmas[-1].item()

    def _log_table(self, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = self._log_sigmas.to(device)
        return self._tables[device]

    def sigma_to_t(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """Fractional timestep (float64) of sigma, linear in log sigma between table entries; int64 when quantized."""
        log_sigma = _as_float64(sigma).log()
        table = self._log_table(log_sigma.device)
        low = (torch.searchsorted(table, log_sigma.contiguous(), right=True) - 1).clamp(0, table.shape[0] - 2)
        w = ((log_sigma - table[low]) / (table[low + 1] - table[low])).clamp(0.0, 1.0)
        t = low + w
        return t.round().long() if self.quantize else t

    def t_to_sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        """sigma (float64) at a fractional timestep t in [0, T - 1], interpolating log sigma linearly."""
        t = _as_float64(t)
        last = self._log_sigmas.shape[0] - 1
        if not bool(((t >= 0) & (t <= last)).all()):
            raise ValueError(f"t must lie in [0, {last}], got {t.min().item():g}..{t.max().item():g}")
        table = self._log_table(t.device)
        low = t.floor().long().clamp(max=last - 1)
        w = t - low
        return ((1.0 - w) * table[low] + w * table[low + 1]).exp()


class VPEpsDenoiser(_DiscreteVPDenoiser):
    """Discrete DDPM-style eps-prediction model `model(x_vp, t)`: D = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma))."""

    def __init__(self, model: Callable[..., torch.Tensor], alphas_cumprod: object, quantize: bool = False):
        super().__init__(model, alphas_cumprod, "eps", quantize)

    @classmethod
    def continuous(
        cls, model: Callable[..., torch.Tensor], beta_min: float = 0.1, beta_d: float = 19.9, t_min: float = 1e-3
    ) -> ContinuousVPEpsDenoiser:
        """The continuous-time counterpart, `ContinuousVPEpsDenoiser(model, beta_min, beta_d, t_min)`."""
        return ContinuousVPEpsDenoiser(model, beta_min, beta_d, t_min)


class VPVDenoiser(_DiscreteVPDenoiser):
    """Discrete v-prediction model `model(x_vp, t)`: D = alpha^2 x - sigma alpha v, alpha = 1 / sqrt(1 + sigma^2)."""

    def __init__(self, model: Callable[..., torch.Tensor], alphas_cumprod: object, quantize: bool = False):
        super().__init__(model, alphas_cumprod, "v", quantize)


class ContinuousVPEpsDenoiser(_VPDenoiser):
    """Eps-prediction model of the linear-beta VP SDE, `model(x_vp, t)` with continuous t in [t_min, 1]
    (Song et al. 2021): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), D = x - sigma eps."""

    def __init__(self, model: Callable[..., torch.Tensor], beta_min: float = 0.1, beta_d: float = 19.9, t_min: float = 1e-3):
        super().__init__(model, "eps")
        if not 0 < check_number(t_min, "t_min", low=-math.inf) < 1:
            raise ValueError(f"t_min must be in (0, 1), got {t_min!r}")
        self.beta_min, self.beta_d = _check_betas(beta_min, beta_d)
        self.t_min = float(t_min)

    @property
    def sigma_min(self) -> float:
        return self.t_to_sigma(self.t_min).item()

    @property
    def sigma_max(self) -> float:
        return self.t_to_sigma(1.0).item()

    def sigma_to_t(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact inverse of sigma(t) (float64): the model is evaluated at the true time of any sigma."""
        return vp_time(_as_float64(sigma), self.beta_min, self.beta_d)

    def t_to_sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        return vp_sigma(_as_float64(t), self.beta_min, self.beta_d)


class ScoreDenoiser(nn.Module):
    """A score model as a denoiser: D = x + sigma^2 s.

    parameterization "ve": `score_fn(x, sigma)` is grad log q_sigma(x) directly.
    parameterization "vp": `score_fn(x_vp, t)` is the score in VP coordinates at the time t of the linear-beta
    VP SDE (`beta_min`, `beta_d`); since x_vp = alpha x, the VE score is alpha s_vp(alpha x, t).
    """

    def __init__(
        self,
        score_fn: Callable[..., torch.Tensor],
        parameterization: str = "ve",
        beta_min: float = 0.1,
        beta_d: float = 19.9,
    ):
        super().__init__()
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(x, sigma, **extra_args), got {type(score_fn).__name__}")
        if parameterization not in ("ve", "vp"):
            raise ValueError(f"parameterization must be 've' or 'vp', got {parameterization!r}")
        self.score_fn = score_fn
        self.parameterization = parameterization
        self.beta_min, self.beta_d = _check_betas(beta_min, beta_d)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, **extra_args) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        sb = _per_sample(s, x)
        if self.parameterization == "ve":
            score = self.score_fn(x, s, **extra_args)
        else:
            alpha = torch.rsqrt(1.0 + sb**2)
            t = vp_time(s, self.beta_min, self.beta_d)
            score = alpha * self.score_fn((x * alpha).to(x.dtype), t, **extra_args).to(s.dtype)
        if not isinstance(score, torch.Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        return (x + sb**2 * score.to(s.dtype)).to(x.dtype)


def _per_sample_arg(value: object, x: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == x.shape[0]


class GroupedDenoiser(nn.Module):
    """Timestep-grouped denoiser (TDC, docs/ALGORITHMS.md section 9): D(x, sigma) = D_g(x, sigma) for the group g of sigma.

    `groups` is a sequence of `(sigma_lo, sigma_hi, denoiser)` that tile one interval without gaps or overlaps
    (in any order; sorted here by sigma_lo): group g covers sigma_lo <= sigma < sigma_hi, the highest group also
    its sigma_hi (which may be inf). Each sample of a [B] sigma is routed on its own; a batch that mixes groups is
    partitioned, each part goes through its group's denoiser, and the outputs are scattered back in order
    (tensor keyword arguments whose first dimension is B, e.g. class labels, are partitioned with it).
    A sigma outside [lowest sigma_lo, highest sigma_hi] raises ValueError.
    Attributes: `edges` (the G + 1 increasing boundaries), `denoisers` (ordered by sigma).
    """

    def __init__(self, groups: object):
        super().__init__()
        try:
            items = [tuple(g) for g in groups]  # type: ignore[union-attr]
        except TypeError as err:
            raise TypeError(f"groups must be a sequence of (sigma_lo, sigma_hi, denoiser), got {type(groups).__name__}") from err
        if not items:
            raise ValueError("groups must hold at least one (sigma_lo, sigma_hi, denoiser)")
        for i, item in enumerate(items):
            if len(item) != 3:
                raise ValueError(f"groups[{i}] must be (sigma_lo, sigma_hi, denoiser), got {len(item)} entries")
            lo, hi, model = item
            for name, v in (("sigma_lo", lo), ("sigma_hi", hi)):
                check_number(v, f"groups[{i}] {name}", allow_inf=True)
            if not lo < hi:
                raise ValueError(f"groups[{i}] needs sigma_lo < sigma_hi, got {lo} and {hi}")
            if not callable(model):
                raise TypeError(f"groups[{i}] denoiser must be callable as denoiser(x, sigma), got {type(model).__name__}")
        items.sort(key=lambda g: g[0])
        for (_, hi, _), (lo, _, _) in zip(items[:-1], items[1:], strict=True):
            if lo > hi:
                raise ValueError(f"groups leave a gap between sigma {hi} and {lo}")
            if lo < hi:
                raise ValueError(f"groups overlap between sigma {lo} and {hi}")
        self.edges = [float(items[0][0])] + [float(g[1]) for g in items]
        models = [g[2] for g in items]
        self.denoisers = nn.ModuleList(models) if all(isinstance(m, nn.Module) for m in models) else models

    def group_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """The group index (int64) of each sigma; ValueError outside the covered interval."""
        if bool(((sigma < self.edges[0]) | (sigma > self.edges[-1]) | torch.isnan(sigma)).any()):
            bad = sigma[(sigma < self.edges[0]) | (sigma > self.edges[-1]) | torch.isnan(sigma)][0].item()
            raise ValueError(f"sigma {bad!r} lies outside the groups' range [{self.edges[0]}, {self.edges[-1]}]")
        inner = torch.tensor(self.edges[1:-1], dtype=sigma.dtype, device=sigma.device)
        return torch.bucketize(sigma.contiguous(), inner, right=True)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, **extra_args) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        index = self.group_of(s)
        present = torch.unique(index).tolist()
        if len(present) == 1:
            return self.denoisers[present[0]](x, s, **extra_args).to(x.dtype)
        out = torch.empty_like(x)
        for g in present:
            rows = (index == g).nonzero().squeeze(1)
            args = {k: v[rows] if _per_sample_arg(v, x) else v for k, v in extra_args.items()}
            out[rows] = self.denoisers[g](x[rows], s[rows], **args).to(x.dtype)
        return out


class _FlowModel(nn.Module):
    """Shared body of the flow wrappers: the options, and the model's prediction at (x_t, t) turned into x0."""

    def __init__(self, model: Callable[..., torch.Tensor], prediction: str = "velocity", time_scale: float = 1.0):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, **extra_args), got {type(model).__name__}")
        if prediction not in FLOW_PREDICTIONS:
            raise ValueError(f"prediction must be one of {FLOW_PREDICTIONS}, got {prediction!r}")
        self.model = model
        self.prediction = prediction
        self.time_scale = check_positive(time_scale, "time_scale")

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor, like: torch.Tensor, extra_args: dict) -> torch.Tensor:
        """x0 from the model at x_t (working dtype) and the [B] flow time t; the model sees x_t in like's dtype."""
        out = self.model(x_t.to(like.dtype), t * self.time_scale, **extra_args)
        out, tb = _checked_output(out, like, f"{type(self).__name__}'s model").to(t.dtype), _per_sample(t, like)
        if self.prediction == "velocity":
            return x_t - tb * out
        if self.prediction == "x0":
            return out
        return (x_t - tb * out) / (1.0 - tb)

    def _refuse_eps_at_one(self, at_one: torch.Tensor, where: str) -> None:
        if self.prediction == "eps" and values_checkable(at_one) and bool(at_one.any()):
            raise ValueError(f"{type(self).__name__} with prediction='eps' has no denoiser at {where}: "
                             "D = (x_t - t eps)/(1 - t) divides by 0; use a velocity or x0 model or start below t = 1")


class FlowDenoiser(_FlowModel):
    """A rectified-flow model `model(x_t, t * time_scale, **extra_args)` (SD3, Flux, Wan) as a VE denoiser
    (docs/ALGORITHMS.md section 14). The model sees x_t = (1 - t) x0 + t eps at t = sigma/(1 + sigma), a [B] tensor,
    with x_t = x/(1 + sigma) (x itself, the unit noise, at sigma = inf), and its prediction converts to
        velocity (v = eps - x0):  D = x_t - t v
        x0:                       D = the output
        eps:                      D = (x_t - t eps)/(1 - t)   (no limit at t = 1: sigma = inf is refused)
    `time_scale` multiplies t for a network trained on another time unit (1000 for diffusers' flow transformers).
    Arithmetic in the working dtype of x (`fastdiff.dtypes`); the model gets x_t in x's dtype, D comes back in it.
    """

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, **extra_args) -> torch.Tensor:
        s = _check_sigma_batch(sigma_batch(sigma, x))
        self._refuse_eps_at_one(torch.isinf(s), "sigma = inf (t = 1)")
        x_t = ve_to_flow(x.to(s.dtype), s)
        return self._x0(x_t, sigma_to_flow_t(s), x, extra_args).to(x.dtype)


class FlowTimeDenoiser(_FlowModel):
    """A rectified-flow model in its own coordinates (x_t, t), for the deterministic solvers (docs/ALGORITHMS.md
    section 27): the solver's state is x_t = (1 - t) x0 + t eps itself and its sigma is the flow time t in [0, 1];
    returns the x0 prediction D_t(x_t, t) from `model(x_t, t * time_scale, **extra_args)`:
        velocity:  D_t = x_t - t v      x0:  D_t = the output      eps:  D_t = (x_t - t eps)/(1 - t)  (t = 1 refused)
    Then dx_t/dt = (x_t - D_t)/t, the VE probability-flow ODE with sigma := t, so every ODE solver runs unchanged on a
    grid in t from 1 to 0: `sigma_to_flow_t(fastdiff.get_sigmas("flow", n, ...))` (exact ends: inf -> 1, 0 -> 0), the
    ComfyUI convention (its CONST sampling's sigma is t). A multistep rule then extrapolates in t, not in VE sigma: a
    different method from the same solver through `FlowDenoiser`. The stochastic solvers' noise assumes x = x0 +
    sigma eps, which x_t is not: `fastdiff.sample` refuses them with this wrapper (`flow_time_coordinates`); use
    `FlowDenoiser` for stochastic sampling. Same options as `FlowDenoiser`; arithmetic in the working dtype of x_t.
    """

    flow_time_coordinates = True  # read by fastdiff.sample, which refuses stochastic solvers on this wrapper

    def forward(self, x_t: torch.Tensor, sigma: float | torch.Tensor, **extra_args) -> torch.Tensor:
        t = _flow_t_batch(sigma, x_t, "sigma")
        self._refuse_eps_at_one(t == 1, "sigma = t = 1")
        return self._x0(x_t.to(t.dtype), t, x_t, extra_args).to(x_t.dtype)


__all__ = [
    "ContinuousVPEpsDenoiser",
    "FlowDenoiser",
    "FlowTimeDenoiser",
    "GroupedDenoiser",
    "ScoreDenoiser",
    "VPEpsDenoiser",
    "VPVDenoiser",
    "flow_t_to_sigma",
    "flow_to_ve",
    "sigma_batch",
    "sigma_to_flow_t",
    "ve_to_flow",
]
