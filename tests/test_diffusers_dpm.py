"""DPMpp2MScheduler against DPMSolverMultistepScheduler, and what every fastdiff scheduler does with other schedulers'
config keys (`fastdiff.integrations.diffusers.config_keys`).

The full loops are those of diffusers' own test of DPMSolverMultistepScheduler (its scheduler config, a deterministic
sample and the model sample * t / (t + 1), 10 steps): the result means its test expects, and the installed diffusers
scheduler on the same inputs.
"""

import math
import warnings

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")

import diffusers  # noqa: E402
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler  # noqa: E402

from fastdiff.integrations.diffusers import SCHEDULERS, DPMpp2MScheduler, SRKScheduler  # noqa: E402
from fastdiff.integrations.diffusers.config_keys import DROPPED, REFUSED  # noqa: E402
from fastdiff.integrations.diffusers.thresholding import dynamic_threshold  # noqa: E402


def dpm_config(**overrides):
    """diffusers' DPMSolverMultistepScheduler test config."""
    config = {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "solver_order": 2,
        "prediction_type": "epsilon",
        "thresholding": False,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": False,
        "euler_at_final": False,
        "lambda_min_clipped": -float("inf"),
        "variance_type": None,
        "final_sigmas_type": "sigma_min",
    }
    return {**config, **overrides}


def deterministic_sample(flip=False):
    n = 4 * 3 * 8 * 8
    values = torch.arange(n).flip(-1) if flip else torch.arange(n)
    return (values.reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def dummy_model(sample, t, round_t=False):
    t = torch.as_tensor(t)
    t = (t.round() if round_t else t).reshape(-1, *(1,) * (sample.ndim - 1)).to(sample.dtype)
    return sample * t / (t + 1)


def full_loop(scheduler, steps=10, round_t=False, scale=1.0):
    scheduler.set_timesteps(steps)
    sample = scale * deterministic_sample()
    for t in scheduler.timesteps:
        sample = scheduler.step(dummy_model(sample, t, round_t), t, sample).prev_sample
    return sample


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    "overrides, mean",
    [
        ({}, 0.3301),
        ({"prediction_type": "v_prediction"}, 0.2251),
        ({"prediction_type": "sample"}, 1.1029),
        ({"thresholding": True, "dynamic_thresholding_ratio": 0.87, "sample_max_value": 0.5}, 1.1364),
        ({"prediction_type": "v_prediction", "use_karras_sigmas": True}, 0.2096),
        ({"prediction_type": "v_prediction", "use_lu_lambdas": True}, 0.1554),
    ],
    ids=["epsilon", "v", "sample", "thresholding", "karras-v", "lu-v"],
)
def test_full_loop_means_of_diffusers_test(overrides, mean):
    ours = DPMpp2MScheduler.from_config(DPMSolverMultistepScheduler(**dpm_config(**overrides)).config)
    assert full_loop(ours).abs().mean().item() == pytest.approx(mean, abs=1e-3)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_full_loop_with_noise_of_diffusers_test():
    """add_noise at timesteps[5], then the rest of the run: diffusers' sum 318.4111 and mean 0.4146."""
    scheduler = DPMpp2MScheduler.from_config(DPMSolverMultistepScheduler(**dpm_config()).config)
    scheduler.set_timesteps(10)
    timesteps = scheduler.timesteps[5 * scheduler.order :]
    sample = scheduler.add_noise(deterministic_sample(), deterministic_sample(flip=True), timesteps[:1])
    for t in timesteps:
        sample = scheduler.step(dummy_model(sample, t), t, sample).prev_sample
    assert sample.abs().sum().item() == pytest.approx(318.4111, abs=1e-2)
    assert sample.abs().mean().item() == pytest.approx(0.4146, abs=1e-3)


