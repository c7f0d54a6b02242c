"""k-diffusion-compatible sampler functions.

Same positional signature, keyword names, defaults and callback dict as `k_diffusion.sampling`,
so `from fastdiff import sampling as K` replaces `k_diffusion.sampling` in existing code. Every
function also takes `backend=`; the stochastic ones take `seed=` (int or one int per sample). A given
`noise_sampler(sigma, sigma_next)` wins over the seed; without one, the noise comes from fastdiff's
counter stream, which replaces k-diffusion's defaults (`torch.randn_like` for the ancestral and churn
samplers, a Brownian tree for the SDE samplers): reproducible per sample and per backend, but not the
same numbers as k-diffusion draws. `noise="brownian"` draws the seed's noise as one Brownian path per sample (the
step count then changes a sample gradually, as with k-diffusion's tree), and `BrownianTreeNoiseSampler` is that path
as a drop-in for k-diffusion's class of that name: given as `noise_sampler` here it runs inside the fused steps.
A grid may start at sigma = inf (a flow model at t = 1, x the unit noise), as in `fastdiff.sample`.
"""

from __future__ import annotations

import torch

from fastdiff.driver import sample
from fastdiff.ops.brownian import BrownianTreeNoiseSampler as BrownianTreeNoiseSampler  # k-diffusion's name, re-exported
from fastdiff.solvers.sa_solver import SDE_END_SIGMA as SA_SDE_END_SIGMA
from fastdiff.solvers.sa_solver import SDE_START_SIGMA as SA_SDE_START_SIGMA
from fastdiff.validation import check_positive, check_positive_int


def _k_sample(solver, model, x, sigmas, extra_args, callback, disable, **options):
    """`fastdiff.sample` with k-diffusion's `disable`: True hides the progress bar, None shows it only on a terminal."""
    progress = None if disable is None else not disable
    return sample(model, x, sigmas, solver, extra_args=extra_args, callback=callback, progress=progress, **options)


def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, seed=None, noise="counter",
                 backend="auto"):
    """Euler steps on the probability-flow ODE, with EDM churn (Karras et al. 2022, Alg. 2)."""
    return _k_sample("euler", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise, backend=backend,
                     s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0, seed=None, noise="counter",
                backend="auto"):
    """Heun steps on the probability-flow ODE, with EDM churn (Karras et al. 2022, Alg. 2); Euler on the step to 0."""
    return _k_sample("heun", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise, backend=backend,
                     s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, backend="auto"):
    """DPM-Solver++(2M), second-order multistep in log sigma (Lu et al. 2022, arXiv 2211.01095)."""
    return _k_sample("dpmpp_2m", model, x, sigmas, extra_args, callback, disable, backend=backend)


def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4, denoise_to_zero=False,
                 backend="auto"):
    """iPNDM, Adams-Bashforth on eps of order up to `max_order` (Zhang & Chen 2023; LD3's base solver, arXiv 2405.15506);
    `denoise_to_zero=True`: the step to sigma' = 0 is x' = D, as ComfyUI's `sample_ipndm` takes it."""
    return _k_sample("ipndm", model, x, sigmas, extra_args, callback, disable, backend=backend, max_order=max_order,
                     denoise_to_zero=denoise_to_zero)


def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4, backend="auto"):
    """iPNDM-v, iPNDM with step-size-dependent weights for non-uniform grids (diff-sampler's ipndm_v, arXiv 2312.00094)."""
    return _k_sample("ipndm_v", model, x, sigmas, extra_args, callback, disable, backend=backend, max_order=max_order)


def sample_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, solver_order=3, solver_type="bh2",
                 lower_order_final=True, disable_corrector=(), backend="auto"):
    """UniPC, the unified predictor-corrector multistep solver in data prediction (Zhao et al. 2023, arXiv 2302.04867)."""
    return _k_sample("unipc", model, x, sigmas, extra_args, callback, disable, backend=backend, solver_order=solver_order,
                     solver_type=solver_type, lower_order_final=lower_order_final, disable_corrector=disable_corrector)


def sample_dpmpp_3m(model, x, sigmas, extra_args=None, callback=None, disable=None, solver_type="midpoint",
                    lower_order_final=True, backend="auto"):
    """DPM-Solver++(3M), third-order multistep in log sigma (Lu et al. 2022, arXiv 2211.01095), as diffusers runs it."""
    return _k_sample("dpmpp_3m", model, x, sigmas, extra_args, callback, disable, backend=backend, solver_type=solver_type,
                     lower_order_final=lower_order_final)


def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4, backend="auto"):
    """Linear multistep in sigma with integrated Lagrange coefficients (k-diffusion's sample_lms; x' = D on the step to 0)."""
    return _k_sample("lms", model, x, sigmas, extra_args, callback, disable, backend=backend, order=order)


def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0,
                               backend="auto"):
    """Euler steps on d_bar = gamma d_i + (1 - gamma) d_{i-1} (Permenter & Yuan 2024, arXiv 2306.04848)."""
    return _k_sample("gradient_estimation", model, x, sigmas, extra_args, callback, disable, backend=backend,
                     ge_gamma=ge_gamma)


