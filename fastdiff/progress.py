"""A progress bar over solver steps: tqdm when installed, else a one-line stderr counter."""

from __future__ import annotations

import sys
from collections.abc import Iterator


def progress_range(n: int, enabled: bool | None, desc: str = "sampling") -> Iterator[int]:
    """range(n) with a progress bar; `enabled=None` shows it only on a terminal (tqdm's rule)."""
    if enabled is False:
        yield from range(n)
        return
    try:
        from tqdm.auto import trange
    except ImportError:
        show = enabled or (enabled is None and sys.stderr.isatty())
        for i in range(n):
            if show:
                print(f"\r{desc}: {i + 1}/{n}", end="" if i + 1 < n else "\n", file=sys.stderr, flush=True)
            yield i
        return
    yield from trange(n, disable=None if enabled is None else not enabled, desc=desc, leave=False)
