"""k-diffusion's `sampling.py` as a test oracle, loaded without its package.

k-diffusion's package `__init__` and `utils` import torchvision (not a dependency here), while `sampling.py`
only needs `utils.append_dims`. The file is therefore loaded under a private package name whose `utils` is a
stub providing `append_dims`, so nothing named `k_diffusion` is registered in `sys.modules`.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import types

import pytest

PACKAGE = "_kdiffusion_oracle"


def append_dims(x, target_dims):
    """x with trailing singleton dimensions up to `target_dims` (k-diffusion's `utils.append_dims`)."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


@functools.lru_cache(maxsize=1)
def load_kdiffusion_sampling() -> types.ModuleType:
    """The module `k_diffusion.sampling`; skips the calling test when k-diffusion or its imports are missing."""
    for dependency in ("scipy", "torchdiffeq", "torchsde", "tqdm"):
        pytest.importorskip(dependency, reason=f"k-diffusion's sampling.py imports {dependency}")
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)", allow_module_level=True)
    source = pathlib.Path(spec.submodule_search_locations[0]) / "sampling.py"
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    utils = types.ModuleType(f"{PACKAGE}.utils")
    utils.append_dims = append_dims
    sys.modules[PACKAGE] = package
    sys.modules[f"{PACKAGE}.utils"] = utils
    module_spec = importlib.util.spec_from_file_location(f"{PACKAGE}.sampling", source)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module
