"""fastdiff's solvers as diffusers schedulers (`pip install fastdiff[diffusers]`):

    pipe.scheduler = fastdiff.integrations.diffusers.SRKScheduler.from_config(pipe.scheduler.config)

`SCHEDULERS` maps fastdiff solver names to the scheduler classes. Importing this module imports diffusers;
importing `fastdiff` does not.
"""

try:
    import diffusers  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without diffusers
    raise ImportError("fastdiff.integrations.diffusers needs diffusers: pip install fastdiff[diffusers]") from err

from fastdiff.integrations.diffusers.schedulers import (
    SCHEDULERS,
    DPMpp2MScheduler,
    DPMpp2MSDEScheduler,
    EulerAncestralScheduler,
    EulerMaruyamaScheduler,
    FastdiffScheduler,
    FastdiffSchedulerOutput,
    IPNDMScheduler,
    SRKDPScheduler,
    SRKScheduler,
)

__all__ = [
    "SCHEDULERS",
    "DPMpp2MSDEScheduler",
    "DPMpp2MScheduler",
    "EulerAncestralScheduler",
    "EulerMaruyamaScheduler",
    "FastdiffScheduler",
    "FastdiffSchedulerOutput",
    "IPNDMScheduler",
    "SRKDPScheduler",
    "SRKScheduler",
]
