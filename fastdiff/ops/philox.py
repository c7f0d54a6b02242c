"""Counter-based standard normals (`fastdiff.reference.philox` defines the function), by backend, and `CounterNoise`,
the noise source of the stochastic solvers built on them.

Backends: "reference" (PyTorch), "cpu" and "cuda" (the compiled `torch.ops.fastdiff.philox_normal`,
one Philox4x32-10 block per four elements), "triton" (`torch.ops.fastdiff.philox_normal_triton`).
They agree bit for bit in the Philox words and up to float rounding of log/sqrt/sin/cos in the
normals: float32 normals lie within 2e-6 of float64
Box-Muller on the same words (the reference's float32 angle 2 pi u costs it up to 1.6e-6; the CPU
kernel reduces the angle exactly and stays within 6e-7). "auto" takes the compiled kernel of the
keys' device when it is built (float64 included: it computes in float64 as the reference does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff import _extension
from fastdiff.backends import resolve_backend
from fastdiff.noise import MAX_NUMEL, STREAM_SOLVER, NoiseSource, seed_keys, seeds_to_keys
from fastdiff.ops.arguments import host_int
from fastdiff.reference import philox as reference

SUPPORTED_BACKENDS = ("reference", "cpu", "cuda", "triton")
__all__ = ["MAX_NUMEL", "SUPPORTED_BACKENDS", "CounterNoise", "philox_normal"]
_MASK32 = 0xFFFFFFFF
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def philox_normal(
    keys: torch.Tensor,
    numel: int,
    step: int,
    stage: int,
    stream: int,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """Standard normals `[B, numel]`: element e of sample b is a fixed function of
    (keys[b], e, step, stage, stream); step, stage and stream enter modulo 2^32."""
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or keys.ndim != 1:
        got = f"dtype {keys.dtype}, shape {tuple(keys.shape)}" if isinstance(keys, torch.Tensor) else type(keys).__name__
        raise TypeError(f"keys must be a 1-D int64 tensor of per-sample seeds, got {got}")
    for value, name in ((numel, "numel"), (step, "step"), (stage, "stage"), (stream, "stream")):
        host_int(value, name, "philox_normal")
    if not 0 <= numel <= MAX_NUMEL:
        raise ValueError(f"numel must be in [0, 2^34] (32-bit counter over groups of four elements), got {numel}")
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be one of {_DTYPES}, got {dtype}")
    chosen = resolve_backend(backend, keys.device, SUPPORTED_BACKENDS)
    if chosen == "reference":
        return reference.philox_normal(keys, numel, step, stage, stream, dtype)
    op = torch.ops.fastdiff.philox_normal_triton if chosen == "triton" else torch.ops.fastdiff.philox_normal
    return op(keys, numel, step & _MASK32, stage & _MASK32, stream & _MASK32, dtype)


@torch.library.custom_op("fastdiff::philox_normal_triton", mutates_args=())
def _philox_normal_triton(keys: torch.Tensor, numel: int, step: int, stage: int, stream: int, dtype: torch.dtype) -> torch.Tensor:
    from fastdiff.kernels import philox as kernels

    return kernels.philox_normal(keys, numel, step, stage, stream, dtype)


@_philox_normal_triton.register_fake
def _philox_normal_triton_fake(keys, numel, step, stage, stream, dtype):
    return keys.new_empty((keys.shape[0], numel), dtype=dtype)


if _extension.loaded():

    @torch.library.register_fake("fastdiff::philox_normal")
    def _philox_normal_fake(keys, numel, step, stage, stream, dtype):
        return keys.new_empty((keys.shape[0], numel), dtype=dtype)


class CounterNoise(NoiseSource):
    """Counter-based Gaussians: stage `stage` of step `step` for every sample's seed."""

    replayable = True

    def __init__(self, seeds: Sequence[int], device: torch.device, backend: str = "auto", stream: int = STREAM_SOLVER):
        self.keys = seeds_to_keys(seeds, device)
        self.backend = backend
        self.stream = stream

    @classmethod
    def from_seed(
        cls, seed: object, batch: int, device: torch.device, backend: str = "auto", stream: int = STREAM_SOLVER
    ) -> CounterNoise:
        """The stream of a `seed` argument (`fastdiff.noise.seed_keys`): int, list of ints, device keys or None."""
        return cls.from_keys(seed_keys(seed, batch, device), backend, stream)

    @classmethod
    def from_keys(cls, keys: torch.Tensor, backend: str = "auto", stream: int = STREAM_SOLVER) -> CounterNoise:
        """The stream of per-sample seeds already on the device (int64 `[B]`, two's complement): no
        host round trip, so a CUDA graph can replay it with new seeds copied into `keys`."""
        source = cls([], keys.device, backend, stream)
        source.keys = keys
        return source

    def draw(self, like, step, stage, sigma=None, sigma_next=None):
        if like.shape[0] != self.keys.shape[0]:
            raise ValueError(f"noise for {like.shape[0]} samples requested from a stream of {self.keys.shape[0]} seeds")
        per_sample = like[0].numel()
        z = philox_normal(self.keys, per_sample, step, stage, self.stream, dtype=like.dtype, backend=self.backend)
        return z.view(like.shape)
