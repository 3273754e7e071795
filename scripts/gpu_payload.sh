#!/bin/sh
# Assembles, on a development machine with the Debian packages and the venv of scripts/setup.sh, what the GPU
# machine lacks for kernels/gpu_check.sh (it has nvcc, CMake, PyTorch, ncu; no Debian packages, no nnunetv2,
# no network), in two parts that each fit the `device` tool's 64 MiB working tree (docs/cuda.md):
#   .gpu/debs  Criterion, nifticlib, cJSON, OpenBLAS, libpng, libmicrohttpd (../shared/gpu/fetch-deps.sh)
#   .gpu/a     the build, tests, benchmarks and the SnC / nnInteractive comparisons: the blosc2 wheel (its
#              libblosc2.a for the build), nnunetv2 & co. (pure Python, as a tarball), stand-ins for SimpleITK
#              and cc3d (imported by nnunetv2 but not used on these paths; their wheels are 55 MB), the real
#              volumes (mricron-data; Cranium.inv3 repacked with the CT alone), the weights the tests and the
#              nnInteractive comparison read
#   .gpu/b     the SimpleITK wheel: tests/gen_unet.py (nnU-Net's planner) and nnUNetPredictor's file reading
#              need it; it travels in a second call to the same, still warm machine (docs/cuda.md)
# The weights/ folder (40 MB) must not travel whole: during the device calls it is untracked and ignored
# (docs/cuda.md says how), and gpu_env.sh copies .gpu/*/weights into it there.
#   scripts/gpu_payload.sh [PYTHON]    (default: ~/.cache/i3rt/venv/bin/python)
set -eu
py=${1:-${I3RT_VENV:-$HOME/.cache/i3rt/venv}/bin/python}
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
[ -f .gpu/debs/env.sh ] || ../shared/gpu/fetch-deps.sh .gpu/debs libpng-dev libmicrohttpd-dev
rm -rf .gpu/a .gpu/b
mkdir -p .gpu/a/wheels .gpu/a/data .gpu/a/stub .gpu/b/wheels
version() { "$py" -m pip show "$1" | sed -n 's/^Version: //p'; }
wheels() {   # wheels DIR NAME...: the venv's versions, built for the GPU machine's Python 3.12
    dir=$1
    shift
    for name in "$@"; do
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dir" "$name==$(version "$name")"
    done
}
wheels .gpu/a/wheels blosc2 ndindex numexpr
wheels .gpu/b/wheels simpleitk
# with their *.dist-info: nnInteractive reads its own version through importlib.metadata
tar -C "$site" --exclude=__pycache__ --exclude='*/tests' --exclude='*/dataset_conversion' \
    --exclude='nibabel/testing' -cJf .gpu/a/site.tar.xz $(cd "$site" && ls -d nnunetv2* \
    dynamic_network_architectures* acvl_utils* batchgenerators* nnInteractive* nninteractive* nibabel*)
for m in SimpleITK cc3d; do
    mkdir -p ".gpu/a/stub/$m"
    cat > ".gpu/a/stub/$m/__init__.py" <<STUB
"""Stand-in for $m on the GPU machine (scripts/gpu_payload.sh): importable, not usable."""
def __getattr__(name):
    raise ImportError("$m." + name + ": $m was not carried to the GPU machine")
STUB
done
cp /usr/share/mricron/templates/ch2.nii.gz /usr/share/mricron/templates/ch2bet.nii.gz \
    /usr/share/mricron/templates/aal.nii.gz .gpu/a/data/
tmp=$(mktemp -d)
tar -C "$tmp" -xzf /usr/share/doc/invesalius-examples/examples/Cranium.inv3 --wildcards '*/main.plist' '*/matrix.dat'
(cd "$tmp" && tar -cJf - */main.plist */matrix.dat) > .gpu/a/data/Cranium.inv3   # what train_models.load_ct reads
rm -rf "$tmp"
copy() {   # copy PART FILE...: weights/FILE -> .gpu/PART/weights/FILE
    part=$1
    shift
    for f in "$@"; do
        mkdir -p ".gpu/$part/weights/$(dirname "$f")"
        cp -r "weights/$f" ".gpu/$part/weights/$f"
    done
}
copy a brain_2d/fold_0.safetensors brain_3d_fullres/fold_0.safetensors \
    headct_3d_fullres_aniso/fold_0.safetensors nninteractive_brain
copy a brain_3d_fullres/dataset.json brain_3d_fullres/plans.json brain_3d_fullres/fold_0 brain_refine_3d_fullres
du -sh .gpu/debs .gpu/a .gpu/b
