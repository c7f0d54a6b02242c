"""Structured pruning of `fastdiff.train.networks` denoisers by weight-norm importance.

The prunable widths (see the networks module docstring) are the MLP's hidden widths and the UNet's inner
block widths. The importance of unit j of a prunable layer is the product of the L2 norms of its incoming and
outgoing weights,
    importance_j = ||[W_in[j], b_in[j], W_emb[j], b_emb[j]]||_2 * ||W_out[:, j]||_2,
so a unit whose output is never read (or that never receives input) scores 0. `prune` keeps the `width` units with
the largest importance (ties: lower index first), in their original order, and copies their weights into a
new network of the smaller architecture; all other parameters are copied unchanged. Keeping every unit
reproduces the original network bitwise.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdiff.train.networks import EDMPrecond, MLPNet, UNetNet


def _net(denoiser: EDMPrecond) -> nn.Module:
    if not isinstance(denoiser, EDMPrecond):
        raise TypeError(f"denoiser must be a fastdiff.train.networks.EDMPrecond, got {type(denoiser).__name__}")
    return denoiser.net


def _triples(net: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """(producer, its embedding projection, consumer) of each prunable layer: units are producer/embedding rows
    and consumer input columns (dim 1 of a Linear or Conv2d weight)."""
    if isinstance(net, MLPNet):
        consumers = [*net.layers[1:], net.out]
        return [(layer, emb, nxt) for layer, emb, nxt in zip(net.layers, net.embs, consumers, strict=True)]
    if isinstance(net, UNetNet):
        return [(b.conv1, b.emb, b.conv2) for b in net.blocks]
    raise TypeError(f"net must be an MLPNet or UNetNet, got {type(net).__name__}")


def prunable_widths(denoiser: EDMPrecond) -> tuple[int, ...]:
    """The current width of every prunable layer, in network order."""
    return tuple(prod.weight.shape[0] for prod, _, _ in _triples(_net(denoiser)))


def unit_importance(denoiser: EDMPrecond) -> list[torch.Tensor]:
    """Per prunable layer, the float64 importance of each unit (module docstring)."""
    out = []
    with torch.no_grad():
        for prod, emb, cons in _triples(_net(denoiser)):
            w = prod.weight.shape[0]
            incoming = torch.cat([
                prod.weight.reshape(w, -1), prod.bias.reshape(w, 1), emb.weight.reshape(w, -1), emb.bias.reshape(w, 1)
            ], dim=1)
            outgoing = cons.weight.transpose(0, 1).reshape(w, -1)
            out.append(incoming.double().norm(dim=1) * outgoing.double().norm(dim=1))
    return out


def kept_units(importance: torch.Tensor, width: int) -> torch.Tensor:
    """Indices (increasing) of the `width` most important units; ties go to the lower index."""
    order = sorted(range(importance.shape[0]), key=lambda j: (-importance[j].item(), j))
    return torch.tensor(sorted(order[:width]), dtype=torch.long)


def _check_target(denoiser: EDMPrecond, widths: object) -> tuple[int, ...]:
    full = prunable_widths(denoiser)
    try:
        target = tuple(widths)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(f"widths must be a sequence of ints, got {type(widths).__name__}") from err
    if len(target) != len(full) or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= f
                                       for w, f in zip(target, full, strict=False)):
        raise ValueError(f"widths must be {len(full)} ints with 1 <= widths[l] <= {list(full)}[l], got {widths!r}")
    return target


def pruned_config(denoiser: EDMPrecond, widths: tuple[int, ...]) -> dict:
    config = denoiser.config()
    config["inner" if denoiser.kind == "unet" else "widths"] = widths
    return config


def prune(denoiser: EDMPrecond, widths: object) -> EDMPrecond:
    """A new denoiser with prunable widths `widths`, keeping each layer's most important units (module docstring).
    The input is not modified; the result is on the input's device and dtype."""
    from fastdiff.train.networks import make_denoiser

    target = _check_target(denoiser, widths)
    keeps = [kept_units(imp, w) for imp, w in zip(unit_importance(denoiser), target, strict=True)]
    param = next(denoiser.parameters())
    with torch.device(param.device):
        small = make_denoiser(**pruned_config(denoiser, target)).to(param.dtype)
    state = {name: p.detach() for name, p in denoiser.named_parameters()}
    names = {id(p): name for name, p in denoiser.named_parameters()}
    for (prod, emb, cons), keep in zip(_triples(denoiser.net), keeps, strict=True):
        keep = keep.to(param.device)
        for tensor in (prod.weight, prod.bias, emb.weight, emb.bias):
            state[names[id(tensor)]] = state[names[id(tensor)]][keep]
        state[names[id(cons.weight)]] = state[names[id(cons.weight)]][:, keep]
    small.load_state_dict(state)
    return small
