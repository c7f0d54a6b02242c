"""Composing pretrained diffusion models at sampling time: SuperDiff's OR (mixture) and AND (equal densities).

    models = [gm_a.denoiser, gm_b.denoiser]
    samples, log_q = fastdiff.compose.sample_superposed(models, x, sigmas, "or", seed=0)   # log_q: [B, 2]
    both = fastdiff.compose.superpose(models, "and")                                       # a reusable configuration
    samples, log_q = both.sample(x, sigmas, seed=0)
"""

from fastdiff.compose.sampler import sample_superposed
from fastdiff.compose.superpose import Superposition, superpose

__all__ = ["Superposition", "sample_superposed", "superpose"]
