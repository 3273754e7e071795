#!/usr/bin/env bash
# Installs everything i3rt needs to build, test and compare against PyTorch.
#   - Debian packages (compiler deps, nifticlib, Criterion, cJSON, OpenBLAS, real volumes)
#   - a Python virtual environment with the reference packages (torch, nnunetv2, ...)
# The venv lives outside the repository (default ~/.cache/i3rt/venv, or $I3RT_VENV) so that a
# fresh clone on the same machine reuses it: torch with its CUDA wheels is about 6 GB.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libnifti2-dev libcriterion-dev libcjson-dev libopenblas-openmp-dev zlib1g-dev libpng-dev libmicrohttpd-dev
  mricron-data invesalius-examples
)
PY_PACKAGES=(
  torch numpy nnunetv2 dynamic-network-architectures safetensors nibabel
  blosc2 nninteractive nninteractive-client
)

venv="${I3RT_VENV:-$HOME/.cache/i3rt/venv}"

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating Python virtual environment $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, nnunetv2, dynamic_network_architectures, safetensors, nibabel, blosc2, nnInteractive" 2>/dev/null; then
  echo "setup: installing Python reference packages into $venv (torch is large; first time only)"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "${PY_PACKAGES[@]}"
fi
echo "setup: done (venv: $venv)"
