"""fastdiff's samplers in ComfyUI (KSampler, KSamplerAdvanced, KSamplerSelect): `fastdiff_<solver>`, exact for flow
(CONST) and EPS / V_PREDICTION / EDM models. Importing this package imports nothing of ComfyUI; `register()` does,
inside ComfyUI.

- `samplers.py`: `SAMPLER_NAMES`, `sampler_function(solver, **options)`, `register()`;
- `coordinates.py`: ComfyUI's sampler coordinates <-> fastdiff's.
"""

from fastdiff.integrations.comfyui.samplers import SAMPLER_NAMES, register, sampler_function

__all__ = ["SAMPLER_NAMES", "register", "sampler_function"]
