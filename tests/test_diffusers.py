"""fastdiff's diffusers schedulers (`fastdiff.integrations.diffusers`): offline, CPU, a tiny random UNet2DModel.

What is checked: every scheduler inside DDPMPipeline and DDIMPipeline via `from_config`; the scheduler loop gives
exactly what `fastdiff.sample` gives on the same grid, noise and model (so the VP <-> VE conversion is right);
DPMpp2MScheduler matches diffusers' DPMSolverMultistepScheduler to 1e-5; SRK on an exact Gaussian-mixture eps-model
matches `sample_srk` at equal NFE; config save/load; per-sample generators; img2img starts; clear errors.
"""

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

import fastdiff
from fastdiff.metrics import energy_distance
from fastdiff.models import VPEpsDenoiser
from fastdiff.solvers import make_solver
from fastdiff.toy import GaussianMixture

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")

from diffusers import (  # noqa: E402
    DDIMPipeline,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

from fastdiff.integrations.diffusers import (  # noqa: E402
    SCHEDULERS,
    DPMpp2MScheduler,
    EulerMaruyamaScheduler,
    FastdiffScheduler,
    SRKDPScheduler,
    SRKScheduler,
)

STOCHASTIC = sorted(name for name in SCHEDULERS if make_solver(name).stochastic)
STEPS = 6


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def unet64(unet):
    return copy.deepcopy(unet).to(torch.float64)


@pytest.fixture(scope="module")
def ddpm_config():
    return dict(DDPMScheduler().config)


def pipeline(unet, kind=DDPMPipeline):
    pipe = kind(unet=unet, scheduler=DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_loop(scheduler, model, x, generator=None, edit=None):
    """A Stable-Diffusion-style loop (initial-noise scaling, scale_model_input), returning the raw final sample;
    `edit(i, x)` may change the sample between calls, as inpainting pipelines and step-end callbacks do."""
    x = x * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
        if edit is not None:
            x = edit(i, x)
    return x


def unet_eps(unet):
    return lambda x, t: unet(x, t).sample


def sigma_of_t(alphas_cumprod, t):
    """The sigma of a fractional training timestep, linear in log sigma between table entries."""
    log_sigmas = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt().log()
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).clamp(0, len(log_sigmas) - 1)
    low = t.floor().long().clamp(max=len(log_sigmas) - 2)
    w = t - low
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[low + 1]).exp()


class MixtureEpsModel:
    """The exact eps-prediction VP model of a Gaussian mixture: eps(x_vp, t) = (x - D(x, sigma_t)) / sigma_t, x = x_vp / alpha."""

    def __init__(self, target, alphas_cumprod):
        self.target, self.alphas_cumprod = target, alphas_cumprod

    def __call__(self, x_vp, t):
        sigma = sigma_of_t(self.alphas_cumprod, t).expand(x_vp.shape[0]).to(x_vp.dtype)
        s = sigma.view(-1, *[1] * (x_vp.ndim - 1))
        x = x_vp * (1 + s**2).sqrt()
        return (x - self.target.denoiser(x, sigma)) / s


def test_import_fastdiff_does_not_import_diffusers():
    code = "import sys, fastdiff, fastdiff.integrations; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", [DDPMPipeline, DDIMPipeline], ids=["ddpm", "ddim"])
@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_runs_in_pipelines(unet, kind, solver):
    pipe = pipeline(unet, kind)
    pipe.scheduler = SCHEDULERS[solver].from_config(pipe.scheduler.config)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS, output_type="pt").images
    scheduler = pipe.scheduler
    assert isinstance(scheduler, SCHEDULERS[solver]) and images.shape == (2, 1, 8, 8)
    assert bool(torch.isfinite(images).all()) and images.std() > 0.01
    assert scheduler.num_inference_steps == STEPS and scheduler.step_index == len(scheduler.timesteps)
    assert len(scheduler.timesteps) == len(scheduler.sigmas) - 1 == STEPS * scheduler.order - (scheduler.order - 1)


