"""What a fastdiff scheduler does with each key of another diffusers scheduler's config (`from_config(peer.config)`).

A key that the scheduler's `__init__` takes is honored (`schedulers.COMMON_CONFIG`, plus DPMSolverMultistepScheduler's
solver keys on DPMpp2MScheduler). Every other key of the config is checked by `check_foreign_keys` against this table,
before diffusers' `from_config` would drop it without a word:

| key | comes from | what happens | why |
|---|---|---|---|
| num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr | all VP schedulers | honored | the noise table (`trained_betas` of any length defines it) |
| prediction_type, variance_type | all | honored | epsilon / v_prediction / sample; learned variances: the mean half of the channels |
| timestep_spacing, steps_offset | all | honored | schedule="discrete", spaced as DPMSolverMultistepScheduler spaces them |
| use_karras_sigmas, use_exponential_sigmas, use_lu_lambdas, sigma_min, sigma_max | Euler, DPMSolver, UniPC, ... | honored | read as schedule="karras" / "logsnr" between sigma_min and sigma_max |
| thresholding, dynamic_thresholding_ratio, sample_max_value, clip_sample, clip_sample_range | DDPM, DDIM, DPMSolver, UniPC, DEIS, Heun, ... | honored | limits on x0 (`thresholding`) |
| final_sigmas_type | Euler, DPMSolver, UniPC | honored | "zero": the last step goes to 0; "sigma_min": the run stops at the grid's lowest sigma (refused on a flow config, where diffusers reads its VP beta table) |
| solver_order, algorithm_type, solver_type, lower_order_final, euler_at_final | DPMSolverMultistep, UniPC, DEIS, ... | honored by DPMpp2MScheduler (refused there when not DPM-Solver++ 1 or 2 with midpoint) and UniPCScheduler (solver_order, solver_type, lower_order_final); dropped by the others | the peer's own solver |
| use_beta_sigmas | Euler, Heun, LMS, KDPM2, DPMSolver, UniPC, ... | refused when True | the beta-distribution grid is not implemented (`schedule` picks fastdiff's grids) |
| shift, use_dynamic_shifting, time_shift_type, shift_terminal | FlowMatchEuler (and DPMSolver, UniPC: the last three) | honored on a flow config, refused off their defaults on a VP one | the flow grid (`timestep_grids.flow_grid`) |
| base_shift, max_shift, base_image_seq_len, max_image_seq_len | FlowMatchEuler | kept in the config | the pipeline reads them to compute `mu` |
| use_flow_sigmas, flow_shift | DPMSolver, UniPC, DEIS, ... | honored with prediction_type="flow_prediction"; use_flow_sigmas=True refused without it | DPMSolver's flow grid |
| invert_sigmas | FlowMatchEuler | refused when True | Mochi's inverted time is not implemented |
| stochastic_sampling | FlowMatchEuler | refused when True | the step rule decides the noise: pick a stochastic fastdiff scheduler |
| lambda_min_clipped | DPMSolver, SASolver | refused when finite | the clipped grid end is not implemented |
| timestep_type | Euler | refused unless "discrete" | "continuous" feeds the model 0.25 log sigma, not a training timestep |
| interpolation_type | Euler | refused unless "linear" | "log_linear" is another grid (schedule="logsnr" is fastdiff's) |
| set_alpha_to_one | DDIM, PNDM | dropped | the last step of DDIM's own grid; here `final_sigmas_type` decides it |
| skip_prk_steps | PNDM | dropped | PNDM's own warm-up steps |
| predict_x0, disable_corrector, solver_p | UniPC | honored by UniPCScheduler (refused there when predict_x0 is False or solver_p is set); dropped by the others | UniPC's own predictor-corrector |
| predictor_order, corrector_order, tau_func | SASolver | dropped | SA-Solver's own orders and noise |
| noise_sampler_seed | DPMSolverSDE | dropped | the peer's Brownian tree; fastdiff's noise comes from the generator or `seed` |
| an option of another fastdiff solver (theta, coupled, eta, s_noise, s_churn, max_order, ...) | fastdiff | dropped | another step rule's option |
| any other key | | warning naming it, then dropped | not known here, so it may change what the peer computes |

A config is a flow config (`is_flow_config`) when its prediction_type is "flow_prediction" (DPMSolver, UniPC, ... with
use_flow_sigmas) or when it has FlowMatchEulerDiscreteScheduler's `shift` and no betas (`beta_start`, `beta_end`,
`beta_schedule`, `trained_betas`); from_config then sets prediction_type="flow_prediction" and, unless
use_flow_sigmas, beta_schedule=None (a flow model has no betas), which is how a saved fastdiff config records it
(prediction_type="flow_prediction" with the VP betas and without use_flow_sigmas is refused). On a flow config the VP keys (betas, timestep_spacing, steps_offset) have nothing to act
on and are unused; use_lu_lambdas is refused there, and so are use_karras_sigmas / use_exponential_sigmas with
use_flow_sigmas (diffusers reads them on its VP table there).

A refused key raises ValueError naming the key, its value and what is accepted; pass the accepted value to
`from_config` (e.g. `from_config(config, use_beta_sigmas=False)`) to drop it deliberately.
"""  # noqa: E501 (the table's rows)

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

