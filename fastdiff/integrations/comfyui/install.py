"""`python -m fastdiff comfyui-install PATH [--overwrite]`: copy the custom node (`custom_node/`, shipped in the wheel)
into PATH/custom_nodes/fastdiff/ of a ComfyUI folder.

Nothing is lost on disk: the copy is written to a temporary folder beside the target (named `*.disabled`, which
ComfyUI skips should it be left behind) and renamed into place; an existing install is moved aside first and put
back if that rename fails, and is deleted only once the new one is in place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "custom_node"
NODE_FOLDER = "fastdiff"
COMFYUI_MARKERS = ("custom_nodes", "comfy")  # folders every ComfyUI checkout has


def check_comfyui(path: str | os.PathLike) -> Path:
    """`path` as a ComfyUI folder; raises naming what is missing (the folder itself, `custom_nodes/`, `comfy/`)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"PATH must be a ComfyUI folder, got {os.fspath(path)!r}, which is not a folder")
    missing = [f"{name}/" for name in COMFYUI_MARKERS if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"PATH must be a ComfyUI folder (with custom_nodes/ and comfy/), got {os.fspath(path)!r}, "
            f"which lacks {' and '.join(missing)}"
        )
    return root


def install(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy the custom node into `path`/custom_nodes/fastdiff/ and return that folder. An existing install raises
    FileExistsError unless `overwrite`."""
    root = check_comfyui(path)
    target = root / "custom_nodes" / NODE_FOLDER
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(f"{os.fspath(target)!r} already exists; pass --overwrite (overwrite=True) to replace it")
    staging = Path(tempfile.mkdtemp(prefix=f".{NODE_FOLDER}-", suffix=".disabled", dir=target.parent))
    try:
        fresh = staging / NODE_FOLDER
        shutil.copytree(SOURCE, fresh, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        previous = staging / "previous"
        if target.exists() or target.is_symlink():
            os.replace(target, previous)
        try:
            os.replace(fresh, target)
        except OSError:
            if previous.exists() or previous.is_symlink():
                os.replace(previous, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def add_subcommand(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `comfyui-install` to an argparse subparsers object; the parsed namespace's `run(args)` runs it."""
    parser = commands.add_parser("comfyui-install", help="install fastdiff's samplers as a ComfyUI custom node")
    parser.add_argument("path", metavar="PATH", help="the ComfyUI folder (the one holding custom_nodes/ and comfy/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing custom_nodes/fastdiff/")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        target = install(args.path, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"comfyui-install: {err}") from None
    print(f"installed the fastdiff custom node in {target}; restart ComfyUI to load it")
    return 0
