"""A model that returns NaN partway through a pipeline run: every fastdiff scheduler raises NonFiniteError at the
run's last step, naming the step and sigma where the output first was not finite, after one host read per run;
`check_finite=False` in the config returns the raw result."""

import pytest
import torch

pytest.importorskip("diffusers")

import fastdiff  # noqa: E402
from fastdiff.integrations.diffusers import SCHEDULERS  # noqa: E402


def run(scheduler, bad_call: int | None, steps: int = 6):
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for call, t in enumerate(scheduler.timesteps):
        eps = 0.5 * x
        if bad_call is not None and call >= bad_call:
            eps = eps.clone()
            eps[1, 0, 0, 0] = float("nan")
        x = scheduler.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_names_the_first_bad_step(name):
    scheduler = SCHEDULERS[name](seed=0)
    expected = r"the model returned NaN or Inf at step \d+ \(sigma=[0-9.e+-]+, evaluation 3 of"
    with pytest.raises(fastdiff.NonFiniteError, match=expected):
        run(scheduler, bad_call=2)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_finite_run_reads_the_flags_once(name, monkeypatch):
    reads = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: reads.append(1) or real(self, *a, **k))
    out = run(SCHEDULERS[name](seed=0), bad_call=None)
    assert torch.isfinite(out).all() and len(reads) == 1


def test_check_finite_false_returns_the_raw_result():
    scheduler = SCHEDULERS["dpmpp_2m"](check_finite=False)
    assert torch.isnan(run(scheduler, bad_call=2)).any()


def test_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        SCHEDULERS["dpmpp_2m"](check_finite="no")
