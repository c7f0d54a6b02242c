"""diffusers' generic scheduler contract, for every fastdiff scheduler (`SCHEDULERS`): save/load round trips,
from_config across classes, step shapes, tuple and dict outputs, add_noise on every device and dtype, deprecated
kwargs, public API, trained_betas of any length, config attribute access, scale_model_input, set_timesteps with a
device; and every step count 1..50 on every schedule (set_timesteps), with a few full loops.
"""

import inspect
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")

import diffusers  # noqa: E402

from fastdiff.integrations.diffusers import SCHEDULERS  # noqa: E402

NAMES = sorted(SCHEDULERS)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def make(name, **config):
    return SCHEDULERS[name](seed=0, **config)


def sample():
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def two_steps(scheduler, x, return_dict=True):
    """Two calls as diffusers' contract makes them: the model output 0.1 x at timesteps[0], then at timesteps[1]."""
    outputs = []
    for t in scheduler.timesteps[:2]:
        outputs.append(scheduler.step(0.1 * x, t, x, return_dict=return_dict))
    return outputs


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(tmp_path, name):
    scheduler = make(name, prediction_type="v_prediction", schedule="karras", thresholding=True)
    scheduler.save_pretrained(tmp_path)
    loaded = SCHEDULERS[name].from_pretrained(tmp_path)
    config = dict(scheduler.config)
    config.pop("_use_default_values", None)
    assert dict(loaded.config) == config
    for s in (scheduler, loaded):
        s.set_timesteps(7)
    x = sample()
    for a, b in zip(two_steps(scheduler, x), two_steps(loaded, x), strict=True):
        torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
def test_from_config_across_compatible_classes(name):
    """Through every compatible diffusers scheduler and back, the config is the same; the keys the others add are
    not init arguments of ours."""
    scheduler = make(name)
    assert scheduler.compatibles and all(c is not None for c in scheduler.compatibles)
    init_keys = set(inspect.signature(SCHEDULERS[name].__init__).parameters)
    for peer in scheduler.compatibles:
        if peer is SCHEDULERS[name]:
            continue
        other = peer.from_config(scheduler.config)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            back = SCHEDULERS[name].from_config(other.config)
        assert {k: v for k, v in back.config.items() if k in scheduler.config} == dict(scheduler.config), peer.__name__
        assert not {k for k in back.config if k not in scheduler.config} & init_keys
    for other_name in NAMES:  # and across fastdiff's own schedulers
        other = SCHEDULERS[other_name].from_config(scheduler.config)
        back = SCHEDULERS[name].from_config(other.config)
        assert {k: v for k, v in back.config.items() if k in scheduler.config} == dict(scheduler.config)


