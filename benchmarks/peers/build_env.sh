#!/usr/bin/env bash
# Build the peer environment for side-by-side benchmarks (benchmarks/clip_train_step.py with open_clip,
# benchmarks/preprocessing.py with transformers' torchvision image processor).
#
#   bash benchmarks/peers/build_env.sh [VENV_DIR]      # default /work/peers-venv
#   VENV_DIR/bin/python benchmarks/clip_train_step.py  # polymodal, Hugging Face and open_clip in one run
#
# Why a separate environment: open_clip imports torchvision, and torchvision's PyPI wheel for torch 2.13
# (0.28.0) declares a dependency on the CUDA build of torch and ships compiled ops that do not load against
# the CPU build. So torch is pinned to the CPU build, torchvision is installed without its dependencies, and
# benchmarks/peers/shim.py defines the two operator schemas (torchvision::nms, torchvision::qnms) that
# torchvision needs before it can import. The project's own venv stays free of torchvision.
set -euo pipefail

VENV_DIR="${1:-/work/peers-venv}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"

"$PYTHON" -m venv "$VENV_DIR"
PIP=("$VENV_DIR/bin/python" -m pip install --quiet)

# 1. torch, CPU build: TORCH_SPEC may name a local +cpu wheel or pass pip options (where pip's find-links
#    holds torch-2.13.0+cpu, as on the project machines, the plain pin already resolves to it).
"${PIP[@]}" ${TORCH_SPEC:-"torch==${TORCH_VERSION}"}
"$VENV_DIR/bin/python" - <<'PY'
import torch
assert torch.version.cuda is None, f"expected the CPU build of torch, got CUDA {torch.version.cuda}"
print("torch", torch.__version__)
PY

# 2. torchvision without its dependencies (they would pull the CUDA torch), and its one runtime need.
"${PIP[@]}" --no-deps "torchvision==${TORCHVISION_VERSION}"
"${PIP[@]}" numpy pillow

# 3. open_clip and its other dependencies; torch / torchvision are already satisfied so pip keeps them.
"${PIP[@]}" open_clip_torch ftfy regex tqdm huggingface_hub safetensors timm

# 4. this package (editable: the benchmark runs the working tree's code), with its dependencies, and scipy for
#    benchmarks/preprocessing.py's audio baselines (it runs here too, for transformers' torchvision processor).
"${PIP[@]}" -e "$REPO_DIR" scipy

# 5. check: the CPU torch is still the one installed, and open_clip imports through the shim.
"$VENV_DIR/bin/python" - "$REPO_DIR" <<'PY'
import sys

sys.path.insert(0, sys.argv[1] + "/benchmarks/peers")
import shim  # noqa: E402

shim.install()
import open_clip  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402

assert torch.version.cuda is None, "a dependency replaced the CPU torch with a CUDA build"
print(f"peer env ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"open_clip {open_clip.__version__}, transformers {transformers.__version__}")
PY