# key -> (is the value one this scheduler can ignore?, what is accepted)
REFUSED: dict[str, tuple[Callable[[object], bool], str]] = {
    "use_beta_sigmas": (lambda v: not v, "False (schedule= picks fastdiff's grids)"),
    "lambda_min_clipped": (lambda v: isinstance(v, (int, float)) and v == -math.inf, "-inf (no clipped grid end)"),
    "timestep_type": (lambda v: v == "discrete", "'discrete' (the model sees training timesteps)"),
    "interpolation_type": (lambda v: v == "linear", "'linear' (schedule='logsnr' is the log-linear grid)"),
}
DROPPED: dict[str, str] = {
    "set_alpha_to_one": "the last step of DDIM's own grid; final_sigmas_type decides it here",
    "skip_prk_steps": "PNDM's own warm-up steps",
    "solver_order": "the peer's own solver",
    "algorithm_type": "the peer's own solver",
    "solver_type": "the peer's own solver",
    "lower_order_final": "the peer's own solver",
    "euler_at_final": "the peer's own solver",
    "predict_x0": "UniPC's own predictor-corrector",
    "disable_corrector": "UniPC's own predictor-corrector",
    "solver_p": "UniPC's own predictor-corrector",
    "predictor_order": "SA-Solver's own orders",
    "corrector_order": "SA-Solver's own orders",
    "tau_func": "SA-Solver's own noise",
    "noise_sampler_seed": "the peer's Brownian tree; the noise comes from the generator or `seed`",
}


FLOW_PREDICTION = "flow_prediction"
_BETA_KEYS = ("beta_start", "beta_end", "beta_schedule", "trained_betas")


def is_flow_config(config: dict) -> bool:
    """A rectified-flow model's config: prediction_type "flow_prediction", or FlowMatchEuler's keys (shift, no betas)."""
    return config.get("prediction_type") == FLOW_PREDICTION or ("shift" in config and not any(k in config for k in _BETA_KEYS))


def check_foreign_keys(cls_name: str, config: dict, other_options: Iterable[str]) -> None:
    """Raise for a refused key with a value that changes the math; warn for a key this table does not know.
    `config` holds the keys the scheduler's `__init__` does not take; `other_options` the options of fastdiff's other
    solvers (dropped)."""
    other_options = set(other_options)
    for key, value in config.items():
        if key in REFUSED:
            neutral, accepted = REFUSED[key]
            if not neutral(value):
                raise ValueError(
                    f"{cls_name} does not implement config key {key}={value!r}; accepted: {accepted}. "
                    f"Pass {key}= to from_config to override it"
                )
        elif key not in DROPPED and key not in other_options:
            warnings.warn(
                f"{cls_name}.from_config: config key {key}={value!r} is not known to fastdiff's schedulers and is "
                "ignored; check that it does not change what you expect",
                UserWarning,
                stacklevel=4,
            )
