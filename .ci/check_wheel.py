"""Run from outside the checkout, in a fresh environment where only the built wheel is installed: every package of
the source tree (each folder holding an __init__.py under fastdiff/ and kernels/) must import from the wheel, the
package-data folders must hold every file of their source folder, and the compiled extension must load. A subpackage
missing from pyproject.toml's explicit list, or data missing from its package-data, fails here."""

import importlib
import pathlib
import sys

source = pathlib.Path(sys.argv[1])
# Folders checked file by file, not imported: the ComfyUI custom node, which only ComfyUI loads (it registers into ComfyUI).
DATA_FOLDERS = {("fastdiff.integrations.comfyui", "custom_node")}
data_paths = {source.joinpath(*package.split("."), folder) for package, folder in DATA_FOLDERS}
expected = {"fastdiff.kernels"}
for init in (source / "fastdiff").rglob("__init__.py"):
    if not any(data in init.parents for data in data_paths):
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
for package, folder in sorted(DATA_FOLDERS):
    installed = pathlib.Path(importlib.import_module(package).__file__).parent / folder
    wanted = sorted(
        p.relative_to(source.joinpath(*package.split("."), folder))
        for p in source.joinpath(*package.split("."), folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    absent = [str(p) for p in wanted if not (installed / p).is_file()]
    if absent:
        sys.exit(f"files of {package}.{folder} missing from the wheel: {', '.join(absent)}")
import fastdiff  # noqa: E402

status = fastdiff.backends()
if not status["cpu"].available:
    sys.exit(f"the wheel's compiled extension does not load: {status['cpu'].reason}")
print(f"wheel OK: {len(expected)} packages import, compiled extension loads")
