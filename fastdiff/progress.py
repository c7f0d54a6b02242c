"""A progress bar over solver steps: tqdm when installed, else a one-line stderr counter."""

from __future__ import annotations

import sys
from collections.abc import Iterator


class _Counter:
    """The fallback bar: `\\rdesc: i/n` on stderr, shown when enabled (None: only on a terminal)."""

    def __init__(self, n: int, show: bool, desc: str):
        self.n, self.show, self.desc, self.done = n, show, desc, 0

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.show:
            end = "" if self.done < self.n else "\n"
            print(f"\r{self.desc}: {self.done}/{self.n}", end=end, file=sys.stderr, flush=True)

    def __enter__(self) -> _Counter:
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress_bar(n: int, enabled: bool | None, desc: str = "sampling"):
    """A context manager with `update()` for n steps; `enabled=None` shows it only on a terminal (tqdm's rule)."""
    if enabled is False:
        return _Counter(n, False, desc)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Counter(n, bool(enabled or (enabled is None and sys.stderr.isatty())), desc)
    return tqdm(total=n, disable=None if enabled is None else not enabled, desc=desc, leave=False)


def progress_range(n: int, enabled: bool | None, desc: str = "sampling") -> Iterator[int]:
    """range(n) with a progress bar (`progress_bar`)."""
    with progress_bar(n, enabled, desc) as bar:
        for i in range(n):
            yield i
            bar.update()
