#!/usr/bin/env bash
# The README's first command: set up, build, and run i3rt on a real volume next to PyTorch.
#
#   1. scripts/setup.sh (Debian packages incl. mricron-data; the Python reference venv)
#   2. Release build with CMake + Ninja (build/)
#   3. a real-format nnU-Net v2 model: nnunetv2's planner on a dataset made from the Colin27 T1
#      (/usr/share/mricron/templates/ch2.nii.gz), its 3d_fullres PlainConvUNet with RANDOM weights
#      (scripts/demo.py make-model), converted by tools/convert_pt/convert_nnunet.py
#   4. i3rt info and i3rt forward (C, no Python) on a crop of the real volume
#   5. the same forward in PyTorch: max abs / rel error of the logits and both timings
#
# This stage of the project is the engine foundation; later issues turn this demo into the
# interactive segmentation pipeline on trained weights. Work files go to $I3RT_DEMO_DIR
# (default build/demo); the model is made once and reused. $I3RT_BUILD_DIR: build folder (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${I3RT_THREADS:-2}
build=${I3RT_BUILD_DIR:-build}
work=${I3RT_DEMO_DIR:-$PWD/$build/demo}

scripts/setup.sh
venv="${I3RT_VENV:-$HOME/.cache/i3rt/venv}"
python="$venv/bin/python"

echo "== build (Release)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DI3RT_PYTHON="$python" >/dev/null
ninja -C "$build" i3rt

echo
echo "== nnU-Net v2 model (nnunetv2's planner on the Colin27 T1; random weights: this stage checks the"
echo "   engine against PyTorch, later issues bring trained weights and the interactive pipeline)"
mkdir -p "$work"
if [ ! -f "$work/model/fold_0/checkpoint_final.pth" ] || [ ! -f "$work/input.nii.gz" ]; then
  "$python" scripts/demo.py make-model --work "$work" 2>&1 | grep '^demo:' || {
    echo "demo: making the model failed; rerun with: $python scripts/demo.py make-model --work $work" >&2
    exit 1
  }
else
  echo "demo: reusing $work/model and $work/input.nii.gz"
fi
"$python" tools/convert_pt/convert_nnunet.py "$work/model" --out "$work/i3rt"
weights="$work/i3rt/fold_0.safetensors"

echo
echo "== i3rt info $weights"
"$build/i3rt" info "$weights" > "$work/info.txt"
grep -v -e '^ *[0-9]\+  [a-z_]' -e '^  node ' "$work/info.txt"
echo "(the shape of every node's output: $work/info.txt)"

echo
echo "== i3rt forward (CPU, $threads threads) on a crop of ch2.nii.gz"
"$build/i3rt" forward "$weights" "$work/input.nii.gz" "$work/logits.nii.gz" --threads "$threads" | tee "$work/forward.txt"
i3rt_seconds=$(sed -n 's/^time *forward \([0-9.]*\) s.*/\1/p' "$work/forward.txt")
"$build/i3rt" forward "$weights" "$work/input.nii.gz" "$work/labels.nii.gz" --threads "$threads" --argmax | grep wrote

echo
echo "== the same forward in PyTorch"
"$python" scripts/demo.py compare --model "$work/model" --input "$work/input.nii.gz" \
  --i3rt-output "$work/logits.nii.gz" --threads "$threads" --i3rt-seconds "$i3rt_seconds"
echo
echo "demo: done. Outputs in $work (logits.nii.gz, labels.nii.gz: same geometry as input.nii.gz)"