@pytest.mark.parametrize("name", NAMES)
def test_step_shapes_and_tuple_equals_dict(name):
    scheduler = make(name)
    scheduler.set_timesteps(10)
    x = sample()
    outputs = two_steps(scheduler, x)
    for out in outputs:
        assert out.prev_sample.shape == x.shape and out.pred_original_sample.shape == x.shape
    scheduler.set_timesteps(10)
    tuples = two_steps(scheduler, x, return_dict=False)
    for out, tup in zip(outputs, tuples, strict=True):
        assert isinstance(tup, tuple) and len(tup) == 2
        torch.testing.assert_close(tup[0], out.prev_sample, atol=1e-5, rtol=0)
        torch.testing.assert_close(tup[1], out.pred_original_sample, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_add_noise_any_device_and_dtype(name, device, dtype):
    scheduler = make(name)
    scheduler.set_timesteps(10)
    x = sample().to(device, dtype)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    t = scheduler.timesteps[5][None]
    noised = scheduler.add_noise(x, noise, t)
    assert noised.shape == x.shape and noised.dtype == dtype and noised.device == x.device
    abar = scheduler.alphas_cumprod.double()
    expected = diffusers.DDPMScheduler(trained_betas=scheduler.betas.numpy()).add_noise(
        x.cpu().double(), noise.cpu().double(), torch.tensor([int(t)])
    )
    if float(t) == int(t):  # at a training timestep: DDPM's sqrt(abar) x + sqrt(1 - abar) noise
        tol = {torch.float16: 2e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
        torch.testing.assert_close(noised.cpu().double(), expected, atol=tol, rtol=tol)
    assert abar.shape == (1000,)


@pytest.mark.parametrize("name", NAMES)
def test_deprecated_kwargs_and_public_api(name):
    cls = SCHEDULERS[name]
    has_kwargs = "kwargs" in inspect.signature(cls.__init__).parameters
    assert has_kwargs == (len(cls._deprecated_kwargs) > 0)
    scheduler = make(name)
    assert scheduler.init_noise_sigma == 1.0
    x = sample()
    assert scheduler.scale_model_input(x, 0.0).shape == x.shape
    scheduler.set_timesteps(5)
    assert scheduler.scale_model_input(x, scheduler.timesteps[0]) is x
    assert callable(scheduler.step)


@pytest.mark.parametrize("name", NAMES)
def test_trained_betas_of_any_length(tmp_path, name):
    """As in diffusers, trained_betas defines the table and its length."""
    scheduler = SCHEDULERS[name](trained_betas=np.array([0.1, 0.3]))
    assert len(scheduler) == 2 and scheduler.betas.tolist() == pytest.approx([0.1, 0.3])
    scheduler.save_pretrained(tmp_path)
    loaded = SCHEDULERS[name].from_pretrained(tmp_path)
    assert loaded.betas.tolist() == scheduler.betas.tolist()
    loaded.set_timesteps(1)
    x = sample()
    out = loaded.step(0.1 * x, loaded.timesteps[0], x)
    assert bool(torch.isfinite(out.prev_sample).all())


@pytest.mark.parametrize("name", NAMES)
def test_attribute_access(name, caplog):
    scheduler = make(name)
    scheduler.dummy_attribute = 5
    scheduler.register_to_config(test_attribute=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scheduler.dummy_attribute == 5 and scheduler.dummy_attribute == 5
        assert scheduler.save_pretrained == scheduler.save_pretrained
    with pytest.warns(FutureWarning):
        assert scheduler.test_attribute == 5
    with pytest.raises(AttributeError) as error:
        scheduler.does_not_exist  # noqa: B018
    assert str(error.value) == f"'{type(scheduler).__name__}' object has no attribute 'does_not_exist'"


@pytest.mark.parametrize("device", DEVICES + ["meta"])
@pytest.mark.parametrize("name", NAMES)
def test_set_timesteps_with_device(name, device):
    scheduler = make(name)
    scheduler.set_timesteps(8, device=device)
    assert scheduler.timesteps.device.type == device and scheduler.timesteps.dtype == torch.float32
    assert len(scheduler.timesteps) == 8 * scheduler.order - (scheduler.order - 1)


SCHEDULES = ["discrete", "karras", "logsnr", "time_uniform", "time_quadratic"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", NAMES)
def test_every_step_count(name, schedule):
    """1..50 steps on the Stable Diffusion table (and a few on the cosine one, and ending at sigma_min): every count a
    pipeline may ask for is accepted, with timesteps in the training range."""
    cases = [(SD, n, "zero") for n in range(1, 51)]
    others = (({"beta_schedule": "squaredcos_cap_v2"}, "zero"), (SD, "sigma_min"))
    cases += [(config, n, final) for n in (1, 2, 3, 7, 50) for config, final in others]
    schedulers = {}
    for config, n, final in cases:
        key = (tuple(config.items()), final)
        if key not in schedulers:
            schedulers[key] = make(name, schedule=schedule, final_sigmas_type=final, **config)
        scheduler = schedulers[key]
        scheduler.set_timesteps(n)
        assert scheduler.num_inference_steps in (n, n - 1)  # n - 1: a named schedule's n levels end at sigma_min
        t = scheduler.timesteps
        assert len(t) >= 1 and bool(((t >= 0) & (t <= 999)).all())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("name", ["srk_dp", "heun", "srk"])
def test_full_loops_at_small_and_odd_counts(name, n):
    """The SD config with a Karras grid, where srk_dp's stage falls below the table on the last steps: finite
    samples near the data (an exact eps-model of a point mass at 0.5: D = 0.5 everywhere)."""
    scheduler = make(name, schedule="karras", **SD)
    scheduler.set_timesteps(n)
    abar = scheduler.alphas_cumprod.double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:
        a = np.interp(float(t), np.arange(1000), abar.numpy())
        eps = (x - a**0.5 * 0.5) / (1 - a) ** 0.5  # x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps with x0 = 0.5
        x = scheduler.step(eps, t, x).prev_sample
    assert bool(torch.isfinite(x).all()) and (x - 0.5).abs().max() < 0.2
