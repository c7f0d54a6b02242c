"""Small, fast stand-ins for the names README.md's examples leave to the reader (`tests/test_readme.py`).

- `MixtureModel(shape)`: a trained k-diffusion-style denoiser `model(x, sigma, **extra_args)`, here exact:
  D(x, sigma) = E[x0 | x0 + sigma eps = x] of a two-mode Gaussian mixture over samples of `shape`.
- `MixtureUNet(shape, alphas_cumprod)`: a diffusers eps-prediction UNet (`unet(x_vp, t).sample`), also exact,
  for the blocks that train on the pipeline's model (LD3), where a real network would take minutes.
- `tiny_unet()`: a random-weight `UNet2DModel` of 8 x 8 RGB images, for the blocks that only run the pipeline.
- `TextToImagePipeline`: a text-to-image pipeline such as Stable Diffusion's, as a `DDPMPipeline` that takes
  the prompt arguments.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from fastdiff.toy import GaussianMixture

MODES = (-0.5, 0.5)  # every pixel of a sample sits near one of these
MODE_STD = 0.2


def mixture(dim: int, modes: tuple[float, ...] = MODES, std: float = MODE_STD) -> GaussianMixture:
    """sum_k 1/K N(m_k 1, std^2 I) over R^dim: the data every stand-in model is exact for."""
    return GaussianMixture(torch.tensor(modes, dtype=torch.float64)[:, None].expand(-1, dim), stds=std)


class MixtureModel:
    """model(x, sigma, cond=None) = E[x0 | x] of `mixture(prod(shape), modes)`, for x of shape [B, *shape].

    In closed form, cheap at any size: with v = std^2 + sigma^2 and the modes m_k 1,
    D = (std^2 / v) x + (sigma^2 / v) sum_k r_k m_k,  r = softmax_k((m_k sum(x) - d m_k^2 / 2) / v).
    `cond` stands for a conditional model's per-sample conditioning: its batch must match x's; the mixture does
    not depend on it. `target` is the `GaussianMixture` itself (its density, samples and reference denoiser).
    """

    def __init__(self, shape: tuple[int, ...], modes: tuple[float, ...] = MODES):
        self.shape = tuple(shape)
        self.target = mixture(math.prod(self.shape), modes)
        self.modes = torch.tensor(modes, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")
        if cond is not None and cond.shape[0] != x.shape[0]:
            raise ValueError(f"cond must have one row per sample ({x.shape[0]}), got shape {tuple(cond.shape)}")
        flat = x.flatten(1)
        m = self.modes.to(x.device, x.dtype)
        v = MODE_STD**2 + torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1) ** 2
        r = torch.softmax((flat.sum(1, keepdim=True) * m - flat.shape[1] * m**2 / 2) / v, dim=1)
        return (MODE_STD**2 / v * flat + (1 - MODE_STD**2 / v) * (r @ m)[:, None]).view_as(x)


class MixtureUNet(torch.nn.Module):
    """eps(x_vp, t) of `MixtureModel(shape)` in the VP space of a diffusers noise table, with UNet2DModel's call.

    sigma(t) interpolates log sigma_t = log sqrt((1 - abar_t) / abar_t) between integer timesteps, then
    x = x_vp sqrt(1 + sigma^2) and eps = (x - D(x, sigma)) / sigma.
    """

    def __init__(self, shape: tuple[int, int, int], alphas_cumprod: torch.Tensor):
        super().__init__()
        self.model = MixtureModel(shape)
        self.config = SimpleNamespace(sample_size=shape[1], in_channels=shape[0])
        abar = alphas_cumprod.double()
        self.register_buffer("log_sigmas", ((1 - abar) / abar).sqrt().log())
        self.register_buffer("anchor", torch.zeros(()))  # gives the module a device and a dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, x_vp: torch.Tensor, t: torch.Tensor | float) -> SimpleNamespace:
        last = len(self.log_sigmas) - 1
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x_vp.shape[0]).clamp(0, last)
        low = t.floor().long().clamp(max=last - 1)
        sigma = torch.lerp(self.log_sigmas[low], self.log_sigmas[low + 1], t - low).exp().to(x_vp.dtype)
        s = sigma.view(-1, 1, 1, 1)
        x = x_vp * (1 + s * s).sqrt()
        return SimpleNamespace(sample=(x - self.model(x, sigma)) / s)


def tiny_unet() -> torch.nn.Module:
    """A random-weight UNet2DModel of 8 x 8 RGB images (two levels of 8 and 16 channels), seeded."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


def tiny_pipeline():
    """A `TextToImagePipeline` of 8 x 8 images over `tiny_unet()`."""
    return _pipeline(lambda alphas_cumprod: tiny_unet())


def mixture_pipeline(shape: tuple[int, int, int]):
    """A `TextToImagePipeline` of `shape` images over `MixtureUNet(shape)`: exact, so LD3 on it takes seconds."""
    return _pipeline(lambda alphas_cumprod: MixtureUNet(shape, alphas_cumprod))


def _pipeline(make_unet):
    """A `TextToImagePipeline` with a DDPMScheduler (the default 1000-step table) and the UNet `make_unet` builds
    for its table, without a progress bar."""
    from diffusers import DDPMPipeline, DDPMScheduler

    class TextToImagePipeline(DDPMPipeline):
        """Stands for a text-to-image pipeline: pipe(prompt, num_inference_steps=..., num_images_per_prompt=...,
        generator=...) gives len(prompts) x num_images_per_prompt images, as a Stable Diffusion pipeline does; the
        prompt is not used (the UNet is unconditional). pipe(num_inference_steps=...) gives one image."""

        def __call__(self, prompt: str | list[str] | None = None, num_inference_steps: int = 50,
                     num_images_per_prompt: int = 1, generator=None):
            prompts = 1 if prompt is None or isinstance(prompt, str) else len(prompt)
            return super().__call__(batch_size=prompts * num_images_per_prompt, generator=generator,
                                    num_inference_steps=num_inference_steps, output_type="np")

    scheduler = DDPMScheduler()
    pipe = TextToImagePipeline(unet=make_unet(scheduler.alphas_cumprod), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
