#!/usr/bin/env bash
# The README's first command: set up, build, and run i3Deep end to end on a real MRI volume.
#
#   1. scripts/setup.sh (Debian packages incl. mricron-data; the Python reference venv)
#   2. Release build with CMake + Ninja (build/)
#   3. the real case: the Colin27 T1 (mricron-data's ch2bet.nii.gz) with its AAL caudate, putamen and
#      thalamus as ground truth (scripts/i3deep_cases.py)
#   4. i3rt i3deep simulate (C, no Python): pre-segmentation by the two folds of
#      weights/brain_3d_fullres, uncertainty, 12 slices over three axes, a simulated expert who corrects
#      them to the ground truth, refinement by weights/brain_refine_3d_fullres; prints Dice before and
#      after, the annotation ratio, each stage's time and the expert's waiting time; writes the refined
#      segmentation and the PNG previews
#   5. the engine check: i3rt forward of the pre-segmentation network on a crop of the volume next to
#      the same forward in PyTorch (max abs / rel error of the logits, both timings)
#
# Work files go to $I3RT_DEMO_DIR (default build/demo). $I3RT_BUILD_DIR: build folder (default build).
# $I3RT_THREADS: CPU threads (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${I3RT_THREADS:-2}
build=${I3RT_BUILD_DIR:-build}
work=${I3RT_DEMO_DIR:-$PWD/$build/demo}
preseg=weights/brain_3d_fullres
refine=weights/brain_refine_3d_fullres

scripts/setup.sh
venv="${I3RT_VENV:-$HOME/.cache/i3rt/venv}"
python="$venv/bin/python"

echo "== build (Release)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DI3RT_PYTHON="$python" >/dev/null
ninja -C "$build" i3rt

for model in "$preseg" "$refine"; do
  [ -f "$model/fold_0.safetensors" ] || { echo "demo: $model/fold_0.safetensors is missing" >&2; exit 1; }
done

echo
echo "== the real case: Colin27 T1 (ch2bet.nii.gz) with the AAL caudate (1), putamen (2), thalamus (3)"
mkdir -p "$work"
"$python" scripts/i3deep_cases.py --out "$work/cases" --n 0
image="$work/cases/images/colin27.nii.gz"
truth="$work/cases/labels/colin27.nii.gz"

echo
echo "== i3rt i3deep simulate (CPU, $threads threads): pre-segmentation $preseg, refinement $refine"
"$build/i3rt" i3deep simulate "$image" "$truth" -m "$preseg" -r "$refine" -o "$work/i3deep" --threads "$threads"

echo
echo "== engine check: i3rt forward of $preseg fold 0 next to PyTorch, on a crop of the volume"
"$python" scripts/demo.py make-input --out "$work/input.nii.gz"
"$build/i3rt" forward "$preseg/fold_0.safetensors" "$work/input.nii.gz" "$work/logits.nii.gz" --threads "$threads" \
  | tee "$work/forward.txt"
i3rt_seconds=$(sed -n 's/^time *forward \([0-9.]*\) s.*/\1/p' "$work/forward.txt")
"$python" scripts/demo.py compare --model "$preseg" --input "$work/input.nii.gz" \
  --i3rt-output "$work/logits.nii.gz" --threads "$threads" --i3rt-seconds "$i3rt_seconds"
echo
echo "demo: done. The refined segmentation: $work/i3deep/colin27_segmentation.nii.gz (the image's grid);"
echo "      previews of the chosen slices: $work/i3deep/colin27_<axis>_<index>_preview.png"
