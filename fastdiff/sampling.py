"""k-diffusion-compatible sampler functions.

Same positional signature, keyword names, defaults and callback dict as `k_diffusion.sampling`,
so `from fastdiff import sampling as K` replaces `k_diffusion.sampling` in existing code. The
stochastic ones also take `seed=` (int or one int per sample) and `backend=`; a given
`noise_sampler(sigma, sigma_next)` wins over the seed.
"""

from __future__ import annotations

from fastdiff.driver import sample


def _progress(disable):
    return None if disable is None else not disable


def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, seed=None, backend="auto"):
    """Euler steps on the probability-flow ODE, with EDM churn (Karras et al. 2022, Alg. 2)."""
    return sample(model, x, sigmas, "euler", extra_args=extra_args, callback=callback, progress=_progress(disable),
                  seed=seed, backend=backend, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