def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, backend="auto"):
    """DEIS tAB, Adams-Bashforth on eps in VP time of order up to `max_order` (Zhang & Chen 2023, arXiv 2204.13902)."""
    return _k_sample("deis", model, x, sigmas, extra_args, callback, disable, backend=backend, max_order=max_order)


def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, seed=None, noise="counter",
                           backend="auto"):
    """Ancestral sampling with Euler steps (DDPM's ancestral step, Ho et al. 2020, in Karras et al. 2022's form)."""
    return _k_sample("euler_ancestral", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise)


def sample_euler_maruyama(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0,
                          noise_sampler=None, seed=None, noise="counter",
                          backend="auto"):
    """Euler-Maruyama on the reverse SDE in variance time sigma^2 (Song et al. 2021, arXiv 2011.13456)."""
    return _k_sample("euler_maruyama", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, s_noise=s_noise)


def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint", seed=None, noise="counter",
                        backend="auto"):
    """DPM-Solver++(2M) SDE, 'midpoint' or 'heun' correction (Lu et al. 2022, arXiv 2211.01095)."""
    return _k_sample("dpmpp_2m_sde", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise, solver_type=solver_type)


def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, seed=None, noise="counter",
                        backend="auto"):
    """DPM-Solver++(3M) SDE (Lu et al. 2022, arXiv 2211.01095; k-diffusion's third-order multistep variant)."""
    return _k_sample("dpmpp_3m_sde", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise)


def sample_srk(model, x, sigmas, extra_args=None, callback=None, disable=None, theta=0.085, coupled=True,
               noise_sampler=None, seed=None, noise="counter",
               backend="auto"):
    """Multistep stochastic Runge-Kutta, one evaluation per step: a stage at fraction `theta` of the step whose noise
    is the step's own Brownian path up to it (fastdiff's default stochastic sampler, docs/ALGORITHMS.md sections 3, 11).
    A `noise_sampler` is called on the step's parts (sigma, sigma~) and (sigma~, sigma'), sigma~ its stage point."""
    return _k_sample("srk", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler,
                     backend=backend, theta=theta, coupled=coupled)


def sample_srk_dp(model, x, sigmas, extra_args=None, callback=None, disable=None, coupled=True, noise_sampler=None,
                  seed=None, noise="counter",
                  backend="auto"):
    """Stochastic Runge-Kutta in data-prediction form, two evaluations per step (docs/ALGORITHMS.md section 11).
    A `noise_sampler` is called on the halves (sigma, sqrt(sigma sigma')) and (sqrt(sigma sigma'), sigma') of a step."""
    return _k_sample("srk_dp", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, coupled=coupled)


def sample_srk_score(model, x, sigmas, extra_args=None, callback=None, disable=None, coupled=True, noise_sampler=None,
                     seed=None, noise="counter",
                     backend="auto"):
    """Stochastic Runge-Kutta in score form on the VP process, two evaluations per step (docs/ALGORITHMS.md section 3).
    A `noise_sampler` is called on the halves (sigma, sqrt(sigma sigma')) and (sqrt(sigma sigma'), sigma') of a step."""
    return _k_sample("srk_score", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, coupled=coupled)


def sample_exp_em(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, seed=None,
                  noise="counter", backend="auto"):
    """First-order exponential integrator of the VP reverse SDE (SRK with w1 = 0), one evaluation per step."""
    return _k_sample("exp_em", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend)


def sample_er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None,
                  noise_scaler="er_sde", max_stage=3, eta=1.0, seed=None, noise="counter",
                  backend="auto"):
    """ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169; ComfyUI's `sample_er_sde`), one evaluation per step.
    `noise_scaler` "er_sde" (the paper's default) or "reverse_sde" (strength `eta`; eta = 0 is the ODE)."""
    return _k_sample("er_sde", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler,
                     backend=backend, s_noise=s_noise, noise_scaler=noise_scaler, max_stage=max_stage, eta=eta)


def sample_seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r=0.5, seed=None, noise="counter",
                   backend="auto"):
    """SEEDS-2 (Gonzalez et al. 2023, arXiv 2305.14267; ComfyUI's `sample_seeds_2`), two evaluations per step.
    A `noise_sampler` is called on the step's parts (sigma, sigma_1) and (sigma_1, sigma'), sigma_1 its stage point."""
    return _k_sample("seeds_2", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler,
                     backend=backend, eta=eta, s_noise=s_noise, r=r)


def sample_seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r_1=1.0 / 3, r_2=2.0 / 3, seed=None, noise="counter",
                   backend="auto"):
    """SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267; ComfyUI's `sample_seeds_3`), three evaluations per step.
    A `noise_sampler` is called on the step's parts (sigma, sigma_1), (sigma_1, sigma_2), (sigma_2, sigma')."""
    return _k_sample("seeds_3", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler,
                     backend=backend, eta=eta, s_noise=s_noise, r_1=r_1, r_2=r_2)