@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_loop_equals_fastdiff_sample(unet64, ddpm_config, solver):
    """The scheduler's VP loop is fastdiff.sample on the VE form of the same model, grid and noise (float64: equal to
    rounding; in float32 the two differ by float32 rounding, about 3e-7 relative)."""
    scheduler = SCHEDULERS[solver].from_config(ddpm_config, seed=7, schedule="logsnr", sigma_min=0.05)
    scheduler.set_timesteps(STEPS)
    x_vp = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = run_loop(scheduler, unet_eps(unet64), x_vp)
    grid = scheduler.solver_sigmas
    denoiser = VPEpsDenoiser(unet_eps(unet64), scheduler.alphas_cumprod)
    x = x_vp * math.sqrt(1 + grid[0].item() ** 2)
    reference = fastdiff.sample(denoiser, x, grid.tolist(), solver, seed=7 if solver in STOCHASTIC else None)
    assert (ours - reference).abs().max() <= 1e-12 * reference.abs().max()


@pytest.mark.parametrize("solver", STOCHASTIC)
def test_brownian_noise_config_equals_fastdiff_sample(unet64, ddpm_config, solver):
    """`noise="brownian"` in the config is fastdiff.sample's noise="brownian" with the same seed; a bad value is refused."""
    scheduler = SCHEDULERS[solver].from_config(ddpm_config, seed=7, schedule="logsnr", sigma_min=0.05, noise="brownian")
    scheduler.set_timesteps(STEPS)
    x_vp = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = run_loop(scheduler, unet_eps(unet64), x_vp)
    grid = scheduler.solver_sigmas
    denoiser = VPEpsDenoiser(unet_eps(unet64), scheduler.alphas_cumprod)
    x = x_vp * math.sqrt(1 + grid[0].item() ** 2)
    reference = fastdiff.sample(denoiser, x, grid.tolist(), solver, seed=7, noise="brownian")
    assert (ours - reference).abs().max() <= 1e-12 * reference.abs().max()
    assert (ours - fastdiff.sample(denoiser, x, grid.tolist(), solver, seed=7)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="noise must be one of"):
        SCHEDULERS[solver].from_config(ddpm_config, noise="tree")


@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_a_copied_sample_changes_nothing(unet64, solver):
    """A pipeline handing back a new tensor (here an equal copy) makes the scheduler restart a pending step from it, or
    take D there inside a step; with equal values the run is the same."""
    scheduler = SCHEDULERS[solver](seed=1, schedule="logsnr", sigma_min=0.05)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    runs = []
    for edit in (None, lambda i, sample: sample.clone()):
        scheduler.set_timesteps(STEPS)
        runs.append(run_loop(scheduler, unet_eps(unet64), x, edit=edit))
    assert (runs[0] - runs[1]).abs().max() <= 1e-12 * runs[0].abs().max()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers' scheduler
@pytest.mark.parametrize(
    "config",
    [
        {},
        {
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
        },
        {"prediction_type": "sample", "timestep_spacing": "leading", "steps_offset": 1, "beta_schedule": "squaredcos_cap_v2"},
        {
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "rescale_betas_zero_snr": True,
        },
    ],
    ids=["eps-linspace", "v-trailing-scaled", "x0-leading-cosine", "v-zero-snr"],
)
def test_dpmpp_2m_matches_diffusers(unet, ddpm_config, config):
    reference = DPMSolverMultistepScheduler.from_config(ddpm_config, algorithm_type="dpmsolver++", solver_order=2, **config)
    ours = DPMpp2MScheduler.from_config(ddpm_config, **config)
    pipe = pipeline(unet)
    images = []
    for scheduler in (reference, ours):
        pipe.scheduler = scheduler
        images.append(
            pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=8, output_type="pt").images
        )
    assert (images[0] - images[1]).abs().max() < 1e-5
    # the raw samples, also when the loop hands the scheduler a changed sample (here: every call, and a blend at call 3),
    # and on a grid of custom timesteps
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))

    def edit(i, sample):
        return 0.9 * sample + 0.1 * x if i == 3 else sample.clone()

    for grid in ({"num_inference_steps": 8}, {"timesteps": [999, 850, 700, 500, 300, 150, 40]}):
        raw = []
        for scheduler in (reference, ours):
            scheduler.set_timesteps(**grid)
            raw.append(run_loop(scheduler, unet_eps(unet), x, edit=edit))
        # a random eps-model drives raw samples to hundreds: compare relative to their size (float32 rounding: ~3e-7)
        assert (raw[0] - raw[1]).abs().max() < 1e-5 * max(1.0, raw[0].abs().max().item())


