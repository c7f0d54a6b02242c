"""LD3, likelihoods and SuperDiff on flow-matching models: `fastdiff.models.FlowDenoiser` around the exact velocity
of a `fastdiff.toy.GaussianMixture` (`flow_velocity`), checked against the mixture's exact densities and ODE maps."""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff.density import ode_log_likelihood
from fastdiff.models import FlowDenoiser
from fastdiff.toy import GaussianMixture

MIXTURE = GaussianMixture([[-2.0, 0.5], [1.5, -1.0]], stds=[0.5, 0.8], weights=[0.4, 0.6])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy models' tiny tensors are slower with several threads (thread wake-ups dominate)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Likelihoods: the grid may end at sigma_max = inf (t = 1), prior N(0, I) on the unit noise
# ---------------------------------------------------------------------------------------------
def test_flow_log_likelihood_from_t_one_matches_the_exact_log_density():
    """Heun on 256 log-uniform steps from sigma 0.01 to 10, then the step to t = 1: measured max error 0.0011 nats."""
    x0 = MIXTURE.sample(16, torch.Generator().manual_seed(0))
    sigmas = [math.inf, *fastdiff.get_sigmas("logsnr", 256, 0.01, 10.0)[:-1].tolist()]
    got = ode_log_likelihood(FlowDenoiser(MIXTURE.flow_velocity), x0, sigmas, estimator="exact", return_info=True)
    exact = MIXTURE.log_prob(x0, 0.01)
    assert float((got.log_prob - exact).abs().max()) < 0.01
    torch.testing.assert_close(got.prior_log_prob, -0.5 * (got.x_noise**2).sum(1) - math.log(2 * math.pi))


@pytest.mark.parametrize(("solver", "max_error", "min_gain"), [("euler", 2e-3, 50.0), ("heun", 1e-5, 500.0)])
def test_step_to_t_one_has_the_local_order_of_its_rule(solver, max_error, min_gain):
    """One step [s, inf] from x ~ p_s gives log p_s(x) exactly in the limit: its error falls as 1/s^2 (Euler) and
    1/s^3 (Heun), measured 0.10 -> 8.3e-4 and 1.3e-3 -> 1.1e-6 from s = 10 to 100."""
    errors = []
    for s in (10.0, 100.0):
        x = MIXTURE.sample(64, torch.Generator().manual_seed(1), sigma=s)
        got = ode_log_likelihood(FlowDenoiser(MIXTURE.flow_velocity), x, [s, math.inf], estimator="exact", solver=solver)
        errors.append(float((got - MIXTURE.log_prob(x, s)).abs().max()))
    assert errors[1] < max_error
    assert errors[0] > min_gain * errors[1], errors


def test_likelihood_grid_with_inf_elsewhere_is_refused():
    x0 = MIXTURE.sample(2, torch.Generator().manual_seed(2))
    denoiser = FlowDenoiser(MIXTURE.flow_velocity)
    for bad in ([0.1, math.inf, 10.0], [0.1, math.nan, 10.0], [math.inf, 1.0, math.inf]):
        with pytest.raises(ValueError, match="sigmas"):
            ode_log_likelihood(denoiser, x0, bad)
    with pytest.raises(ValueError, match="prediction='eps'"):
        ode_log_likelihood(FlowDenoiser(lambda x, t: x, prediction="eps"), x0, [0.1, 1.0, math.inf], estimator="exact")
