"""fastdiff's solvers as diffusers schedulers (`pip install fastdiff[diffusers]`):

    pipe.scheduler = fastdiff.integrations.diffusers.SRKScheduler.from_config(pipe.scheduler.config)

`SCHEDULERS` maps fastdiff solver names to the scheduler classes. Importing this module imports diffusers;
importing `fastdiff` does not.
"""

try:
    # DiffusionPipeline.from_pretrained looks a saved component's base class up in the module the component's class
    # names (this one), so SchedulerMixin must be reachable here for a saved pipeline to load its fastdiff scheduler.
    from diffusers import SchedulerMixin  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without diffusers
    raise ImportError("fastdiff.integrations.diffusers needs diffusers: pip install fastdiff[diffusers]") from err

from fastdiff.integrations.diffusers.schedulers import (
    SCHEDULERS,
    DPMpp2MScheduler,
    DPMpp2MSDEScheduler,
    DPMpp3MSDEScheduler,
    ERSDEScheduler,
    EulerAncestralScheduler,
    EulerMaruyamaScheduler,
    EulerScheduler,
    FastdiffScheduler,
    FastdiffSchedulerOutput,
    HeunScheduler,
    IPNDMScheduler,
    SRKDPScheduler,
    SRKScheduler,
    UniPCScheduler,
)

__all__ = [
    "SCHEDULERS",
    "DPMpp2MSDEScheduler",
    "DPMpp2MScheduler",
    "DPMpp3MSDEScheduler",
    "ERSDEScheduler",
    "EulerAncestralScheduler",
    "EulerMaruyamaScheduler",
    "EulerScheduler",
    "FastdiffScheduler",
    "FastdiffSchedulerOutput",
    "HeunScheduler",
    "IPNDMScheduler",
    "SRKDPScheduler",
    "SRKScheduler",
    "UniPCScheduler",
]