def test_srk_on_mixture_matches_sample_srk():
    """At equal NFE the SRK scheduler's samples are sample_srk's (same grid and per-sample seeds), and so is their
    distance to exact samples; and SRK beats Euler-Maruyama at that NFE."""
    target = GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]]), stds=0.25)
    exact = target.sample(1500, generator=torch.Generator().manual_seed(1))
    x_vp = torch.randn(1500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    samples = {}
    for name, cls in (("srk", SRKScheduler), ("euler_maruyama", EulerMaruyamaScheduler)):
        scheduler = cls(schedule="logsnr", seed=5)
        scheduler.set_timesteps(10)
        samples[name] = run_loop(scheduler, MixtureEpsModel(target, scheduler.alphas_cumprod), x_vp)
    grid = scheduler.solver_sigmas
    reference = fastdiff.sampling.sample_srk(target.denoiser, x_vp * math.sqrt(1 + grid[0].item() ** 2), grid, seed=5)
    assert (samples["srk"] - reference).abs().max() < 1e-5
    distance = energy_distance(samples["srk"], exact)
    assert distance == pytest.approx(energy_distance(reference, exact), rel=1e-3)
    assert distance < 0.5 * energy_distance(samples["euler_maruyama"], exact)


@pytest.mark.parametrize("solver", STOCHASTIC)
def test_per_sample_generators_reproduce_each_image(unet64, solver):
    """float64, so that the UNet's batch-size-dependent float32 rounding does not blur the check."""
    pipe = pipeline(unet64)
    pipe.scheduler = SCHEDULERS[solver].from_config(pipe.scheduler.config)

    def images(seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return pipe(batch_size=len(seeds), generator=generators, num_inference_steps=STEPS, output_type="pt").images

    batch = images([10, 11, 12])
    torch.testing.assert_close(images([11])[0], batch[1], atol=1e-9, rtol=0)
    torch.testing.assert_close(images([12, 10])[1], batch[0], atol=1e-9, rtol=0)
    # and the scheduler's own noise matters: the same initial noise with another key gives another sample
    scheduler = pipe.scheduler
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    pair = []
    for seed in (0, 1):
        scheduler.set_timesteps(STEPS)
        pair.append(run_loop(scheduler, unet_eps(unet64), x, generator=torch.Generator().manual_seed(seed)))
    assert (pair[0] - pair[1]).abs().max() > 1e-3


def test_seed_config_and_global_generator():
    model = MixtureEpsModel(GaussianMixture.ring(k=4, radius=1.0, std=0.2), SRKScheduler().alphas_cumprod)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))

    def run(scheduler, generator=None):
        scheduler.set_timesteps(5)
        return run_loop(scheduler, model, x, generator=generator)

    seeded = SRKScheduler(seed=4)
    torch.testing.assert_close(run(seeded), run(seeded), atol=0, rtol=0)
    torch.manual_seed(9)
    first = run(SRKScheduler())
    torch.manual_seed(9)
    torch.testing.assert_close(run(SRKScheduler()), first, atol=0, rtol=0)
    # a generator wins over the seed
    assert (run(SRKScheduler(seed=4), torch.Generator().manual_seed(0)) - run(seeded)).abs().max() > 1e-3


