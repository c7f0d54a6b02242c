"""Exact Gaussian-mixture targets under sigma-noise: test oracles and demos (docs/ALGORITHMS.md section 10).

Data x0 ~ sum_k pi_k N(mu_k, Sigma_k); the noised point is x = x0 + sigma eps (VE / EDM form), so

    q_sigma(x) = sum_k pi_k N(x; mu_k, C_k),   C_k = Sigma_k + sigma^2 I,
    score      = -sum_k r_k C_k^-1 (x - mu_k),  r_k = responsibilities (softmax of the component log-densities),
    D(x, sigma) = x + sigma^2 score = sum_k r_k (mu_k + Sigma_k C_k^-1 (x - mu_k))   (Tweedie).

Everything is computed in float64 through the cached eigendecomposition Sigma_k = U_k diag(lambda_k) U_k^T,
so that C_k^-1 = U_k diag(1 / (lambda_k + sigma^2)) U_k^T is exact for any (per-sample) sigma without a
factorisation per call; isotropic and diagonal covariances skip the rotation.

As a rectified-flow model (x_t = (1 - t) x0 + t eps, docs/ALGORITHMS.md section 14) component k gives
x_t ~ N((1 - t) mu_k, C_k(t)), C_k(t) = (1 - t)^2 Sigma_k + t^2 I, and the exact velocity
v(x_t, t) = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t is, per eigen-direction with y_k = U_k^T (x_t - (1 - t) mu_k),

    v = sum_k r_k (U_k diag((t - (1 - t) lambda_k) / C_k(t)) y_k - mu_k),

finite on all of [0, 1]: -x_t at t = 0, x_t - E[x0] at t = 1 (there r_k = pi_k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastdiff.validation import FLOAT_DTYPES, check_positive_int, values_checkable

Sigma = float | torch.Tensor

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_HALF = math.log(0.5)


@dataclass(frozen=True)
class _Params:
    """The mixture's tensors on one device: means [K, d], eigenvalues [K, d], eigenvectors [K, d, d] or None."""

    means: torch.Tensor
    lam: torch.Tensor
    rot: torch.Tensor | None
    log_weights: torch.Tensor


def _float64(value: object, name: str) -> torch.Tensor:
    try:  # Python numbers straight to float64: the default float32 would round them first
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or nested sequence of numbers, got {type(value).__name__}") from err
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t


