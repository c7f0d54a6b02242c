"""Sampling builds no autograd graph unless asked: outputs carry no grad_fn, and the network's activations of
earlier steps are freed (live memory stays flat over the run), for every sampler entry point."""

import weakref

import pytest
import torch

import fastdiff
from fastdiff import sampling as K
from fastdiff.compose import sample_superposed


class RecordingNet(torch.nn.Module):
    """A denoiser with trainable weights that keeps a weak reference to each forward's hidden activation."""

    def __init__(self, dim: int = 4, width: int = 256):
        super().__init__()
        self.inp = torch.nn.Linear(dim + 1, width)
        self.out = torch.nn.Linear(width, dim)
        self.hidden: list[weakref.ref] = []

    def forward(self, x, sigma):
        h = torch.tanh(self.inp(torch.cat([x, sigma.log()[:, None].to(x.dtype)], dim=1)))
        self.hidden.append(weakref.ref(h))
        return x / (1 + sigma[:, None] ** 2) + 0.1 * self.out(h)

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.hidden)


STEPS = 50


def run_and_count(run, net):
    """Largest number of live hidden activations seen at any step of `run(callback)`."""
    peak = []
    out = run(lambda info: peak.append(net.alive()))
    return out, max(peak)


@pytest.mark.parametrize("solver", fastdiff.SOLVERS)
def test_sample_builds_no_graph_and_frees_activations(solver):
    net = RecordingNet()
    sigmas = fastdiff.get_sigmas("karras", STEPS, 0.01, 10.0)
    x = torch.randn(8, 4) * 10
    out, peak = run_and_count(lambda cb: fastdiff.sample(net, x, sigmas, solver, seed=0, callback=cb), net)
    assert out.grad_fn is None and not out.requires_grad
    assert peak <= 4, f"{peak} activations alive during the run: the graph of earlier steps is kept"


@pytest.mark.parametrize("name", [n for n in dir(K) if n.startswith("sample_")])
def test_kdiffusion_functions_build_no_graph(name):
    net = RecordingNet()
    sigmas = fastdiff.get_sigmas("karras", STEPS, 0.01, 10.0)
    grid = (0.01, 10.0, STEPS) if name == "sample_dpm_fast" else (sigmas,)  # k-diffusion's (sigma_min, sigma_max, n)
    out, peak = run_and_count(lambda cb: getattr(K, name)(net, torch.randn(8, 4) * 10, *grid, callback=cb), net)
    assert out.grad_fn is None
    assert peak <= 4


def test_differentiable_keeps_the_graph_on_request():
    net = RecordingNet()
    sigmas = fastdiff.get_sigmas("karras", 5, 0.01, 10.0)
    out = fastdiff.sample(net, torch.randn(8, 4) * 10, sigmas, "heun", differentiable=True)
    out.sum().backward()
    assert net.out.weight.grad is not None and net.out.weight.grad.abs().sum() > 0


def test_differentiable_must_be_a_bool():
    with pytest.raises(TypeError, match="differentiable must be a bool"):
        fastdiff.sample(RecordingNet(), torch.randn(2, 4), [1.0, 0.0], "euler", differentiable="yes")


@pytest.mark.parametrize("ode", [False, True])
def test_superposed_builds_no_graph(ode):
    nets = [RecordingNet(), RecordingNet()]
    sigmas = fastdiff.get_sigmas("karras", 20, 0.01, 10.0)
    out, log_q = sample_superposed(nets, torch.randn(8, 4) * 10, sigmas, "or", seed=0, ode=ode)
    assert out.grad_fn is None and log_q.grad_fn is None
    assert max(net.alive() for net in nets) <= 2


def test_likelihood_builds_no_graph():
    net = RecordingNet()
    sigmas = fastdiff.get_sigmas("karras", 10, 0.01, 10.0)
    log_p = fastdiff.density.ode_log_likelihood(net, torch.randn(8, 4), sigmas, seed=0)
    assert log_p.grad_fn is None
    assert net.out.weight.grad is None