def test_config_save_load_roundtrip(tmp_path, ddpm_config):
    scheduler = SRKScheduler.from_config(
        ddpm_config, theta=0.1, schedule="karras", rho=5.0, seed=3, prediction_type="v_prediction"
    )
    scheduler.save_pretrained(tmp_path)
    loaded = SRKScheduler.from_pretrained(tmp_path)
    assert type(loaded) is SRKScheduler
    for key in ("theta", "schedule", "rho", "seed", "prediction_type", "backend", "beta_schedule"):
        assert loaded.config[key] == scheduler.config[key]
    for s in (scheduler, loaded):
        s.set_timesteps(7)
    torch.testing.assert_close(loaded.timesteps, scheduler.timesteps, atol=0, rtol=0)
    torch.testing.assert_close(loaded.solver_sigmas, scheduler.solver_sigmas, atol=0, rtol=0)
    # switching to another fastdiff scheduler keeps the shared config (diffusers keeps theta as a hidden entry)
    other = DPMpp2MScheduler.from_config(scheduler.config)
    assert type(other) is DPMpp2MScheduler and other.config.schedule == "karras" and other.config.seed == 3
    # and back to diffusers
    assert DPMSolverMultistepScheduler.from_config(scheduler.config).config.prediction_type == "v_prediction"


@pytest.mark.parametrize("suffix", ["json", "pt"])
def test_learned_sigmas_file(tmp_path, suffix):
    sigmas = [80.0, 20.0, 5.0, 1.0, 0.2, 0.03]
    path = tmp_path / f"schedule.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps({"sigmas": sigmas}))
    else:
        torch.save(torch.tensor(sigmas + [0.0], dtype=torch.float64), path)
    scheduler = SRKScheduler(schedule="learned", sigmas_file=str(path))
    scheduler.set_timesteps(len(sigmas))
    assert scheduler.solver_sigmas.tolist() == sigmas + [0.0]
    scheduler.save_pretrained(tmp_path / "saved")
    loaded = SRKScheduler.from_pretrained(tmp_path / "saved")
    loaded.set_timesteps()
    torch.testing.assert_close(loaded.timesteps, scheduler.timesteps, atol=0, rtol=0)
    with pytest.raises(ValueError, match="schedule of 6 steps; run with num_inference_steps=6, got 50"):
        loaded.set_timesteps(50)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun", "ipndm"])
def test_ld3_schedule_file_evaluates_at_the_model_times(tmp_path, unet64, ddpm_config, solver):
    """An LD3 schedule file brings its decoupled model times: the pipeline's timesteps are those of the model sigmas,
    and the loop equals fastdiff.sample given the schedule (float64), not the bare grid."""
    from fastdiff.ld3 import LearnedSchedule
    from fastdiff.ld3.solvers import count_evaluations

    evaluations = count_evaluations(solver, {}, 5, True)
    schedule = LearnedSchedule(
        solver=solver, solver_options={}, nfe=evaluations, steps=5, evaluations=evaluations, sigma_min=0.05,
        sigma_max=10.0, to_zero=True, decoupled=True, sigma_list=(10.0, 3.0, 1.0, 0.3, 0.05, 0.0),
        model_sigma_list=(10.0, 2.4, 1.3, 0.25, 0.05, 0.0),
    )
    path = tmp_path / "ld3.json"
    schedule.save(path)
    scheduler = SCHEDULERS[solver].from_config(ddpm_config, schedule="learned", sigmas_file=str(path))
    scheduler.set_timesteps()
    assert scheduler.solver_sigmas.tolist() == list(schedule.sigma_list)
    x_vp = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = run_loop(scheduler, unet_eps(unet64), x_vp)
    denoiser = VPEpsDenoiser(unet_eps(unet64), scheduler.alphas_cumprod)
    x = x_vp * math.sqrt(1 + 10.0**2)
    seen = []
    reference = fastdiff.sample(lambda y, s: (seen.append(float(s[0])), denoiser(y, s))[1], x, schedule, solver)
    assert (ours - reference).abs().max() <= 1e-12 * reference.abs().max()
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), torch.tensor(seen, dtype=torch.float64), rtol=1e-6, atol=0)
    assert scheduler.timesteps.tolist() == pytest.approx(
        scheduler._table.timesteps_of(seen).tolist(), rel=1e-6
    )
    bare = fastdiff.sample(denoiser, x, schedule.sigmas, solver)
    assert (ours - bare).abs().max() > 1e-4 * reference.abs().max()
    other = "euler" if solver != "euler" else "heun"
    with pytest.raises(ValueError, match=f"learned for solver {solver!r}"):
        SCHEDULERS[other].from_config(ddpm_config, schedule="learned", sigmas_file=str(path))


