"""fastdiff's samplers in ComfyUI, as a custom node (installed by `python -m fastdiff comfyui-install PATH` into
PATH/custom_nodes/fastdiff/). Loading it adds the `fastdiff_<solver>` samplers to KSampler, KSamplerAdvanced and
KSamplerSelect (`register()`) and offers fastdiff's SAMPLER and SIGMAS nodes for SamplerCustom(Advanced). The code
is the installed fastdiff package's; this folder only hands it to ComfyUI."""

from fastdiff.integrations.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from fastdiff.integrations.comfyui.samplers import register

register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
