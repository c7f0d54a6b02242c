"""Small denoiser networks for training, in EDM's preconditioned form (Karras et al. 2022, Table 1).

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),    c_noise = log(sigma) / 4,          sd = sigma_data.

`F` is an `MLPNet` (vectors [B, dim]) or a `UNetNet` (images [B, C, H, W]); both see the noise level through
fixed Fourier features of c_noise. Every width that pruning may shrink is a hidden width whose units map to
rows / columns of specific weights and carry no normalization:

- `MLPNet`, hidden layer i (width `widths[i]`): unit j is row j of `layers[i]` and `embs[i]` (weight and bias)
  and column j of the next layer (`layers[i + 1]` or `out`).
- `UNetNet`, residual block b (inner width `inner[b]`): channel j is output channel j of `blocks[b].conv1`
  and row j of `blocks[b].emb` (weight and bias), and input channel j of `blocks[b].conv2`. The residual
  stream (`widths`, one per resolution) keeps its GroupNorms and is never pruned, so group divisibility
  is never at stake.

Every net has `.config()` with `type(net)(**net.config())` rebuilding its architecture.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fastdiff.models import sigma_batch
from fastdiff.validation import check_positive, check_positive_int

KINDS = ("mlp", "unet")


def _check_widths(widths: object, name: str, length: int | None = None) -> tuple[int, ...]:
    try:
        out = tuple(widths)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(widths).__name__}") from err
    if not out or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {widths!r}")
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}: {widths!r}")
    return out


class FourierFeatures(nn.Module):
    """[cos(w_k c), sin(w_k c)] for fixed frequencies w_k geometric in [0.5, 64] (c_noise spans about [-1.6, 1.1]
    for sigma in [0.002, 80]); not trained, rebuilt identically from `dim`."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"emb_dim must be an even int >= 2, got {dim!r}")
        half = dim // 2
        freqs = torch.exp(torch.linspace(math.log(0.5), math.log(64.0), half, dtype=torch.float64))
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class MLPNet(nn.Module):
    """F(x_in, c_noise) for vectors: h_0 = x_in, h_{i+1} = SiLU(layers[i] h_i + embs[i] e), out = out(h_L),
    with e = SiLU(emb_mlp(fourier(c_noise))) shared by all layers."""

    def __init__(self, dim: int, widths: tuple[int, ...] = (128, 128, 128), emb_dim: int = 32):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.widths = _check_widths(widths, "widths")
        self.emb_dim = check_positive_int(emb_dim, "emb_dim", 2)
        self.fourier = FourierFeatures(emb_dim)
        self.emb_mlp = nn.Linear(emb_dim, emb_dim)
        sizes = (dim, *self.widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.embs = nn.ModuleList(nn.Linear(emb_dim, w) for w in self.widths)
        self.out = nn.Linear(self.widths[-1], dim)

    def config(self) -> dict:
        return {"dim": self.dim, "widths": self.widths, "emb_dim": self.emb_dim}

    def check_sample_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError unless one sample (no batch dim) of shape `shape` fits: `(dim,)`."""
        if tuple(shape) != (self.dim,):
            raise ValueError(f"an mlp with dim={self.dim} takes samples of shape ({self.dim},), got {tuple(shape)}")

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x_in.ndim != 2 or x_in.shape[1] != self.dim:
            raise ValueError(f"x_in must have shape [B, {self.dim}], got {tuple(x_in.shape)}")
        e = F.silu(self.emb_mlp(self.fourier(c_noise)))
        h = x_in
        for layer, emb in zip(self.layers, self.embs, strict=True):
            h = F.silu(layer(h) + emb(e))
        return self.out(h)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    """out = skip(x) + conv2(SiLU(conv1(SiLU(GN(x))) + emb(e))); the inner width (conv1's outputs) is unnormalized."""

    def __init__(self, cin: int, cout: int, inner: int, emb_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, inner, 3, padding=1)
        self.emb = nn.Linear(emb_dim, inner)
        self.conv2 = nn.Conv2d(inner, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm(x)))
        h = F.silu(h + self.emb(e)[:, :, None, None])
        return self.skip(x) + self.conv2(h)


class UNetNet(nn.Module):
    """A small UNet F(x_in, c_noise) for [B, C, H, W] images (8x8 digits), H and W divisible by 2^(len(widths)-1).

    Blocks, in order (2 L + 1 of them for L = len(widths) resolutions): encoder block l at resolution l
    (stream widths[l-1] -> widths[l], average-pool 2x between levels), a middle block, decoder block l
    (upsample 2x nearest, concatenate the encoder's skip, -> widths[l]). conv_in: C -> widths[0];
    out: GN, SiLU, conv widths[0] -> C. `inner[b]` is block b's hidden width (default: its output width).
    """

    def __init__(
        self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64), emb_dim: int = 64, inner: tuple[int, ...] | None = None
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.widths = _check_widths(widths, "widths")
        self.emb_dim = check_positive_int(emb_dim, "emb_dim", 2)
        levels = len(self.widths)
        outs = [*self.widths, self.widths[-1], *reversed(self.widths)]
        self.inner = tuple(outs) if inner is None else _check_widths(inner, "inner", len(outs))
        self.fourier = FourierFeatures(emb_dim)
        self.emb_mlp = nn.Linear(emb_dim, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, self.widths[0], 3, padding=1)
        cins = [self.widths[0], *self.widths[:-1], self.widths[-1]]
        cins += [self.widths[-1] + self.widths[-1]] + [self.widths[l + 1] + self.widths[l] for l in reversed(range(levels - 1))]
        self.blocks = nn.ModuleList(ResBlock(a, b, c, emb_dim) for a, b, c in zip(cins, outs, self.inner, strict=True))
        self.out_norm = nn.GroupNorm(_groups(self.widths[0]), self.widths[0])
        self.out = nn.Conv2d(self.widths[0], in_channels, 3, padding=1)

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "widths": self.widths, "emb_dim": self.emb_dim, "inner": self.inner}

    def check_sample_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError unless one sample (no batch dim) of shape `shape` fits: `(in_channels, H, W)` with H and W
        divisible by 2^(len(widths) - 1)."""
        factor = 2 ** (len(self.widths) - 1)
        shape = tuple(shape)
        if len(shape) != 3 or shape[0] != self.in_channels or shape[1] % factor or shape[2] % factor:
            raise ValueError(f"a unet with in_channels={self.in_channels} and widths={self.widths} takes samples of shape "
                             f"({self.in_channels}, H, W) with H, W divisible by {factor}, got {shape}")

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        levels = len(self.widths)
        factor = 2 ** (levels - 1)
        if x_in.ndim != 4 or x_in.shape[1] != self.in_channels or x_in.shape[2] % factor or x_in.shape[3] % factor:
            raise ValueError(f"x_in must have shape [B, {self.in_channels}, H, W] with H, W divisible by {factor}, "
                             f"got {tuple(x_in.shape)}")
        e = F.silu(self.emb_mlp(self.fourier(c_noise)))
        h = self.conv_in(x_in)
        skips = []
        for l in range(levels):
            if l > 0:
                h = F.avg_pool2d(h, 2)
            h = self.blocks[l](h, e)
            skips.append(h)
        h = self.blocks[levels](h, e)
        for i, l in enumerate(reversed(range(levels))):
            if l < levels - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.blocks[levels + 1 + i](torch.cat([h, skips[l]], dim=1), e)
        return self.out(F.silu(self.out_norm(h)))


class EDMPrecond(nn.Module):
    """D(x, sigma) = c_skip x + c_out net(c_in x, log(sigma) / 4) (module docstring). sigma: float, 0-d or [B] tensor.

    The coefficients are computed in float64 for float64 x and float32 otherwise; the output has x's dtype.
    `.config()` returns {"kind", "sigma_data", **net.config()}, so `make_denoiser(**d.config())` rebuilds it.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        if not isinstance(net, (MLPNet, UNetNet)):
            raise TypeError(f"net must be an MLPNet or UNetNet, got {type(net).__name__}")
        self.net = net
        self.sigma_data = check_positive(sigma_data, "sigma_data")

    @property
    def kind(self) -> str:
        return "mlp" if isinstance(self.net, MLPNet) else "unet"

    def config(self) -> dict:
        return {"kind": self.kind, "sigma_data": self.sigma_data, **self.net.config()}

    def check_sample_shape(self, shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the architecture unless samples of shape `shape` (no batch dim) fit the net."""
        self.net.check_sample_shape(shape)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) of a sigma tensor, elementwise."""
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data * total.rsqrt(), total.rsqrt(), sigma.log() / 4.0

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape [B, ...], got {got}")
        s = sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(s)
        view = (-1,) + (1,) * (x.ndim - 1)
        param_dtype = next(self.net.parameters()).dtype
        f = self.net((c_in.view(view) * x).to(param_dtype), c_noise.to(param_dtype))
        return (c_skip.view(view) * x + c_out.view(view) * f.to(s.dtype)).to(x.dtype)


def make_denoiser(kind: str, **config) -> EDMPrecond:
    """EDMPrecond(MLPNet(**config)) for kind "mlp", EDMPrecond(UNetNet(**config)) for "unet";
    `sigma_data` in config goes to EDMPrecond (default 0.5)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sigma_data = config.pop("sigma_data", 0.5)
    net = MLPNet(**config) if kind == "mlp" else UNetNet(**config)
    return EDMPrecond(net, sigma_data=sigma_data)
