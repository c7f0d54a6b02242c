"""The README's LD3 -> diffusers chain: learn a schedule for a diffusers model in its own noise range
(`scheduler.sigma_range`), save it, load it into the pipeline's scheduler, run the pipeline with its step count.

The model is an exact eps-prediction model of a Gaussian mixture (`fastdiff.toy`) behind the UNet2DModel interface,
in a DDPMPipeline; sizes are tiny so the whole chain takes seconds.
"""

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional dependency: pip install fastdiff[diffusers]")

from diffusers import DDPMPipeline, DDPMScheduler  # noqa: E402

import fastdiff  # noqa: E402
import fastdiff.ld3  # noqa: E402
from fastdiff.integrations.diffusers import IPNDMScheduler  # noqa: E402
from fastdiff.models import VPEpsDenoiser  # noqa: E402
from fastdiff.toy import GaussianMixture  # noqa: E402


class MixtureUNet(torch.nn.Module):
    """eps(x_vp, t) of a mixture over 1 x 4 x 4 images, exact, with UNet2DModel's call and config."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.config = SimpleNamespace(sample_size=4, in_channels=1)
        self.target = GaussianMixture(torch.stack([torch.full((16,), -0.5), torch.full((16,), 0.5)]), stds=0.2)
        sigmas = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt()
        self.register_buffer("log_sigmas", sigmas.log())
        self.register_buffer("anchor", torch.zeros(()))  # gives the module a device and a dtype

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device

    def forward(self, x_vp, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x_vp.shape[0]).clamp(0, 999)
        low = t.floor().long().clamp(max=998)
        sigma = torch.lerp(self.log_sigmas[low], self.log_sigmas[low + 1], t - low).exp().to(x_vp.dtype)
        s = sigma.view(-1, 1, 1, 1)
        x = x_vp * (1 + s * s).sqrt()
        eps = (x - self.target.denoiser(x.flatten(1), sigma).view_as(x)) / s
        return SimpleNamespace(sample=eps)


def test_readme_ld3_to_diffusers_chain(tmp_path):
    pipe = DDPMPipeline(unet=MixtureUNet(DDPMScheduler().alphas_cumprod), scheduler=DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    path = str(tmp_path / "ipndm_nfe4.json")

    # the README's snippet (with a small shape and training budget)
    scheduler = IPNDMScheduler.from_config(pipe.scheduler.config)
    lo, hi = scheduler.sigma_range  # the model's noise range, where the schedule must lie
    denoiser = VPEpsDenoiser(lambda x, t: pipe.unet(x, t).sample, scheduler.alphas_cumprod)
    schedule = fastdiff.ld3.learn_sigmas(
        denoiser, "ipndm", 4, shape=(1, 4, 4), sigma_min=lo, sigma_max=hi, to_zero=True,  # to_zero: 4 NFE in all
        teacher_nfe=40, n_samples=20, n_val=20, batch_size=10, max_epochs=3, progress=False,
    )
    schedule.save(path)
    pipe.scheduler = IPNDMScheduler.from_config(pipe.scheduler.config, schedule="learned", sigmas_file=path)
    images = pipe(batch_size=8, num_inference_steps=schedule.steps, generator=torch.Generator().manual_seed(0),
                  output_type="np").images

    assert schedule.steps == 4 and pipe.scheduler.num_inference_steps == 4 and len(pipe.scheduler.timesteps) == 4
    assert images.shape == (8, 4, 4, 1)
    # DDPMPipeline maps [-1, 1] to [0, 1]: the modes at -0.5 and 0.5 land at 0.25 and 0.75
    means = images.reshape(8, -1).mean(axis=1)
    assert all(min(abs(m - 0.25), abs(m - 0.75)) < 0.1 for m in means)
    # a pipeline that asks for another count is told the schedule's
    with pytest.raises(ValueError, match="schedule of 4 steps; run with num_inference_steps=4, got 1000"):
        pipe(batch_size=1, output_type="np")


def test_sigma_range_is_the_training_table():
    scheduler = IPNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    lo, hi = scheduler.sigma_range
    abar = scheduler.alphas_cumprod.double()
    assert lo == pytest.approx(((1 - abar[0]) / abar[0]).sqrt().item(), rel=1e-12)
    assert hi == pytest.approx(((1 - abar[-1]) / abar[-1]).sqrt().item(), rel=1e-12)
    assert (round(lo, 4), round(hi, 2)) == (0.0292, 14.61)
    # learn_sigmas' defaults (0.002, 80) lie outside it: a schedule there is refused by name
    sigmas = fastdiff.get_sigmas("karras", 4, 0.002, 80.0).tolist()
    with pytest.raises(ValueError, match=r"sigmas must lie in the model's noise range \[0.0291675, 14.6146\]"):
        scheduler.set_timesteps(sigmas=sigmas)
