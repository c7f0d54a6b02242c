"""Run from outside the checkout, in a fresh environment where only the built wheel is installed: every package of
the source tree (each folder holding an __init__.py under fastdiff/ and kernels/) must import from the wheel, and the
compiled extension must load. A subpackage missing from pyproject.toml's explicit list fails here."""

import importlib
import pathlib
import sys

source = pathlib.Path(sys.argv[1])
expected = {"fastdiff.kernels"}
for init in (source / "fastdiff").rglob("__init__.py"):
    expected.add(".".join(init.parent.relative_to(source).parts))
missing = []
for name in sorted(expected):
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        missing.append(f"{name}: {err}")
        continue
    if source in pathlib.Path(module.__file__).resolve().parents:
        sys.exit(f"{name} was imported from the checkout ({module.__file__}), not from the installed wheel")
if missing:
    sys.exit("packages of the source tree missing from the wheel:\n  " + "\n  ".join(missing))
import fastdiff  # noqa: E402

status = fastdiff.backends()
if not status["cpu"].available:
    sys.exit(f"the wheel's compiled extension does not load: {status['cpu'].reason}")
print(f"wheel OK: {len(expected)} packages import, compiled extension loads")