def sample_res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, backend="auto"):
    """RES multistep, the second-order multistep exponential integrator with phi functions (Zhang et al. 2023,
    arXiv 2308.02157; ComfyUI's `sample_res_multistep`)."""
    return _k_sample("res_multistep", model, x, sigmas, extra_args, callback, disable, backend=backend)


def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                   s_noise=1.0, noise_sampler=None, seed=None, noise="counter", backend="auto"):
    """RES multistep with ancestral noise (ComfyUI's `sample_res_multistep_ancestral`): each step goes to sigma_down
    and adds s_noise sigma_up fresh noise, as `sample_euler_ancestral`."""
    return _k_sample("res_multistep_ancestral", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise)


def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler=None, predictor_order=3, corrector_order=4, use_pece=False, simple_order_2=False,
                     sde_start_sigma=SA_SDE_START_SIGMA, sde_end_sigma=SA_SDE_END_SIGMA, seed=None, noise="counter",
                     backend="auto"):
    """SA-Solver, the stochastic Adams predictor-corrector (Xue et al. 2023, arXiv 2309.05019; ComfyUI's
    `sample_sa_solver`). ComfyUI's `tau_func` is tau = `eta` on `sde_end_sigma <= sigma' <= sde_start_sigma`, else 0
    (the defaults: ComfyUI's interval for an EDM model on [0.002, 80])."""
    return _k_sample("sa_solver", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise,
                     predictor_order=predictor_order, corrector_order=corrector_order, use_pece=use_pece,
                     simple_order_2=simple_order_2, sde_start_sigma=sde_start_sigma, sde_end_sigma=sde_end_sigma)


def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                          noise_sampler=None, predictor_order=3, corrector_order=4, simple_order_2=False,
                          sde_start_sigma=SA_SDE_START_SIGMA, sde_end_sigma=SA_SDE_END_SIGMA, seed=None,
                          noise="counter", backend="auto"):
    """SA-Solver in PECE mode (ComfyUI's `sample_sa_solver_pece`): the corrected state is evaluated again, two
    evaluations per step after the first."""
    return _k_sample("sa_solver_pece", model, x, sigmas, extra_args, callback, disable, seed=seed, noise=noise,
                     noise_sampler=noise_sampler, backend=backend, eta=eta, s_noise=s_noise,
                     predictor_order=predictor_order, corrector_order=corrector_order, simple_order_2=simple_order_2,
                     sde_start_sigma=sde_start_sigma, sde_end_sigma=sde_end_sigma)


def sample_dpm_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, orders=(),
                      backend="auto"):
    """Singlestep DPM-Solver-1/2/3 on eps (Lu et al. 2022, arXiv 2206.00927): `order` evaluations per step, or one
    order per step of the grid in `orders`."""
    return _k_sample("dpm_solver", model, x, sigmas, extra_args, callback, disable, backend=backend, order=order,
                     orders=orders)


def dpm_fast_plan(sigma_min: float, sigma_max: float, n: int) -> tuple[list[float], list[int]]:
    """DPM-Solver-fast's grid and orders for n evaluations: n // 3 + 1 steps uniform in lambda = -log sigma from
    sigma_max to sigma_min, all of order 3 but the last, of order n % 3, or, where 3 divides n, the last two of
    orders 2 and 1 (the paper's Sec. 3.3)."""
    steps = n // 3 + 1
    lambdas = torch.linspace(-torch.tensor(sigma_max, dtype=torch.float64).log().item(),
                             -torch.tensor(sigma_min, dtype=torch.float64).log().item(), steps + 1, dtype=torch.float64)
    orders = [3] * (steps - 2) + [2, 1] if n % 3 == 0 else [3] * (steps - 1) + [n % 3]
    return lambdas.neg().exp().tolist(), orders


def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0.0,
                    s_noise=1.0, noise_sampler=None, backend="auto"):
    """DPM-Solver-fast (k-diffusion's `sample_dpm_fast`): n model evaluations on `dpm_fast_plan`'s grid, no step to 0.
    The grid is built in float64 (k-diffusion's in torch's default dtype). eta > 0 (k-diffusion's ancestral variant)
    is not implemented; at eta = 0 s_noise and noise_sampler do nothing, as in k-diffusion. The callback dict also
    holds k-diffusion's 't' and 't_up' (-log sigma and -log sigma_hat)."""
    if eta != 0.0:
        raise NotImplementedError(f"sample_dpm_fast: eta > 0 (ancestral DPM-Solver-fast) is not implemented, got eta={eta!r}")
    sigma_min = check_positive(float(sigma_min) if isinstance(sigma_min, torch.Tensor) else sigma_min, "sigma_min")
    sigma_max = check_positive(float(sigma_max) if isinstance(sigma_max, torch.Tensor) else sigma_max, "sigma_max")
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be below sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    sigmas, orders = dpm_fast_plan(sigma_min, sigma_max, check_positive_int(n, "n"))
    step_callback = None
    if callback is not None:
        def step_callback(info):
            callback({**info, "t": -info["sigma"].log(), "t_up": -info["sigma_hat"].log()})
    return _k_sample("dpm_solver", model, x, sigmas, extra_args, step_callback, disable, backend=backend, orders=orders)

