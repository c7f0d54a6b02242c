"""Densities: probability-flow ODE log-likelihoods and the Itô density estimator."""

from fastdiff.density.ito import ItoDensity
from fastdiff.density.likelihood import LikelihoodResult, ode_log_likelihood

__all__ = ["ItoDensity", "LikelihoodResult", "ode_log_likelihood"]
