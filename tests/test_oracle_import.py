"""The pure-PyTorch oracle (`fastdiff.reference`) loads nothing above it: in a fresh process, importing it and
calling every reference function leaves the compiled extension `fastdiff._C`, the ops and the solvers unloaded,
while `import fastdiff` still offers its public names."""

from __future__ import annotations

import subprocess
import sys
import textwrap

ORACLE_RUN = textwrap.dedent(
    """
    import sys

    import torch

    import fastdiff.reference.ito_step as ito
    import fastdiff.reference.philox as philox
    import fastdiff.reference.solver_step as solver
    import fastdiff.reference.trace_step as trace

    keys = torch.tensor([1, -2], dtype=torch.int64)
    x = torch.randn(2, 6)
    z = philox.philox_normal(keys, 6, 0, 0, 0)
    solver.solver_step(x, [z.view(2, 6)], 0.5, [0.25], keys, [(1, 0, 0)], [0.1])
    u = torch.randn(1, 2, 6)
    trace.trace_step(x, [], 1.0, [], u, keys, 0, 0, "gaussian", torch.zeros(2, dtype=torch.float64), 0.0, 1.0)
    ell = torch.zeros(2, 2)
    ito.ito_step(x, [x + 1, x - 1], 1.0, 0.5, ell, keys, (0, 0, 0), "and")
    loaded = sorted(m for m in sys.modules if m.startswith("fastdiff."))
    above = [m for m in loaded if not m.startswith(("fastdiff.reference", "fastdiff.noise", "fastdiff.dtypes",
                                                    "fastdiff.validation", "fastdiff.backends", "fastdiff._extension"))]
    assert "fastdiff._C" not in sys.modules, loaded
    assert not above, above
    print("ok")
    """
)

PUBLIC_NAMES = textwrap.dedent(
    """
    import sys

    import fastdiff

    assert "fastdiff._C" not in sys.modules
    for name in fastdiff.__all__:
        assert name in dir(fastdiff), name
        getattr(fastdiff, name)
    import fastdiff.ops.philox  # binds the submodule fastdiff.backends on the package

    assert callable(fastdiff.backends) and set(fastdiff.backends()) >= {"reference", "cpu"}
    assert callable(fastdiff.sample) and "euler" in fastdiff.SOLVERS
    print("ok")
    """
)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_oracle_loads_no_extension_and_nothing_above():
    assert _run(ORACLE_RUN) == "ok"


def test_package_names_stay_available_lazily():
    assert _run(PUBLIC_NAMES) == "ok"
