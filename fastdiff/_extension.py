"""The compiled extension `fastdiff._C`: importing it registers the `torch.ops.fastdiff` operators."""

from __future__ import annotations

import functools
import importlib


@functools.lru_cache(maxsize=1)
def load_error() -> str | None:
    """Import `fastdiff._C` once; None when it loaded, else why it did not."""
    try:
        importlib.import_module("fastdiff._C")
    except ImportError as exc:  # not built (FASTDIFF_SKIP_EXT=1) or built against another torch
        return f"compiled extension fastdiff._C not loadable ({exc}); reinstall with `pip install --no-build-isolation .`"
    return None


def loaded() -> bool:
    """Whether `torch.ops.fastdiff.*` exist in this process."""
    return load_error() is None