CONFIGS = [
    {},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample"},
    {"final_sigmas_type": "zero"},
    {"lower_order_final": True},
    {"euler_at_final": True},
    {"solver_order": 1},
    {"solver_order": 1, "final_sigmas_type": "zero"},
    {"thresholding": True, "sample_max_value": 0.5},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.87, "sample_max_value": 2.0, "prediction_type": "sample"},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.0},
    {"timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    {"timestep_spacing": "leading", "steps_offset": 1, "beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    {"use_karras_sigmas": True},
    {"use_karras_sigmas": True, "final_sigmas_type": "zero", "lower_order_final": True},
    {"use_lu_lambdas": True, "prediction_type": "v_prediction"},
    {"use_exponential_sigmas": True},
    {"algorithm_type": "deis", "solver_type": "logrho"},
]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("overrides", CONFIGS, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "default" for c in CONFIGS])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 16])
def test_matches_installed_diffusers(overrides, steps):
    """Same config, inputs and model as DPMSolverMultistepScheduler: equal to float32 rounding. diffusers hands the model
    an integer timestep also where the grid's sigma lies between table entries (karras, lu: rounded; exponential:
    truncated); fastdiff the exact fractional one, so there the model is given diffusers' integer timestep."""
    reference = DPMSolverMultistepScheduler(**dpm_config(**overrides))
    ours = DPMpp2MScheduler.from_config(reference.config)
    expected = full_loop(reference, steps)
    if overrides.get("use_exponential_sigmas"):
        model_t = reference.timesteps.double()
        ours.set_timesteps(steps)
        assert len(ours.timesteps) == len(model_t) - int(bool(reference.sigmas[-2] == reference.sigmas[-1]))
        sample = deterministic_sample()
        for t, seen in zip(ours.timesteps, model_t, strict=False):
            sample = ours.step(dummy_model(sample, seen), t, sample).prev_sample
    else:
        sample = full_loop(ours, steps, round_t=any(overrides.get(k) for k in ("use_karras_sigmas", "use_lu_lambdas")))
    # float32 rounding: diffusers forms exp(-h) from float32 log-SNRs, up to ~1e-4 relative on a 157 -> 0.01 step
    torch.testing.assert_close(sample, expected, atol=3e-5 * max(1.0, expected.abs().max().item()), rtol=1e-4)


def test_thresholding_changes_the_result():
    plain = full_loop(DPMpp2MScheduler.from_config(dpm_config()))
    thresholded = full_loop(DPMpp2MScheduler.from_config(dpm_config(thresholding=True, sample_max_value=0.5)))
    assert (plain - thresholded).abs().max() > 0.1


def test_dynamic_threshold_formula():
    x0 = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.3, 0.4, 0.1]])
    s = torch.quantile(x0.abs(), 0.75, dim=1).clamp(1.0, 2.5)  # 2.25 (kept), 0.325 -> 1
    expected = torch.maximum(torch.minimum(x0, s[:, None]), -s[:, None]) / s[:, None]
    torch.testing.assert_close(dynamic_threshold(x0, 0.75, 2.5), expected)
    half = dynamic_threshold(x0.half(), 0.75, 2.5)
    assert half.dtype == torch.float16


