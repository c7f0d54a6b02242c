"""Build fastdiff's compiled extension `fastdiff._C`.

- CPU: every `csrc/*.cpp` (op schemas, dispatch and vectorized OpenMP kernels).
- CUDA: also every `csrc/cuda/*.cu`, when torch is a CUDA build and CUDA_HOME is set,
  or when FORCE_CUDA=1.
- FASTDIFF_SKIP_EXT=1 installs the pure-Python package (reference and Triton backends only).

The extension is compiled against the torch that is already installed, so build with
`pip install --no-build-isolation .`; build isolation would fetch a different torch.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _extensions():
    if _flag("FASTDIFF_SKIP_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        sys.exit(
            "fastdiff: building the compiled extension needs torch installed first.\n"
            "  pip install torch && pip install --no-build-isolation .\n"
            "or set FASTDIFF_SKIP_EXT=1 for the pure-Python package."
        )
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    headers = sorted(  # rebuild on change
        glob.glob(os.path.join("csrc", "*.h"))
        + glob.glob(os.path.join("csrc", "cuda", "*.h"))
        + glob.glob(os.path.join("csrc", "cuda", "*.cuh"))
    )
    with_cuda = _flag("FORCE_CUDA") or (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)
    # No -std: cpp_extension adds the standard that the installed torch's headers need. -g0: no debug
    # info, which halves the compile time. -fno-math-errno lets sqrt vectorise (nothing reads errno).
    cxx_flags = ["-O3", "-g0", "-fno-math-errno", "-fopenmp"]
    define_macros = []
    if with_cuda:
        define_macros.append(("FASTDIFF_WITH_CUDA", None))
        ext = cpp_extension.CUDAExtension(
            "fastdiff._C",
            cpp_sources + cuda_sources,
            depends=headers,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "fastdiff._C",
            cpp_sources,
            depends=headers,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    # ninja compiles the sources in parallel (a CUDA build's eight files serially take minutes); without it, one by one.
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=cpp_extension.is_ninja_available())}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
