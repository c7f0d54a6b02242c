"""Every ```python block of README.md runs as written, on small stand-ins for the names it leaves to the reader.

Blocks are read from README.md in order, so a new block is picked up by itself. Each runs in `tmp_path` (the files
it writes land there) in a fresh namespace holding
- the README's own imports from earlier blocks, for the names the block uses without binding (`K`, `torch`, ...),
- the stand-ins of its entry in `README_BLOCKS`, keyed by text that only this block contains (`readme_standins.py`),
then the entry's check reads a little of what the block promises. A block without an entry runs only if it needs
no stand-ins; otherwise it fails naming the ones it lacks. A block that names "cuda" is skipped without a GPU, one
that imports the diffusers integration without diffusers; both say why.

Two patches keep the slow blocks fast, the README text staying as written; each replaces one function for its
block only (monkeypatch):
- the training block's `ft.TrainConfig(steps=2000, ...)` trains `TRAIN_STEPS` steps (2000 CDM steps take about
  45 s on one core);
- the LD3 block for a diffusers pipeline trains at most `LD3_EPOCHS` epochs (`max_epochs`; on the stand-in model it
  stops early after about 80 of its default 100 epochs, 35 s; the other LD3 block stops after about 25 by itself).
"""

from __future__ import annotations

import ast
import builtins
import math
import re
import symtable
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from readme_standins import MODES, MixtureModel, mixture_pipeline, tiny_pipeline

import fastdiff
import fastdiff.train

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
TRAIN_STEPS = 50
LD3_EPOCHS = 20


@dataclass(frozen=True)
class CodeBlock:
    line: int  # README line of the block's first line of code
    code: str

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str) -> list[CodeBlock]:
    """The ```python blocks of `text`, in order, dedented."""
    return [CodeBlock(text.count("\n", 0, m.start(1)) + 1, textwrap.dedent(m.group(1))) for m in FENCE.finditer(text)]