@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_every_scheduler_limits_x0(solver):
    """clip_sample and thresholding act on pred_original_sample (D) of every scheduler."""
    scheduler = SCHEDULERS[solver](clip_sample=True, clip_sample_range=0.3, seed=0)
    scheduler.set_timesteps(4)
    x = 3.0 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[0]
    out = scheduler.step(torch.zeros_like(x), t, x)  # eps = 0: D = x / alpha, far outside [-0.3, 0.3]
    assert out.pred_original_sample.abs().max().item() == pytest.approx(0.3)
    scheduler = SCHEDULERS[solver](thresholding=True, sample_max_value=4.0, dynamic_thresholding_ratio=1.0, seed=0)
    scheduler.set_timesteps(4)
    out = scheduler.step(torch.zeros_like(x), t, x)
    assert out.pred_original_sample.abs().amax(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_clip_sample_of_a_saved_ddpm_config_is_honored(tmp_path):
    """A DDPM config read from disk (as pipelines load it) has clip_sample=True: x0 is clamped to [-1, 1], which is
    DPMSolverMultistepScheduler's thresholding with sample_max_value=1."""
    DDPMScheduler().save_pretrained(tmp_path)
    config = DDPMScheduler.from_pretrained(tmp_path).config
    ours = DPMpp2MScheduler.from_config(config)
    assert ours.config.clip_sample is True
    reference = DPMSolverMultistepScheduler.from_config(config, thresholding=True, sample_max_value=1.0)
    clipped = full_loop(ours, scale=4.0)  # x0 estimates beyond [-1, 1]
    torch.testing.assert_close(clipped, full_loop(reference, scale=4.0), atol=2e-6, rtol=1e-5)
    assert (clipped - full_loop(DPMpp2MScheduler.from_config(config, clip_sample=False), scale=4.0)).abs().max() > 0.1


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"solver_order": 3}, r"DPMpp2MScheduler implements solver_order in \(1, 2\), got 3"),
        ({"algorithm_type": "sde-dpmsolver++"}, "algorithm_type in .*got 'sde-dpmsolver\\+\\+'; DPMpp2MSDEScheduler"),
        ({"algorithm_type": "dpmsolver"}, "algorithm_type in .*got 'dpmsolver'"),
        ({"solver_type": "heun"}, r"solver_type in \('midpoint',\), got 'heun'"),
        ({"final_sigmas_type": "one"}, "final_sigmas_type must be one of"),
        ({"dynamic_thresholding_ratio": 1.5}, r"dynamic_thresholding_ratio must be a number in \[0, 1\], got 1.5"),
        ({"sample_max_value": 0}, "sample_max_value must be a positive number, got 0"),
        ({"lambda_min_clipped": -5.1}, "does not implement config key lambda_min_clipped=-5.1"),
        ({"use_beta_sigmas": True}, "does not implement config key use_beta_sigmas=True"),
        ({"use_flow_sigmas": True}, "does not implement config key use_flow_sigmas=True"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_dpm_keys_refused_by_name(overrides, match):
    with pytest.raises((ValueError, ImportError), match=match):
        DPMpp2MScheduler.from_config(dpm_config(**overrides))


def test_refused_key_can_be_overridden_and_dpm_keys_are_dropped_by_other_solvers():
    config = dpm_config(lambda_min_clipped=-5.1, solver_order=3)
    with pytest.raises(ValueError, match="lambda_min_clipped"):
        SRKScheduler.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = SRKScheduler.from_config(config, lambda_min_clipped=-math.inf)  # solver_order: SRK's own peer key
    assert type(scheduler) is SRKScheduler


def test_unknown_key_warns_by_name():
    with pytest.warns(UserWarning, match="config key shiny_new_key=3 is not known"):
        DPMpp2MScheduler.from_config({**dpm_config(), "shiny_new_key": 3})


PEERS = [
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "DPMSolverSDEScheduler",
    "SASolverScheduler",
]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("solver", sorted(SCHEDULERS))
def test_every_key_of_peer_configs_is_classified(tmp_path, peer, solver):
    """Each key of each peer's config (read from disk, so that every key counts) is taken by the scheduler, or in the
    table of refused or dropped keys: from_config gives no warning, and the honored keys keep the peer's values."""
    cls = getattr(diffusers, peer)
    cls().save_pretrained(tmp_path)
    config = cls.from_pretrained(tmp_path).config
    ours = SCHEDULERS[solver]
    init_keys = set(ours.__init__.__signature__.parameters)
    unknown = [k for k in config if not k.startswith("_") and k not in init_keys | set(DROPPED) | set(REFUSED)]
    assert unknown == [] or set(unknown) <= {"eta", "s_noise", "solver_type"}, unknown
    if ours is DPMpp2MScheduler and config.get("algorithm_type") == "data_prediction":
        with pytest.raises(ValueError, match="algorithm_type in .*got 'data_prediction'"):  # SA-Solver's
            ours.from_config(config)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        scheduler = ours.from_config(config)
    aliased = {"logrho", "bh1", "bh2", "deis"}  # read as midpoint / dpmsolver++, as diffusers does
    aliased |= set(ours.option_aliases.get("solver_type", ()))  # UniPCScheduler: midpoint, heun, logrho read as bh2
    for key in init_keys & set(config):
        if key != "self" and not (isinstance(config[key], str) and config[key] in aliased):
            assert scheduler.config[key] == config[key], key