def test_pipeline_save_load_keeps_the_scheduler(tmp_path, unet):
    from diffusers import DiffusionPipeline

    pipe = pipeline(unet)
    pipe.scheduler = SRKScheduler.from_config(pipe.scheduler.config, theta=0.1)
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is SRKScheduler and loaded.scheduler.config.theta == 0.1


def test_order_two_follows_the_diffusers_convention():
    """srk_dp evaluates twice per step (once on the last): 2N - 1 timesteps, and the progress-bar rule of diffusers'
    pipelines (update when (i + 1) > warmup and (i + 1) % order == 0, or at the end) advances N times."""
    scheduler = SRKDPScheduler(schedule="logsnr", sigma_min=0.1)
    scheduler.set_timesteps(5)
    n, order, timesteps = scheduler.num_inference_steps, scheduler.order, scheduler.timesteps
    assert n == 5 and order == 2 and len(timesteps) == 2 * n - 1
    warmup = len(timesteps) - n * order
    updates = sum(i == len(timesteps) - 1 or ((i + 1) > warmup and (i + 1) % order == 0) for i in range(len(timesteps)))
    assert updates == n
    # a run may start at a step boundary (img2img uses t_start * order) but not inside a step
    model = MixtureEpsModel(GaussianMixture.ring(k=4, radius=1.0, std=0.2), scheduler.alphas_cumprod)
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    scheduler.set_begin_index(2)
    assert torch.isfinite(run_from(scheduler, model, x, 2)).all()
    scheduler.set_timesteps(5)
    scheduler.set_begin_index(1)
    with pytest.raises(ValueError, match=r"cannot start a run at timesteps\[1\] \(inside a step of 2 evaluations\)"):
        run_from(scheduler, model, x, 1)


def run_from(scheduler, model, x, start, as_float=False):
    """The loop of an img2img pipeline from timesteps[start]; `as_float` hands step() the timestep as a Python float."""
    for t in scheduler.timesteps[start:]:
        x = scheduler.step(model(x, t), t.item() if as_float else t, x).prev_sample
    return x


