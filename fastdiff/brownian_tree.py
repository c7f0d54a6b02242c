"""A virtual Brownian tree as host coefficients: the increment of one Brownian path over any noise interval is a fixed
linear combination of counter Gaussians (a leaf: docs/ALGORITHMS.md section 15).

The path W lives on the tree time u = r / (1 + r), r = sqrt(sigma), in [0, 1] (sigma = 0 is u = 0, sigma = inf is
u = 1), the same map for every grid, so a sigma means the same point of the path whatever the step count. Any
increasing map gives exact N(0, 1) draws; the map decides how a coarse step's noise relates to the fine steps' over
the same sigmas, and this one was chosen by that stability on a tuning target (bench/BROWNIAN.md). W is
the Brownian-bridge refinement of a binary tree of `depth` levels, which is the Levy-Ciesielski expansion
    W(u) = u Z_0 + sum_{k < depth} 2^{-k/2 - 1} hat(2^k u - j_k) Z_{2^k + j_k} + sqrt(f (1 - f) l) R_{j, q},
j_k = floor(2^k u), hat(f) = 1 - |2 f - 1|, Z_n the standard normal of tree node n (heap index: level k, position j_k;
W(1) = Z_0, a node's midpoint value is the mean of its ends plus 2^{-k/2 - 1} Z_n). The last term is the bridge
inside the leaf of length l = 2^-depth holding u, at fraction f of it: R is the normal of (leaf j, q = floor(2^32 f)).
So W at points in distinct leaves has exactly the joint law of Brownian motion (the leaves' ends are exact, and a
bridge's value at one point is independent across leaves); only two points inside one leaf are not (their bridge
values are independent). A noise draw over (sigma, sigma') is the normalized increment
z = (W(u_hi) - W(u_lo)) / sd, sd^2 the sum of its squared weights (u_hi - u_lo across leaves): exactly N(0, 1).
A Gaussian is (counter stream, step word, stage word): tree node n is (STREAM_BROWNIAN, n, 0), a leaf's bridge value
(STREAM_BRIDGE, j, q).
"""

from __future__ import annotations

import math

from fastdiff.flow_time import sigma_to_flow_t
from fastdiff.noise import STREAM_BRIDGE, STREAM_BROWNIAN

Gaussian = tuple[int, int, int]  # (stream, step word, stage word) of a counter normal

DEFAULT_DEPTH = 20  # leaves of 2^-20 ~ 1e-6 in u: steps down to ~1e-4 in u keep correlations below ~1%
MAX_DEPTH = 30  # node indices stay below 2^30, inside the counter's 32-bit step word


def tree_time(sigma: float) -> float:
    """u = sqrt(sigma) / (1 + sqrt(sigma)) in [0, 1]; sigma = inf is u = 1."""
    return float(sigma_to_flow_t(math.sqrt(float(sigma))))


def path_weights(u: float, depth: int) -> dict[Gaussian, float]:
    """W(u) = sum_g weights[g] Z_g over the Gaussians g of the tree nodes above u and of u's leaf bridge."""
    weights = {(STREAM_BROWNIAN, 0, 0): u}
    for k in range(depth):
        j, f = leaf_position(u, k)
        hat = 1.0 - abs(2.0 * f - 1.0)
        if hat != 0.0:
            weights[(STREAM_BROWNIAN, (1 << k) + j, 0)] = hat * level_scale(k)
    j, f = leaf_position(u, depth)
    bridge = math.sqrt(f * (1.0 - f) * math.ldexp(1.0, -depth))
    if bridge != 0.0:
        weights[(STREAM_BRIDGE, j, math.floor(math.ldexp(f, 32)))] = bridge
    return weights


def leaf_position(u: float, k: int) -> tuple[int, float]:
    """(j, f): u lies at fraction f of the j-th of the 2^k intervals of level k (u = 1 in the last one, f = 1)."""
    scaled = math.ldexp(u, k)
    j = min(math.floor(scaled), (1 << k) - 1)
    return j, scaled - j


def level_scale(k: int) -> float:
    """2^{-k/2 - 1}, the standard deviation of a level-k midpoint given its ends, exact in float64 (sqrt is rounded
    correctly, powers of two exact)."""
    return math.ldexp(1.0, -(k // 2) - 1) * (math.sqrt(0.5) if k % 2 else 1.0)


def increment_weights(sigma: float, sigma_next: float, depth: int = DEFAULT_DEPTH) -> list[tuple[Gaussian, float]]:
    """The Gaussians and weights of the normalized increment z = (W(u_hi) - W(u_lo)) / sd over the noise interval
    (sigma, sigma'), either order, sorted; the squared weights sum to 1."""
    u_lo, u_hi = sorted((tree_time(sigma), tree_time(sigma_next)))
    if not u_lo < u_hi:
        raise ValueError(f"a Brownian increment needs an interval of positive length, got sigma={sigma}, sigma_next={sigma_next}")
    delta = path_weights(u_hi, depth)
    for g, w in path_weights(u_lo, depth).items():
        delta[g] = delta.get(g, 0.0) - w
    kept = sorted((g, w) for g, w in delta.items() if w != 0.0)
    sd = math.sqrt(math.fsum(w * w for _, w in kept))
    return [(g, w / sd) for g, w in kept]
