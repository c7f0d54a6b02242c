"""Training data that needs no download: exact 2-D Gaussian mixtures and scikit-learn's bundled 8x8 digits.

A dataset draws a batch with `draw(n, generator)`. The trainer draws the whole global batch from a generator
seeded by (run seed, step) on every rank and keeps its rank's slice, so the data order does not depend on the
number of ranks.
"""

from __future__ import annotations

import torch

from fastdiff.toy import GaussianMixture
from fastdiff.validation import check_positive_int


class TrainData:
    """A source of training batches `[n, *shape]` (float32)."""

    shape: tuple[int, ...]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class MixtureData(TrainData):
    """Fresh exact draws from a `fastdiff.toy.GaussianMixture` at every step (an infinite dataset, so the exact score
    of what the model learns is known: `self.mixture.score`)."""

    def __init__(self, mixture: GaussianMixture):
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a fastdiff.toy.GaussianMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.shape = (mixture.dim,)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mixture.sample(n, generator=generator).to(torch.float32)


class TensorData(TrainData):
    """A fixed dataset `[N, ...]`; a batch is N-uniform indices drawn with replacement."""

    def __init__(self, data: torch.Tensor):
        if not isinstance(data, torch.Tensor) or not data.dtype.is_floating_point or data.ndim < 2 or data.shape[0] < 1:
            got = f"dtype {data.dtype}, shape {tuple(data.shape)}" if isinstance(data, torch.Tensor) else type(data).__name__
            raise ValueError(f"data must be a floating [N, ...] tensor with N >= 1, got {got}")
        self.data = data.to(torch.float32)
        self.shape = tuple(data.shape[1:])

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, self.data.shape[0], (check_positive_int(n, "n"),), generator=generator)
        return self.data[index]


def toy_mixture() -> GaussianMixture:
    """The 2-D toy target: eight isotropic components (std 0.25) on a circle of radius 2 plus one at the centre,
    unequal weights, so the data has separated modes, a scale near EDM's sigma_data = 0.5..2 and no symmetry
    between components."""
    ring = GaussianMixture.ring(k=8, radius=2.0, std=0.25)
    means = torch.cat([ring.means, torch.zeros(1, 2, dtype=torch.float64)])
    weights = torch.tensor([2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    return GaussianMixture(means, stds=0.25, weights=weights)


def load_digits() -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), pixel values 0..16 scaled to [-1, 1],
    float32 [1797, 1, 8, 8]."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from err
    images = torch.as_tensor(sklearn_digits().images, dtype=torch.float32)
    return (images / 8.0 - 1.0).unsqueeze(1)