def free_names(code: str) -> set[str]:
    """Names `code` reads (in its own scopes too) before a statement of it binds them, builtins left out.

    Statement by statement: `x = f(x)` reads an `x` the block has not bound yet, so `x` is free.
    """
    free: set[str] = set()
    bound = set(dir(builtins))
    for statement in ast.parse(code).body:
        top = symtable.symtable(ast.unparse(statement), "<readme>", "exec")
        read: set[str] = set()
        tables = [top]
        while tables:
            table = tables.pop()
            read |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and (table is top or s.is_global())}
            tables += table.get_children()
        free |= read - bound
        bound |= {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    return free


def imports_by_name(code: str) -> dict[str, str]:
    """Each name a top-level import of `code` binds -> that import alone, as source."""
    found = {}
    for node in ast.parse(code).body:
        for alias in getattr(node, "names", []) if isinstance(node, (ast.Import, ast.ImportFrom)) else []:
            if isinstance(node, ast.Import):
                name, statement = alias.asname or alias.name.split(".")[0], ast.Import([alias])
            else:
                name, statement = alias.asname or alias.name, ast.ImportFrom(node.module, [alias], node.level)
            found[name] = ast.unparse(statement)
    return found


def names_cuda(code: str) -> bool:
    """Whether the code names the CUDA device (`"cuda"`, `torch.cuda`, `.cuda()`); comments do not count."""
    return any((isinstance(n, ast.Constant) and n.value == "cuda") or (isinstance(n, ast.Attribute) and n.attr == "cuda")
               for n in ast.walk(ast.parse(code)))


# ------------------------------------------------------------------ what each block is given and promises
def finite(*values) -> None:
    for v in values:
        assert torch.isfinite(torch.as_tensor(v)).all(), "non-finite values"


def near_modes(values, tol: float) -> None:
    """Every entry within `tol` of one of the stand-in data's modes (`readme_standins.MODES`)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    distance = (v[:, None] - torch.tensor(MODES, dtype=torch.float64)).abs().amin(1)
    assert (distance < tol).all(), f"samples away from the modes {MODES}: {v[:8]}"


def check_use(ns: dict) -> None:
    samples = ns["samples"]
    assert samples.shape == (1000, 2) and samples.dtype == torch.float64
    finite(samples)
    # around the ring of radius 4 (exact median radius 4.01): 20 SRK steps on karras leave a radial bias of about 0.04
    assert abs(samples.norm(dim=1).median().item() - 4.0) < 0.15


def check_flow_use(ns: dict) -> None:
    assert math.isinf(ns["sigmas"][0]) and ns["sigmas"][-1] == 0
    samples = ns["samples"]
    assert samples.shape == (1000, 2) and samples.dtype == torch.float64
    finite(samples)
    # DPM++(2M) SDE from t = 1, 20 steps uniform in t: median radius 4.00 (exact 4.01)
    assert abs(samples.norm(dim=1).median().item() - 4.0) < 0.15


def flow_pipeline_standins() -> dict:
    """`pipe` stands for an SD3 pipeline: all the block touches is its FlowMatchEuler scheduler (shift 3). Whole tiny SD3
    and Flux pipelines run every fastdiff scheduler in tests/test_diffusers_flow_pipelines.py."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return {"pipe": SimpleNamespace(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))}


def check_flow_pipeline(ns: dict) -> None:
    scheduler = ns["pipe"].scheduler
    assert type(scheduler).__name__ == "DPMpp2MScheduler" and scheduler.config.prediction_type == "flow_prediction"
    scheduler.set_timesteps(4)
    assert float(scheduler.timesteps[0]) == 1000.0  # t = 1, exactly


def cuda_standins() -> dict:
    return {"model": MixtureModel((2,)), "x": torch.randn(64, 2, device="cuda") * 80.0}


def check_compiled(ns: dict) -> None:
    eager = ns["run"]()
    assert eager.shape == (64, 2) and eager.is_cuda
    finite(eager)
    torch.testing.assert_close(ns["compiled"](), eager, rtol=1e-4, atol=1e-4)


def kdiffusion_standins() -> dict:
    sigmas = fastdiff.get_sigmas("karras", 10, 0.002, 80.0)
    return {"model": MixtureModel((2,)), "x": torch.randn(4, 2, dtype=torch.float64) * sigmas[0], "sigmas": sigmas,
            "c": torch.arange(4)}  # c: one conditioning entry per sample


def check_kdiffusion(ns: dict) -> None:
    assert ns["x"].shape == (4, 2) and ns["x"].dtype == torch.float64
    finite(ns["x"])


def check_pipeline_images(ns: dict) -> None:
    images = torch.as_tensor(ns["images"])
    assert images.shape == (4, 8, 8, 3)
    finite(images)
    assert type(ns["pipe"].scheduler).__name__ == "SRKScheduler" and ns["pipe"].scheduler.config.schedule == "logsnr"
    pipe, prompt = ns["pipe"], ns["prompt"]  # image k depends on generator k only
    again = pipe(prompt, num_inference_steps=20, num_images_per_prompt=2,
                 generator=[torch.Generator().manual_seed(s) for s in (3, 1)]).images
    torch.testing.assert_close(torch.as_tensor(again), images[[3, 1]], rtol=1e-5, atol=1e-5)


def ld3_standins() -> dict:
    model = MixtureModel((3, 32, 32))
    return {"denoiser": model, "model": model, "x": torch.randn(4, 3, 32, 32, dtype=torch.float64) * 80.0}


def check_ld3(ns: dict) -> None:
    schedule = ns["schedule"]
    assert (schedule.solver, schedule.nfe) == ("ipndm", 4)
    assert fastdiff.ld3.LearnedSchedule.load("ipndm_nfe4.json") == schedule
    assert ns["x0"].shape == (4, 3, 32, 32)
    finite(ns["x0"])
    near_modes(ns["x0"].flatten(1).mean(1), tol=0.05)


def check_ld3_pipeline(ns: dict) -> None:
    schedule, pipe = ns["schedule"], ns["pipe"]
    assert schedule.steps == 4 and schedule.to_zero and len(pipe.scheduler.timesteps) == 4
    assert fastdiff.ld3.LearnedSchedule.load("ipndm_nfe4.json") == schedule
    images = torch.as_tensor(ns["images"])
    assert images.shape == (1, 32, 32, 3)
    finite(images)
    near_modes(images.mean() * 2 - 1, tol=0.1)  # DDPMPipeline maps [-1, 1] to [0, 1]


def cap_ld3_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    learn = fastdiff.ld3.learn_sigmas

    def capped(*args, **options):
        return learn(*args, **{"max_epochs": LD3_EPOCHS, **options})

    monkeypatch.setattr(fastdiff.ld3, "learn_sigmas", capped)


def density_standins() -> dict:
    model = MixtureModel((2,))
    return {"model": model, "x0": model.target.sample(8, generator=torch.Generator().manual_seed(0))}


def check_density(ns: dict) -> None:
    logp, info = ns["logp"], ns["info"]  # logp: the exact estimator's
    assert logp.shape == (8,) and logp.dtype == torch.float64 and info.log_prob.shape == (8,) and info.nfe > 0
    finite(logp, info.log_prob)
    exact = ns["model"].target.log_prob(ns["x0"], 0.01)  # the density smoothed to sigma_min
    torch.testing.assert_close(logp, exact, rtol=0, atol=0.02)


def compose_standins() -> dict:
    sigmas = fastdiff.get_sigmas("karras", 30, 0.002, 80.0)
    return {"model_a": MixtureModel((2,), modes=(-1.0, 0.0)), "model_b": MixtureModel((2,), modes=(0.0, 1.0)),
            "x": torch.randn(64, 2, dtype=torch.float64) * sigmas[0], "sigmas": sigmas}


def check_compose(ns: dict) -> None:
    samples, log_q = ns["samples"], ns["log_q"]
    assert samples.shape == (64, 2) and log_q.shape == (64, 2)
    finite(samples, log_q)


def cap_train_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    config = fastdiff.train.TrainConfig
    monkeypatch.setattr(fastdiff.train, "TrainConfig", lambda **options: config(**{**options, "steps": TRAIN_STEPS}))


def check_train(ns: dict) -> None:
    assert ns["trainer"].step == TRAIN_STEPS
    assert ns["ft"].load_checkpoint("ckpt.pt")["step"] == TRAIN_STEPS
    assert ns["x"].shape == (1000, 2)
    finite(ns["x"])


@dataclass(frozen=True)
class Block:
    standins: Callable[[], dict] = dict  # the names the block leaves to the reader
    check: Callable[[dict], None] = lambda ns: None  # a little of what it promises, on its namespace
    patch: Callable[[pytest.MonkeyPatch], None] = lambda monkeypatch: None  # what keeps it fast, if needed


def check_recommend(ns: dict) -> None:
    assert tuple(ns["choice"]) == ("srk", "logsnr", False) and tuple(ns["ode"]) == ("ipndm", "logsnr", False)
    assert tuple(ns["fixed"]) == ("er_sde", "flow", False)
    finite(ns["samples"])


README_BLOCKS = {  # text only that block contains -> what it gets and what is checked
    "fastdiff.sample(target.denoiser": Block(check=check_use),
    "torch.compile(run, fullgraph=True)": Block(cuda_standins, check_compiled),
    "K.sample_dpmpp_2m(model": Block(kdiffusion_standins, check_kdiffusion),
    "num_images_per_prompt=4": Block(lambda: {"pipe": tiny_pipeline(), "prompt": "an astronaut riding a horse"},
                                     check_pipeline_images),
    "teacher_nfe=200": Block(ld3_standins, check_ld3),
    'schedule="learned", sigmas_file=': Block(lambda: {"pipe": mixture_pipeline((3, 32, 32))}, check_ld3_pipeline,
                                              cap_ld3_epochs),
    "ode_log_likelihood(model, x0": Block(density_standins, check_density),
    "sample_superposed([model_a, model_b]": Block(compose_standins, check_compose),
    "ft.Trainer(": Block(check=check_train, patch=cap_train_steps),
    "FlowDenoiser(target.flow_velocity)": Block(check=check_flow_use),
    "DPMpp2MScheduler.from_config(pipe.scheduler.config)": Block(flow_pipeline_standins, check_flow_pipeline),
    "choice = recommend(16)": Block(lambda: {"model": fastdiff.toy.GaussianMixture.ring(8).denoiser}, check_recommend),
}


# ------------------------------------------------------------------ running a block
def entry_for(block: CodeBlock) -> Block:
    keys = [k for k in README_BLOCKS if k in block.code]
    if len(keys) > 1:
        pytest.fail(f"{block.where}: several README_BLOCKS entries match this block ({keys}); make the keys distinct")
    return README_BLOCKS[keys[0]] if keys else Block()


def run_block(block: CodeBlock, earlier: list[CodeBlock], entry: Block, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute `block` as the README gives it; returns its namespace."""
    if names_cuda(block.code) and not torch.cuda.is_available():
        pytest.skip(f"{block.where} needs a CUDA device (torch.cuda.is_available() is False)")
    if "fastdiff.integrations.diffusers" in block.code:
        pytest.importorskip("diffusers", reason=f"{block.where} needs diffusers: pip install fastdiff[diffusers]")
    readme_imports = {}
    for b in earlier:
        readme_imports.update(imports_by_name(b.code))
    needed = free_names(block.code)
    standins = entry.standins()
    missing = sorted(needed - readme_imports.keys() - standins.keys())
    if missing:
        pytest.fail(f"{block.where}: no stand-in for {', '.join(missing)}; add them to the entry of this block in "
                    "README_BLOCKS (tests/test_readme.py), keyed by text only this block contains")
    unused = sorted(standins.keys() - (needed - readme_imports.keys()))
    if unused:
        pytest.fail(f"{block.where}: stand-ins for {', '.join(unused)}, which the block does not leave to the reader")
    ns: dict = {"__name__": "readme"}
    for name in sorted(needed & readme_imports.keys()):
        exec(readme_imports[name], ns)
    ns.update(standins)
    entry.patch(monkeypatch)
    exec(compile("\n" * (block.line - 1) + block.code, str(README), "exec"), ns)  # tracebacks show README lines
    return ns


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = BLOCKS[index]
    entry = entry_for(block)
    entry.check(run_block(block, BLOCKS[:index], entry, monkeypatch))


def test_every_entry_names_one_block():
    counts = {key: sum(key in b.code for b in BLOCKS) for key in README_BLOCKS}
    assert all(n == 1 for n in counts.values()), f"README_BLOCKS keys must each match one README block: {counts}"


def test_a_block_that_raises_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = next(i for i, b in enumerate(BLOCKS) if "fastdiff.sample(target.denoiser" in b.code)
    broken = CodeBlock(BLOCKS[index].line, BLOCKS[index].code.replace("fastdiff.sample(", "fastdiff.sample_typo("))
    with pytest.raises(AttributeError, match="sample_typo"):
        run_block(broken, BLOCKS[:index], Block(), monkeypatch)


def test_a_block_without_stand_ins_fails_naming_them(monkeypatch):
    block = CodeBlock(1, "import torch\nout = model(torch.zeros(3), sigma=sigmas[0])\n")
    with pytest.raises(pytest.fail.Exception, match="README.md:1: no stand-in for model, sigmas;"):
        run_block(block, [], Block(), monkeypatch)


def test_standin_model_is_the_mixtures_denoiser():
    model = MixtureModel((3, 2, 2), modes=(-1.0, 0.5))
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma), model.target.denoiser(x.flatten(1), sigma).view_as(x), rtol=1e-12, atol=1e-12)
