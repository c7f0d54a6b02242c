"""Host-scalar checks of the fused ops' arguments, written once: each error names the op, the argument and what it got.

Coefficients are host numbers, never tensors, so that reading one never waits for a device.
"""

from __future__ import annotations

import math
import numbers


def host_float(value: object, name: str, op: str, finite: bool = False) -> float:
    """`value` as a float: a real host number (not a bool, not a tensor), and finite when `finite`."""
    real = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not real or (finite and not math.isfinite(float(value))):
        kind = "a finite host number (float)" if finite else "a host number (float)"
        got = repr(value) if real else type(value).__name__
        raise TypeError(f"{op}: {name} must be {kind}, got {got}")
    return float(value)


def host_int(value: object, name: str, op: str) -> int:
    """`value` itself when it is a host int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    return value