@pytest.mark.parametrize("solver", ["dpmpp_2m", "srk"])
@pytest.mark.parametrize("locate", ["begin_index", "timestep_view", "timestep_value"])
def test_img2img_start(unet64, solver, locate):
    """add_noise at timesteps[k], then a run from evaluation k, is fastdiff.sample from that sigma on the rest of the grid.
    The scheduler finds k from set_begin_index, from the timestep tensor (a view of `timesteps`) or from its value."""
    scheduler = SCHEDULERS[solver](seed=2)
    scheduler.set_timesteps(8)
    k = 3
    image = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = scheduler.add_noise(image, noise, scheduler.timesteps[k : k + 1].repeat(2))
    if locate == "begin_index":
        scheduler.set_begin_index(k)
    ours = run_from(scheduler, unet_eps(unet64), start, k, as_float=locate == "timestep_value")
    sigma = scheduler.sigmas[k].item()
    grid = [sigma, *scheduler.solver_sigmas[k + 1 :].tolist()] if solver == "srk" else scheduler.solver_sigmas[k:].tolist()
    denoiser = VPEpsDenoiser(unet_eps(unet64), scheduler.alphas_cumprod)
    reference = fastdiff.sample(denoiser, start * math.sqrt(1 + grid[0] ** 2), grid, solver, seed=2)
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_add_noise_matches_ddpm():
    ours, theirs = DPMpp2MScheduler(beta_schedule="scaled_linear"), DDPMScheduler(beta_schedule="scaled_linear")
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("schedule", ["discrete", "karras", "logsnr", "time_uniform", "time_quadratic"])
def test_schedules(schedule):
    scheduler = DPMpp2MScheduler(schedule=schedule)
    scheduler.set_timesteps(10)
    grid = scheduler.solver_sigmas
    assert len(grid) == 11 and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())
    assert grid[0].item() == pytest.approx(scheduler.sigmas[0].item(), rel=1e-6)
    assert grid[0].item() == pytest.approx(float(((1 - scheduler.alphas_cumprod[-1]) / scheduler.alphas_cumprod[-1]) ** 0.5))
    t = scheduler.timesteps.double()
    if schedule == "time_uniform":
        torch.testing.assert_close(t, torch.linspace(999, 0, 10, dtype=torch.float64), atol=1e-3, rtol=0)
    if schedule == "logsnr":
        gaps = grid[:-2].log() - grid[1:-1].log()
        torch.testing.assert_close(gaps, gaps[:1].expand_as(gaps))


def test_diffusers_schedule_flags_pick_fastdiff_schedules():
    flagged = DPMpp2MScheduler(use_karras_sigmas=True, rho=7.0)
    named = DPMpp2MScheduler(schedule="karras")
    for s in (flagged, named):
        s.set_timesteps(6)
    torch.testing.assert_close(flagged.solver_sigmas, named.solver_sigmas, atol=0, rtol=0)


def test_scheduler_interface():
    scheduler = SRKScheduler()
    assert len(scheduler) == 1000 and scheduler.init_noise_sigma == 1.0 and scheduler.order == 1
    assert DPMSolverMultistepScheduler in scheduler.compatibles
    x = torch.randn(2, 2)
    assert scheduler.scale_model_input(x, 5.0) is x
    scheduler.set_timesteps(10, device="cpu")
    assert scheduler.timesteps.dtype == torch.float32 and scheduler.timesteps[0] == 999
    assert scheduler.timesteps[1] != scheduler.timesteps[1].round()  # SRK's stage points fall between training steps
    model = MixtureEpsModel(GaussianMixture.ring(k=4, radius=1.0, std=0.2), scheduler.alphas_cumprod)
    t = scheduler.timesteps[0]
    out = scheduler.step(model(x, t), t, x)
    assert out.prev_sample.shape == x.shape and out.pred_original_sample.shape == x.shape
    t = scheduler.timesteps[1]
    prev, denoised = scheduler.step(model(out.prev_sample, t), t, out.prev_sample, return_dict=False)
    assert scheduler.step_index == 2
    copied = copy.deepcopy(scheduler)  # a copy drops the run in progress
    assert copied.step_index is None and copied.timesteps.equal(scheduler.timesteps)


def test_half_precision_sample_keeps_its_dtype():
    scheduler = SRKScheduler(seed=0)
    scheduler.set_timesteps(4)
    model = MixtureEpsModel(GaussianMixture.ring(k=4, radius=1.0, std=0.2), scheduler.alphas_cumprod)
    x = run_loop(scheduler, lambda x, t: model(x.float(), t).half(), torch.randn(3, 2).half())
    assert x.dtype == torch.float16 and bool(torch.isfinite(x).all())


