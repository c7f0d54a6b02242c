"""fastdiff's schedulers on flow-matching configs against diffusers' own flow schedulers, stepped side by side in a
pipeline's loop on a stand-in velocity model (a fixed random linear map, so both see the same model whatever their
timestep rounding); every flow config key honored or refused by name."""

import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")

from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from fastdiff.integrations.diffusers import SCHEDULERS, DPMpp2MScheduler, EulerScheduler  # noqa: E402
from fastdiff.integrations.diffusers.config_keys import REFUSED  # noqa: E402
from fastdiff.integrations.diffusers.seeds import sample_keys  # noqa: E402

_MAP = torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 4


def velocity(x, t):
    return (x.double().reshape(x.shape[0], -1) @ _MAP).reshape(x.shape).float()


def run(scheduler, x, **set_timesteps):
    scheduler.set_timesteps(**set_timesteps)
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t), t, x, return_dict=False)[0]
    return x


def start_noise(batch=3):
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(1))


def shifted(t, shift):
    return shift * t / (1 + (shift - 1) * t)


EULER_CASES = [
    ({}, {"num_inference_steps": 6}),
    ({"shift": 3.0}, {"num_inference_steps": 6}),  # SD3
    ({"use_dynamic_shifting": True, "shift": 3.0}, {"sigmas": np.linspace(1, 1 / 6, 6), "mu": 0.8}),  # Flux
    ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, {"num_inference_steps": 5, "mu": 2.0}),
    ({"shift": 3.0, "shift_terminal": 0.1}, {"num_inference_steps": 6}),  # LTX
    ({"shift": 2.0, "use_karras_sigmas": True}, {"num_inference_steps": 6}),
    ({"use_exponential_sigmas": True}, {"num_inference_steps": 6}),
]


@pytest.mark.parametrize("config, set_timesteps", EULER_CASES)
def test_euler_equals_flow_match_euler(config, set_timesteps):
    reference = FlowMatchEulerDiscreteScheduler(**config)
    ours = EulerScheduler.from_config(reference.config)
    x = start_noise()
    torch.testing.assert_close(run(ours, x, **set_timesteps), run(reference, x, **set_timesteps), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ours.timesteps, reference.timesteps, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(ours.sigmas, reference.sigmas, atol=1e-7, rtol=1e-6)
    assert math.isinf(ours.solver_sigmas[0]) and ours.timesteps[0] == 1000.0  # t = 1: sigma = inf, timestep 1000


@pytest.mark.parametrize("lower_order_final", [True, False])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp_2m_equals_dpm_solver_on_flow_sigmas(shift, lower_order_final):
    reference = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, lower_order_final=lower_order_final
    )
    ours = DPMpp2MScheduler.from_config(reference.config)
    x = start_noise()
    expected = run(reference, x, num_inference_steps=8)
    torch.testing.assert_close(run(ours, x, num_inference_steps=8), expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ours.sigmas, reference.sigmas, atol=1e-7, rtol=1e-6)
    # its flow grid starts below t = 1: at shift(1 - 1/1000)
    assert ours.sigmas[0].item() == pytest.approx(shifted(0.999, shift), rel=1e-6)


def test_static_shift_acts_twice_on_the_default_end_and_once_on_a_base_grid():
    """diffusers issue #13243, kept: without a base grid the end is shift(shift(1/1000)); with sigmas= it is shifted once."""
    ours = EulerScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    ours.set_timesteps(10)
    assert ours.sigmas[-2].item() == pytest.approx(shifted(shifted(1e-3, 3.0), 3.0), rel=1e-6)  # 0.00893
    ours.set_timesteps(sigmas=np.linspace(1, 0.1, 10))
    assert ours.sigmas[-2].item() == pytest.approx(shifted(0.1, 3.0), rel=1e-6)
    assert ours.sigmas[0].item() == 1.0


def test_flow_config_is_recognised_and_survives_save_and_load(tmp_path):
    ours = EulerScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    assert ours.is_flow and ours.config.prediction_type == "flow_prediction" and ours.config.beta_schedule is None
    ours.save_pretrained(tmp_path)
    loaded = EulerScheduler.from_pretrained(tmp_path)
    assert loaded.is_flow and loaded.config.shift == 3.0
    vp = EulerScheduler.from_config(DPMSolverMultistepScheduler().config)
    assert not vp.is_flow


