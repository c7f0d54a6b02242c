"""`Superposition`, the reusable configuration of SuperDiff OR / AND that samples itself, and `superpose`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.compose.config import Denoiser, SuperpositionConfig
from fastdiff.compose.sampler import sample_superposed


class Superposition(SuperpositionConfig):
    """M denoisers combined at sampling time by OR or AND (see `fastdiff.compose.config.SuperpositionConfig`).

    What it can be used with: `fastdiff.compose.sample_superposed(superposition, x, sigmas, ...)` (or its
    `.sample(x, sigmas, ...)`), and a hand-written loop around `fastdiff.ops.ito_step.ito_step`, which takes the
    list that calling it returns. What it cannot: it is not a drop-in denoiser for `fastdiff.sample` or the
    k-diffusion-style samplers. Its weights depend on running log-densities, and AND's on the noise of the
    very step being taken, so no single D(x, sigma) exists. Calling it returns the list [D_1(x, sigma), ...].
    """

    def sample(self, x: torch.Tensor, sigmas, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """`fastdiff.compose.sample_superposed(self, x, sigmas, **options)`."""
        return sample_superposed(self, x, sigmas, **options)


def superpose(denoisers: Sequence[Denoiser], mode: str = "or", **options: float | Sequence[float] | None) -> Superposition:
    """Combine `denoisers` by SuperDiff's OR (mixture; options `temperature`, `log_weights` = log w_i) or AND
    (equal densities; `bias` = target log q_1 - log q_2 for two models, or one offset per model), both with AND's
    regularization `rcond`; the defaults and checks are `Superposition`'s."""
    return Superposition(denoisers, mode, **options)
