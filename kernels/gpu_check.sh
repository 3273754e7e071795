#!/bin/sh
# The GPU check of issue 5 (on the GPU machine the `device` tool lends, see ../shared/gpu/README.md),
# in phases:
#   build     configure with -DI3RT_CUDA=ON and build (folder build-gpu-check)
#   test      the whole test suite (the `gpu` suites of test_simt and test_cuda_ops run every kernel on
#             the real device there), the `gpu` suites alone, the tensor-core U-Nets (f16, bf16, tf32)
#   sanitize  the `gpu` suites under compute-sanitizer memcheck, racecheck and synccheck
#   bench     bench/gpu_bench.c and bench/gpu_torch.py on the same shapes, bench/gpu_report.py -> report.md
#   ncu       Nsight Compute on one launch of each hot kernel
# Logs go to $1 (default $OUT/gpu-check, else ./gpu-check), one per step, with summary.txt; the other
# arguments name the phases (default: all, in this order). The exit status is nonzero if any step
# failed. PYTHON: a Python with torch (default python3). A `run` call has 10 minutes: on a warm machine
# (the build folder stays) split it, e.g.
#
#   . .gpu/debs/env.sh .gpu/debs && sh kernels/gpu_check.sh "$OUT/gpu-check" build test
#   . .gpu/debs/env.sh .gpu/debs && sh kernels/gpu_check.sh "$OUT/gpu-check" sanitize
#   . .gpu/debs/env.sh .gpu/debs && sh kernels/gpu_check.sh "$OUT/gpu-check" bench ncu
set -u
logs=${1:-${OUT:-.}/gpu-check}
[ $# -gt 0 ] && shift
phases=${*:-build test sanitize bench ncu}
build=build-gpu-check
mkdir -p "$logs"
status=0
step() {   # step <name> <command...>: runs it, logs to $logs/<name>.log, remembers a failure
    name=$1
    shift
    echo "== $name: $*" | tee -a "$logs/summary.txt"
    if "$@" > "$logs/$name.log" 2>&1; then echo "   ok" | tee -a "$logs/summary.txt"; else
        echo "   FAILED (exit $?), see $name.log" | tee -a "$logs/summary.txt"
        status=1
    fi
}
wants() { case " $phases " in *" $1 "*) return 0 ;; esac; return 1; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -1; } \
    >> "$logs/device.txt" 2>&1
if wants build; then
    step configure cmake -S . -B "$build" -G Ninja -DI3RT_CUDA=ON
    step build ninja -C "$build"
fi
if wants test; then
    step ctest sh -c "cd $build && ctest --output-on-failure"
    for prog in test_simt test_cuda_ops; do
        step "$prog-gpu" "$build/tests/$prog" --jobs 1 --verbose --filter 'gpu/*'
    done
    for conv in f16 bf16 tf32; do   # the graph's convolutions on tensor cores (runtime/backend_cuda.cu)
        step "test_cuda_ops-gpu-conv-$conv" env I3RT_CUDA_CONV=$conv "$build/tests/test_cuda_ops" --jobs 1 \
            --verbose --filter 'gpu/unet*'
    done
fi
if wants sanitize; then
    for prog in test_simt test_cuda_ops; do
        for tool in memcheck racecheck synccheck; do
            step "$prog-$tool" compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 1 \
                "$build/tests/$prog" --jobs 1 --filter 'gpu/*'
        done
    done
fi

# Benchmarks: i3rt and PyTorch/cuDNN on the same shapes in the same run (docs/cuda.md, "Benchmarks").
py=${PYTHON:-python3}
bench=$build/kernels/gpu_bench
model=$build/fixtures/unet/plain_3d.safetensors   # 3d_fullres widths 32..320, written by the ctest step
if wants bench; then
    step bench-i3rt-ops sh -c "$bench ops --runs 7 > $logs/i3rt_ops.jsonl"
    step bench-torch-ops sh -c "$py bench/gpu_torch.py ops --runs 7 > $logs/torch_ops.jsonl"
    rm -f "$logs/i3rt_forward.jsonl"
    for conv in f32 tf32 f16 bf16; do
        step "bench-i3rt-forward-$conv" sh -c "I3RT_CUDA_CONV=$conv $bench forward $model 128 128 128 --runs 5 \
            >> $logs/i3rt_forward.jsonl"
    done
    step bench-torch-forward sh -c "$py bench/gpu_torch.py forward $model 128 128 128 --runs 5 \
        > $logs/torch_forward.jsonl"
    step report sh -c "$py bench/gpu_report.py $logs/torch_ops.jsonl $logs/i3rt_ops.jsonl \
        $logs/torch_forward.jsonl $logs/i3rt_forward.jsonl > $logs/report.md"
    cat "$logs/report.md" 2>/dev/null
    # nnInteractive: time per interaction and peak memory, i3rt's CUDA backend vs the Python session on the GPU
    # (the same simulated user and prompts as docs/nninteractive-evaluation.md, one held-out case + the CT).
    step bench-nninteractive sh -c "$py tools/ni_evaluate.py --cases 1 --device cuda --lib $build/libi3rt.so \
        --json $logs/ni_eval.json > $logs/ni_eval.md"
    step bench-snc sh -c "$py bench/snc_vs_torch.py --build $build --device cuda --runs 5 > $logs/snc_bench.txt"  # SnC click, 3D step
fi
if wants ncu; then   # what bounds each hot kernel: one profiled launch each, at the real shapes
    for kernel in conv_v1 conv_tensor_core_v2 conv_tensor_core_v3 norm_apply norm_finalize instance_norm_v1 softmax_slices_v2 \
        sw_accumulate_v1; do
        step "ncu-$kernel" ncu --target-processes all -k "regex:$kernel" -c 1 --section SpeedOfLight \
            --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats "$bench" ops --runs 1
    done
fi
exit $status
