"""Reference for the Brownian tree: the path value W(u) by explicit Brownian-bridge descent, the test oracle of the
weights in `fastdiff.brownian_tree` (docs/ALGORITHMS.md section 15).

From W(0) = 0 and W(1) = Z_0 the descent halves the interval [l, r] holding u `depth` times, setting the midpoint to
(W(l) + W(r)) / 2 + sqrt(r - l) / 2 Z_n with node n = 2^k + j at level k (position j), and interpolates W linearly
between the ends of the last interval, adding the bridge value sqrt(f (1 - f) (r - l)) R at fraction f of that leaf j.
Z_n is element e of the counter normal (keys[b], e, n, 0, STREAM_BROWNIAN) of `fastdiff.reference.philox`, R that of
(keys[b], e, j, floor(2^32 f), STREAM_BRIDGE). Plain PyTorch arithmetic in the requested dtype.
"""

from __future__ import annotations

import math

import torch

from fastdiff.noise import STREAM_BRIDGE, STREAM_BROWNIAN
from fastdiff.reference.philox import philox_normal


def brownian_path(keys: torch.Tensor, numel: int, u: float, depth: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """W(u) `[B, numel]` of every sample's path, u in [0, 1]."""

    def node(n: int) -> torch.Tensor:
        return philox_normal(keys, numel, n, 0, STREAM_BROWNIAN, dtype)

    lo, hi = 0.0, 1.0
    w_lo, w_hi = torch.zeros(keys.shape[0], numel, dtype=dtype, device=keys.device), node(0)
    j = 0
    for k in range(depth):
        mid = (lo + hi) / 2
        w_mid = (w_lo + w_hi) / 2 + math.sqrt(hi - lo) / 2 * node((1 << k) + j)
        if u < mid:
            hi, w_hi, j = mid, w_mid, 2 * j
        else:
            lo, w_lo, j = mid, w_mid, 2 * j + 1
    f = (u - lo) / (hi - lo)
    bridge = philox_normal(keys, numel, j, math.floor(f * 2**32) if f < 1 else 0, STREAM_BRIDGE, dtype)
    return w_lo + f * (w_hi - w_lo) + math.sqrt(f * (1 - f) * (hi - lo)) * bridge