def test_learned_variance_output_uses_its_mean_half():
    scheduler = DPMpp2MScheduler(variance_type="learned_range")
    scheduler.set_timesteps(3)
    x = torch.randn(2, 2, 4)
    t = scheduler.timesteps[0]
    eps = torch.randn(2, 2, 4)
    both = scheduler.step(torch.cat([eps, torch.randn(2, 2, 4)], dim=1), t, x).prev_sample
    scheduler.set_timesteps(3)
    torch.testing.assert_close(both, scheduler.step(eps, t, x).prev_sample)


@pytest.mark.parametrize(
    "cls, config, exc, match",
    [
        (SRKScheduler, {"beta_schedule": "cosine"}, ValueError, "beta_schedule must be one of"),
        (SRKScheduler, {"trained_betas": [0.01]}, ValueError, r"trained_betas must be a 1-D list of at least 2 numbers"),
        (SRKScheduler, {"prediction_type": "flow_prediction"}, ValueError, "prediction_type must be one of"),
        (SRKScheduler, {"timestep_spacing": "uniform"}, ValueError, "timestep_spacing must be one of"),
        (SRKScheduler, {"schedule": "ays"}, ValueError, "schedule must be one of"),
        (SRKScheduler, {"schedule": "learned"}, ValueError, "schedule='learned' and sigmas_file go together"),
        (SRKScheduler, {"sigma_max": 1e4}, ValueError, r"must lie in the model's noise range \[0.0100013, 157.407\]"),
        (SRKScheduler, {"theta": 0.9}, ValueError, r"theta must be in \[0(\.0)?, 0.5\], got 0.9"),
        (SRKScheduler, {"max_order": 2}, TypeError, "unexpected keyword argument 'max_order'"),
        (IPNDM := SCHEDULERS["ipndm"], {"max_order": 7}, ValueError, "max_order must be an int in"),
        (SRKScheduler, {"backend": "gpu"}, ValueError, "backend must be 'auto' or one of"),
        (SRKScheduler, {"seed": "7"}, TypeError, "seed must be an int or None, got str"),
        (SRKScheduler, {"use_karras_sigmas": True, "use_lu_lambdas": True}, ValueError, "at most one of"),
        (FastdiffScheduler, {}, TypeError, "FastdiffScheduler is a base class"),
    ],
)
def test_bad_configs_raise(cls, config, exc, match):
    with pytest.raises(exc, match=match):
        cls(**config)


def test_bad_calls_raise():
    scheduler = SRKScheduler()
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match=r"call set_timesteps\(...\) before step\(\)"):
        scheduler.step(x, 999, x)
    with pytest.raises(ValueError, match="pass exactly one of num_inference_steps, timesteps, sigmas"):
        scheduler.set_timesteps(10, sigmas=[10.0, 1.0])
    with pytest.raises(ValueError, match="sigmas must lie in the model's noise range"):
        scheduler.set_timesteps(sigmas=[500.0, 1.0])
    with pytest.raises(ValueError, match="timesteps must be strictly decreasing"):
        scheduler.set_timesteps(timesteps=[100, 500])
    with pytest.raises(ValueError, match=r"does not first evaluate D at its input \(x, sigmas\[0\]\)"):
        SCHEDULERS["heun"](s_churn=1.0).set_timesteps(5)
    scheduler.set_timesteps(3)
    t = scheduler.timesteps[0]
    with pytest.raises(ValueError, match="generator list must have one generator per sample: got 1 for batch size 2"):
        scheduler.step(x, t, x, generator=[torch.Generator()])
    scheduler.set_timesteps(3)
    with pytest.raises(ValueError, match="timestep 123.0 is not one of scheduler.timesteps"):
        scheduler.step(x, 123, x)
    with pytest.raises(ValueError, match=r"model_output must have the sample's shape \(2, 3\), got \(2, 6\)"):
        scheduler.step(torch.randn(2, 6), t, x)
    scheduler.set_timesteps(3)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    with pytest.raises(RuntimeError, match="the run already reached sigma = 0"):
        scheduler.step(x, t, x)