class GaussianMixture:
    """sum_k pi_k N(mu_k, Sigma_k) with exact log-density, score, denoiser, samplers and ODE maps under noise.

    means: [K, d]. Covariances: isotropic `stds` ([K] or a scalar, Sigma_k = std_k^2 I) or full `covs`
    ([K, d, d], symmetric positive definite); exactly one of the two. weights: [K] positive, normalised
    here (default uniform).

    Methods take x as [B, d] in any float dtype and sigma as a float, a 0-d tensor or a [B] tensor; they
    compute in float64 and return tensors shaped like x (and the Jacobian) in x's dtype, log-densities
    and responsibilities in float64. `gm.denoiser` is a ready denoiser for `fastdiff.sample`.
    Attributes (float64, CPU): `means`, `covs` [K, d, d], `weights` (normalised), `stds` (None for full covs).
    """

    def __init__(
        self,
        means: object,
        stds: object | None = None,
        weights: object | None = None,
        covs: object | None = None,
    ):
        means = _float64(means, "means")
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape [K, d] with K, d >= 1, got shape {tuple(means.shape)}")
        k, d = means.shape
        if (stds is None) == (covs is None):
            raise ValueError("give exactly one of stds (isotropic components) or covs (full covariances), "
                             f"got stds={'None' if stds is None else 'set'}, covs={'None' if covs is None else 'set'}")
        if stds is not None:
            stds = _float64(stds, "stds")
            if stds.ndim == 0:
                stds = stds.expand(k).clone()
            if stds.shape != (k,):
                raise ValueError(f"stds must be a scalar or have shape [K] = [{k}], got shape {tuple(stds.shape)}")
            if bool((stds <= 0).any()):
                raise ValueError(f"stds must be positive, got minimum {stds.min().item():g}")
            lam, rot = (stds**2)[:, None].expand(k, d).clone(), None
            covs = torch.diag_embed(lam)
        else:
            covs = _float64(covs, "covs")
            if covs.shape != (k, d, d):
                raise ValueError(f"covs must have shape [K, d, d] = [{k}, {d}, {d}], got shape {tuple(covs.shape)}")
            asym = (covs - covs.mT).abs().amax().item()
            if asym > 1e-6 * covs.abs().amax().item():  # above float32 rounding of a product A A^T
                raise ValueError(f"covs must be symmetric, got max |C - C^T| = {asym:g}")
            covs = 0.5 * (covs + covs.mT)
            diagonal = torch.diagonal(covs, dim1=-2, dim2=-1)
            if torch.equal(covs, torch.diag_embed(diagonal)):
                lam, rot = diagonal.clone(), None
            else:
                lam, rot = torch.linalg.eigh(covs)
            bad = lam.amin(dim=-1)
            if bool((bad <= 0).any()):
                i = int(torch.argmin(bad))
                raise ValueError(f"covs must be positive definite, got component {i} with smallest eigenvalue {bad[i].item():g}")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            weights = _float64(weights, "weights")
            if weights.shape != (k,):
                raise ValueError(f"weights must have shape [K] = [{k}] (one per mean), got shape {tuple(weights.shape)}")
            if bool((weights <= 0).any()):
                raise ValueError(f"weights must be positive, got minimum {weights.min().item():g}")
            weights = weights / weights.sum()
        self.means, self.covs, self.weights = means, covs, weights
        self.stds = stds
        self._lam, self._rot = lam, rot
        self._cache: dict[torch.device, _Params] = {}

    # ----------------------------------------------------------------- constructors and properties
    @classmethod
    def ring(cls, k: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
        """k equal-weight isotropic 2-D components evenly spaced on a circle of `radius`."""
        check_positive_int(k, "k")
        angles = 2.0 * math.pi * torch.arange(k, dtype=torch.float64) / k
        return cls(radius * torch.stack([angles.cos(), angles.sin()], dim=-1), stds=std)

    @classmethod
    def gaussian(cls, mean: object, cov_or_std: object) -> GaussianMixture:
        """One Gaussian N(mean, Sigma): `mean` [d] (or a scalar for d = 1); `cov_or_std` a scalar std
        (Sigma = std^2 I) or a [d, d] covariance."""
        mean = _float64(mean, "mean").reshape(-1)
        spread = _float64(cov_or_std, "cov_or_std")
        d = mean.shape[0]
        if spread.ndim == 0:
            return cls(mean[None], stds=spread)
        if spread.shape != (d, d):
            raise ValueError(f"cov_or_std must be a scalar std or a [d, d] = [{d}, {d}] covariance, got {tuple(spread.shape)}")
        return cls(mean[None], covs=spread[None])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        """E[x0] = sum_k pi_k mu_k, [d] float64 (noise does not move it)."""
        return self.weights @ self.means

    def cov_at(self, sigma: float = 0.0) -> torch.Tensor:
        """Cov[x0 + sigma eps] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - mean mean^T + sigma^2 I, [d, d] float64."""
        sigma = _check_scalar_sigma(sigma, "sigma")
        centred = self.means - self.mean
        between = torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        within = torch.einsum("k,kij->ij", self.weights, self.covs)
        return within + between + sigma**2 * torch.eye(self.dim, dtype=torch.float64)

    # ----------------------------------------------------------------- exact quantities under noise
    def log_prob(self, x: torch.Tensor, sigma: Sigma = 0.0) -> torch.Tensor:
        """log q_sigma(x) = logsumexp_k (log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I)), [B] float64."""
        xd, s2 = self._inputs(x, sigma)
        _, _, logits = self._components(xd, s2)
        return torch.logsumexp(logits, dim=-1)

    def responsibilities(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """r_k(x) = P(component k | x_sigma = x), [B, K] float64."""
        xd, s2 = self._inputs(x, sigma)
        return torch.softmax(self._components(xd, s2)[2], dim=-1)

    def score(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """grad_x log q_sigma(x) = -sum_k r_k C_k^-1 (x - mu_k), shaped and typed like x."""
        xd, s2 = self._inputs(x, sigma)
        y, v, logits = self._components(xd, s2)
        r = torch.softmax(logits, dim=-1)
        return self._to_input_coords(r[..., None] * (-y / v), x.device).sum(1).to(x.dtype)

    def denoiser(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """D(x, sigma) = E[x0 | x] = x + sigma^2 score = sum_k r_k (mu_k + Sigma_k C_k^-1 (x - mu_k))."""
        xd, s2 = self._inputs(x, sigma)
        y, v, logits = self._components(xd, s2)
        r = torch.softmax(logits, dim=-1)
        p = self._params(x.device)
        shrunk = self._to_input_coords(r[..., None] * (p.lam / v) * y, x.device).sum(1)
        return (r @ p.means + shrunk).to(x.dtype)

    def score_jacobian(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """d score / dx = -sum_k r_k C_k^-1 + sum_k r_k m_k m_k^T - s s^T with m_k = -C_k^-1 (x - mu_k), [B, d, d].

        The last two terms are evaluated as the r-weighted covariance of the m_k, sum_k r_k (m_k - s)(m_k - s)^T.
        """
        xd, s2 = self._inputs(x, sigma)
        y, v, logits = self._components(xd, s2)
        r = torch.softmax(logits, dim=-1)
        m = self._to_input_coords(-y / v, x.device)
        s = (r[..., None] * m).sum(1)
        centred = m - s[:, None]
        spread = torch.einsum("bk,bki,bkj->bij", r, centred, centred)
        p = self._params(x.device)
        precision = r[..., None] / v
        if p.rot is None:
            inverse = torch.diag_embed(precision.sum(1))
        else:
            inverse = torch.einsum("kij,bkj,klj->bil", p.rot, precision, p.rot)
        return (spread - inverse).to(x.dtype)

    # ----------------------------------------------------------------- the mixture as a flow model
    def flow_velocity(self, x_t: torch.Tensor, t: Sigma) -> torch.Tensor:
        """v(x_t, t) = E[eps - x0 | x_t] = sum_k r_k (U_k diag((t - (1 - t) lambda_k) / C_k) y_k - mu_k), like x_t.

        t in [0, 1] (a float, a 0-d tensor or a [B] tensor); exact at t = 1 (x_t - E[x0]) and t = 0 (-x_t).
        The bound method is a velocity network `model(x_t, t)` for `fastdiff.models.FlowDenoiser`.
        """
        xd, t = self._flow_inputs(x_t, t)
        y, c, logits = self._components(xd, t**2, 1 - t)
        r = torch.softmax(logits, dim=-1)
        p = self._params(x_t.device)
        gain = (t[:, None, None] - (1 - t)[:, None, None] * p.lam) / c
        return (self._to_input_coords(r[..., None] * gain * y, x_t.device).sum(1) - r @ p.means).to(x_t.dtype)

    def flow_ode_solution(self, x_t: torch.Tensor, t_from: Sigma, t_to: Sigma, steps: int = 4096) -> torch.Tensor:
        """The exact flow-ODE map x_t(t_from) -> x_t(t_to) of dx_t/dt = v(x_t, t), like x_t; t_from = 1 allowed.

        One Gaussian (K = 1): per eigen-direction x_t - (1 - t) mu = sqrt(C(t_to) / C(t_from)) (x_t(t_from) - (1 - t_from) mu).
        A mixture has no closed form: a reference solve, `steps` classical Runge-Kutta (RK4) steps uniform in t in
        float64 (4096 steps: error below 1e-10 on the ring and 16-D test targets, checked by halving the step).
        """
        check_positive_int(steps, "steps")
        xd, s = self._flow_inputs(x_t, t_from, "t_from")
        s, t = torch.broadcast_tensors(s, self._flow_inputs(x_t, t_to, "t_to")[1])
        if self.n_components == 1:
            p = self._params(x_t.device)
            y, c_from, _ = self._components(xd, s**2, 1 - s)
            c_to = (1 - t[:, None, None]) ** 2 * p.lam + (t**2)[:, None, None]
            moved = self._to_input_coords((c_to / c_from).sqrt() * y, x_t.device)[:, 0]
            return ((1 - t)[:, None] * p.means[0] + moved).to(x_t.dtype)
        h = ((t - s) / steps)[:, None]
        x = xd.detach()
        for n in range(steps):
            now = s + (t - s) * (n / steps)
            half, end = now + 0.5 * h[:, 0], s + (t - s) * ((n + 1) / steps)
            k1 = self.flow_velocity(x, now)
            k2 = self.flow_velocity(x + 0.5 * h * k1, half)
            k3 = self.flow_velocity(x + 0.5 * h * k2, half)
            k4 = self.flow_velocity(x + h * k3, end)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x.to(x_t.dtype)

    # ----------------------------------------------------------------- exact samplers
    def sample(self, n: int, generator: torch.Generator | None = None, sigma: float = 0.0) -> torch.Tensor:
        """n exact draws of x0 + sigma eps, [n, d] float64 on the generator's device (CPU by default)."""
        check_positive_int(n, "n")
        sigma = _check_scalar_sigma(sigma, "sigma")
        device = generator.device if generator is not None else torch.device("cpu")
        p = self._params(device)
        comps = torch.multinomial(p.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, device=device, generator=generator)
        out = self._place(p, comps, z * p.lam[comps].sqrt())
        if sigma > 0:
            out = out + sigma * torch.randn(n, self.dim, dtype=torch.float64, device=device, generator=generator)
        return out

    def posterior_sample(
        self, x: torch.Tensor, sigma: Sigma, sigma_next: Sigma, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One exact draw of x_{sigma_next} | x_sigma = x for sigma > sigma_next >= 0 (the ground-truth ancestral step).

        Pick component k with probability r_k(x); given k, per eigen-direction with a = (lambda + t^2)/(lambda + s^2):
        mean mu + a (x - mu), variance (lambda + t^2)(s^2 - t^2)/(lambda + s^2), where s = sigma, t = sigma_next.
        """
        xd, s2 = self._inputs(x, sigma)
        t = self._sigma(sigma_next, xd.shape[0], x.device, "sigma_next")
        s = s2.sqrt()
        if bool((t >= s).any()):
            raise ValueError("sigma_next must be smaller than sigma (a reverse step lowers the noise level)")
        y, v, logits = self._components(xd, s2)
        p = self._params(x.device)
        gap = ((s - t) * (s + t))[:, None, None]
        near = p.lam + (t**2)[:, None, None]
        mean, var = y * (near / v), (near * gap / v).expand_as(y)
        u = torch.rand(xd.shape[0], 1, dtype=torch.float64, device=x.device, generator=generator)
        comps = (torch.softmax(logits, dim=-1).cumsum(-1) < u).sum(-1).clamp(max=self.n_components - 1)
        z = torch.randn(xd.shape, dtype=torch.float64, device=x.device, generator=generator)
        rows = torch.arange(xd.shape[0], device=x.device)
        eig = mean[rows, comps] + var[rows, comps].sqrt() * z
        return self._place(p, comps, eig).to(x.dtype)

    # ----------------------------------------------------------------- exact probability-flow ODE map
    def ode_solution(self, x: torch.Tensor, sigma_from: Sigma, sigma_to: Sigma) -> torch.Tensor:
        """The exact probability-flow ODE map x(sigma_from) -> x(sigma_to) of dx/dsigma = (x - D(x, sigma))/sigma.

        One Gaussian (K = 1): per eigen-direction x(t) - mu = sqrt((lambda + t^2)/(lambda + s^2)) (x(s) - mu).
        1-D mixture (d = 1): the quantile map F_t^-1(F_s(x)), solved by safeguarded Newton in float64.
        """
        xd, s2 = self._inputs(x, sigma_from, "sigma_from")
        t2 = self._sigma(sigma_to, xd.shape[0], x.device, "sigma_to") ** 2
        if self.n_components == 1:
            p = self._params(x.device)
            y, v, _ = self._components(xd, s2)
            scale = ((p.lam + t2[:, None, None]) / v).sqrt()
            return (p.means[0] + self._to_input_coords(scale * y, x.device)[:, 0]).to(x.dtype)
        if self.dim == 1:
            return self._quantile_map(xd[:, 0], s2, t2)[:, None].to(x.dtype)
        raise NotImplementedError(
            "ode_solution has a closed form only for one Gaussian (K = 1) or a 1-D mixture (d = 1), "
            f"got K = {self.n_components}, d = {self.dim}"
        )

    def _log_tail(self, y: torch.Tensor, s2: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log F(y), or log(1 - F(y)) where `upper`; log density) of the 1-D mixture under noise, y [B]."""
        p = self._params(y.device)
        sd = (p.lam[:, 0] + s2[:, None]).sqrt()
        z = (y[:, None] - p.means[:, 0]) / sd
        level = torch.logsumexp(p.log_weights + torch.special.log_ndtr(torch.where(upper[:, None], -z, z)), dim=-1)
        dens = torch.logsumexp(p.log_weights - 0.5 * z**2 - sd.log(), dim=-1) - 0.5 * _LOG_2PI
        return level, dens

    def _quantile_map(self, x: torch.Tensor, s2: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """Solve F_t(y) = F_s(x) in whichever tail x lies (log F below the median, log(1 - F) above it, so
        far-tail points keep full relative precision): bracket, then Newton safeguarded by bisection,
        iterating only on the points that still move."""
        x = x.detach()
        lower = self._log_tail(x, s2, torch.zeros_like(x, dtype=torch.bool))[0]
        upper = lower > _LOG_HALF
        target = torch.where(upper, self._log_tail(x, s2, torch.ones_like(upper))[0], lower)
        t2 = t2.expand_as(x)

        def f(y, rows):  # increasing in y, zero at the solution; and its derivative
            level, dens = self._log_tail(y, t2[rows], upper[rows])
            gap = level - target[rows]
            return torch.where(upper[rows], -gap, gap), (dens - level).exp()

        centre, var0 = self.mean.item(), self.cov_at(0.0).item()
        y = centre + ((var0 + t2) / (var0 + s2)).sqrt() * (x - centre)
        width = (var0 + t2).sqrt()
        lo, hi = y - width, y + width
        rows = torch.arange(x.shape[0], device=x.device)
        for _ in range(200):
            below, above = f(lo[rows], rows)[0] > 0, f(hi[rows], rows)[0] < 0
            lo[rows] = torch.where(below, lo[rows] - width[rows], lo[rows])
            hi[rows] = torch.where(above, hi[rows] + width[rows], hi[rows])
            width[rows] = 2.0 * width[rows]
            rows = rows[below | above]
            if rows.numel() == 0:
                break
        rows = torch.arange(x.shape[0], device=x.device)
        for _ in range(200):
            yr = y[rows]
            fy, dfy = f(yr, rows)
            lr = torch.where(fy <= 0, yr, lo[rows])
            hr = torch.where(fy >= 0, yr, hi[rows])
            newton = yr - fy / dfy
            inside = torch.isfinite(newton) & (newton >= lr) & (newton <= hr)
            y_next = torch.where(inside, newton, 0.5 * (lr + hr))
            y[rows], lo[rows], hi[rows] = y_next, lr, hr
            rows = rows[(y_next - yr).abs() > 1e-12 * (1.0 + yr.abs())]
            if rows.numel() == 0:
                break
        return y

    # ----------------------------------------------------------------- internals
    def _params(self, device: torch.device) -> _Params:
        if device not in self._cache:
            rot = None if self._rot is None else self._rot.to(device)
            self._cache[device] = _Params(self.means.to(device), self._lam.to(device), rot, self.weights.log().to(device))
        return self._cache[device]

    def _inputs(self, x: object, sigma: Sigma, name: str = "sigma") -> tuple[torch.Tensor, torch.Tensor]:
        """x as float64 [B, d] (autograd kept) and sigma^2 as float64 [B] or [1]."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape [B, d], got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, d] with d = {self.dim} (the mixture's dimension), got {tuple(x.shape)}")
        return x.to(torch.float64), self._sigma(sigma, x.shape[0], x.device, name) ** 2

    @staticmethod
    def _sigma(sigma: Sigma, batch: int, device: torch.device, name: str) -> torch.Tensor:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, torch.Tensor)):
            raise TypeError(f"{name} must be a float, a 0-d tensor or a [B] tensor, got {type(sigma).__name__}")
        s = torch.as_tensor(sigma, dtype=torch.float64, device=device).detach()
        if s.ndim > 1 or (s.ndim == 1 and s.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be a float, a 0-d tensor or a [B] = [{batch}] tensor, got shape {tuple(s.shape)}")
        s = s.reshape(-1)
        if values_checkable(s) and not bool((torch.isfinite(s) & (s >= 0)).all()):
            raise ValueError(f"{name} must be finite and non-negative, got {s.min().item():g}..{s.max().item():g}")
        return s

    def _flow_inputs(self, x: object, t: Sigma, name: str = "t") -> tuple[torch.Tensor, torch.Tensor]:
        """x as float64 [B, d] (autograd kept) and the flow time t as float64 [B] or [1], checked to lie in [0, 1]."""
        xd, _ = self._inputs(x, 0.0)
        t = self._sigma(t, xd.shape[0], x.device, name)
        if values_checkable(t) and bool((t > 1).any()):
            raise ValueError(f"{name} must lie in [0, 1] (flow time), got maximum {t.max().item():g}")
        return xd, t

    def _components(
        self, xd: torch.Tensor, s2: torch.Tensor, scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per component, in its eigenbasis: y = U_k^T (x - a mu_k) [B, K, d], variances v = a^2 lambda_k + sigma^2
        [B, K, d], and log pi_k + log N(x; a mu_k, a^2 Sigma_k + sigma^2 I) [B, K]; the data scale a ([B] or [1])
        is 1 unless given (a = 1 - t, sigma = t for the flow's x_t)."""
        p = self._params(xd.device)
        a = None if scale is None else scale[:, None, None]
        y = xd[:, None, :] - (p.means if a is None else a * p.means)
        if p.rot is not None:
            y = torch.einsum("bki,kij->bkj", y, p.rot)
        v = (p.lam if a is None else a**2 * p.lam) + s2[:, None, None]
        log_n = -0.5 * ((y**2 / v).sum(-1) + v.log().sum(-1) + self.dim * _LOG_2PI)
        return y, v, p.log_weights + log_n

    def _to_input_coords(self, w: torch.Tensor, device: torch.device) -> torch.Tensor:
        """U_k w_k for per-component eigen-coordinates w [B, K, d]."""
        rot = self._params(device).rot
        return w if rot is None else torch.einsum("kij,bkj->bki", rot, w)

    def _place(self, p: _Params, comps: torch.Tensor, eig: torch.Tensor) -> torch.Tensor:
        """mu_k + U_k w for one component index per row: comps [B], eigen-coordinates w [B, d]."""
        if p.rot is None:
            return p.means[comps] + eig
        out = torch.empty_like(eig)
        for k in range(self.n_components):
            rows = comps == k
            out[rows] = p.means[k] + eig[rows] @ p.rot[k].mT
        return out


def _check_scalar_sigma(sigma: object, name: str) -> float:
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = sigma.item()
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {sigma!r}")
    return float(sigma)