def test_every_flow_config_key_is_honored():
    """A FlowMatchEuler config with every key off its default: no warning, and each key keeps the peer's value."""
    reference = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=500, shift=2.0, use_dynamic_shifting=True, base_shift=0.4, max_shift=1.3,
        base_image_seq_len=128, max_image_seq_len=2048, shift_terminal=0.05, use_karras_sigmas=True,
        time_shift_type="linear",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ours = EulerScheduler.from_config(reference.config)
    for key, value in reference.config.items():
        if not key.startswith("_"):
            assert ours.config[key] == value if key in ours.config else key in REFUSED, key
    x = start_noise()
    torch.testing.assert_close(run(ours, x, num_inference_steps=5, mu=1.5), run(reference, x, num_inference_steps=5, mu=1.5),
                               atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"invert_sigmas": True}, "does not implement config key invert_sigmas=True"),
        ({"stochastic_sampling": True}, "does not implement config key stochastic_sampling=True"),
        ({"use_beta_sigmas": True}, "does not implement config key use_beta_sigmas=True"),
        ({"shift_terminal": 1.5}, r"shift_terminal must be None or a number in \(0, 1\), got 1.5"),
        ({"shift": 0.0}, "shift must be a positive number, got 0"),
    ],
)
def test_flow_keys_refused_by_name(overrides, match):
    with pytest.raises((ValueError, ImportError), match=match):
        EulerScheduler.from_config(FlowMatchEulerDiscreteScheduler(**overrides).config)


def test_flow_dpmsolver_final_sigma_min_is_refused_by_name():
    """diffusers' flow mode takes the 'sigma_min' end from its VP beta table, which a flow model does not have."""
    config = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                         final_sigmas_type="sigma_min").config
    with pytest.raises(ValueError, match="does not implement config key final_sigmas_type='sigma_min'"):
        DPMpp2MScheduler.from_config(config)


def test_flow_keys_on_vp_configs_and_bad_flow_combinations_are_refused():
    with pytest.raises(ValueError, match="time_shift_type='linear' apply to flow models only"):
        EulerScheduler.from_config(DPMSolverMultistepScheduler().config, time_shift_type="linear")
    with pytest.raises(ValueError, match="use_lu_lambdas=True"):
        EulerScheduler.from_config(FlowMatchEulerDiscreteScheduler().config, use_lu_lambdas=True)
    dpm_flow = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction").config
    with pytest.raises(ValueError, match="use_karras_sigmas=True; accepted: False with use_flow_sigmas"):
        EulerScheduler.from_config(dpm_flow, use_karras_sigmas=True)
    ours = EulerScheduler.from_config(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config)
    with pytest.raises(ValueError, match="mu must be passed to set_timesteps when use_dynamic_shifting=True"):
        ours.set_timesteps(4)
    with pytest.raises(ValueError, match="mu .* applies to flow configs only, got mu=0.5"):
        EulerScheduler().set_timesteps(4, mu=0.5)


def test_scale_noise_and_add_noise_are_the_flow_forward_process():
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours = EulerScheduler.from_config(reference.config)
    x0, noise = torch.randn(2, 16), torch.randn(2, 16)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(6)
        scheduler.set_begin_index(2)
    t = ours.timesteps[2:3]
    torch.testing.assert_close(ours.scale_noise(x0, t, noise), reference.scale_noise(x0, reference.timesteps[2:3], noise))
    times = ours.timesteps[[1, 3]]
    expected = (1 - times[:, None] / 1000) * x0 + times[:, None] / 1000 * noise
    torch.testing.assert_close(ours.add_noise(x0, noise, times), expected)
    assert ours.index_for_timestep(ours.timesteps[4]) == 4


@pytest.mark.parametrize("solver", ["dpmpp_2m_sde", "euler_ancestral", "srk", "er_sde"])
def test_stochastic_flow_runs_key_each_sample_by_its_own_latent(solver):
    cls = SCHEDULERS[solver]
    x = start_noise(3)
    batch = run(cls.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config), x, num_inference_steps=4)
    alone = run(cls.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config), x[1:2], num_inference_steps=4)
    torch.testing.assert_close(alone, batch[1:2], atol=1e-6, rtol=1e-6)
    other = run(cls.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config), x[1:2] + 1e-3, num_inference_steps=4)
    assert (other - alone).abs().max() > 1e-2  # another latent, other noise


def test_sample_keys_depend_on_each_sample_alone():
    x = torch.randn(4, 3, 5)
    keys = sample_keys(x)
    assert keys.dtype == torch.int64 and len(set(keys.tolist())) == 4 and bool((keys >= 0).all())
    torch.testing.assert_close(sample_keys(x[2:3]), keys[2:3])
    y = x.clone()
    y[2, 1, 3] = torch.nextafter(y[2, 1, 3], torch.tensor(math.inf))  # one bit of one value
    assert sample_keys(y)[2] != keys[2] and torch.equal(sample_keys(y)[[0, 1, 3]], keys[[0, 1, 3]])
