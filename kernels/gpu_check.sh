#!/bin/sh
# The GPU check of issue 5 in one call (on the GPU machine the `device` tool lends, see
# ../shared/gpu/README.md): builds with -DI3RT_CUDA=ON, runs the whole test suite (the `gpu` suites
# of test_simt and test_cuda_ops run every kernel on the real device there), then the two device
# test programs under compute-sanitizer memcheck, racecheck and synccheck, then the benchmarks
# (bench/gpu_bench.c and bench/gpu_torch.py on the same shapes, bench/gpu_report.py -> report.md) and
# Nsight Compute on the hot kernels. Logs go to $1 (default $OUT/gpu-check, else ./gpu-check); the
# script's exit status is nonzero if any step failed. PYTHON: a Python with torch (default python3).
#
#   . .gpu/debs/env.sh .gpu/debs && sh kernels/gpu_check.sh "$OUT/gpu-check"
set -u
logs=${1:-${OUT:-.}/gpu-check}
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
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -1; } \
    > "$logs/device.txt" 2>&1
step configure cmake -S . -B "$build" -G Ninja -DI3RT_CUDA=ON
step build ninja -C "$build"
step ctest sh -c "cd $build && ctest --output-on-failure"
for prog in test_simt test_cuda_ops; do
    step "$prog-gpu" "$build/tests/$prog" --jobs 1 --verbose --filter 'gpu/*'
    for tool in memcheck racecheck synccheck; do
        step "$prog-$tool" compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 1 \
            "$build/tests/$prog" --jobs 1 --filter 'gpu/*'
    done
done
for conv in f16 bf16 tf32; do   # the graph's convolutions on tensor cores (runtime/backend_cuda.cu)
    step "test_cuda_ops-gpu-conv-$conv" env I3RT_CUDA_CONV=$conv "$build/tests/test_cuda_ops" --jobs 1 --verbose \
        --filter 'gpu/unet*'
done

# Benchmarks: i3rt and PyTorch/cuDNN on the same shapes in the same run (docs/cuda.md, "Benchmarks").
py=${PYTHON:-python3}
bench=$build/kernels/gpu_bench
model=$build/fixtures/unet/plain_3d.safetensors   # 3d_fullres widths 32..320, written by the ctest step
step bench-i3rt-ops sh -c "$bench ops --runs 7 > $logs/i3rt_ops.jsonl"
step bench-torch-ops sh -c "$py bench/gpu_torch.py ops --runs 7 > $logs/torch_ops.jsonl"
for conv in f32 tf32 f16 bf16; do
    step "bench-i3rt-forward-$conv" sh -c "I3RT_CUDA_CONV=$conv $bench forward $model 128 128 128 --runs 5 \
        >> $logs/i3rt_forward.jsonl"
done
step bench-torch-forward sh -c "$py bench/gpu_torch.py forward $model 128 128 128 --runs 5 > $logs/torch_forward.jsonl"
step report sh -c "$py bench/gpu_report.py $logs/torch_ops.jsonl $logs/i3rt_ops.jsonl $logs/torch_forward.jsonl \
    $logs/i3rt_forward.jsonl > $logs/report.md"
# What bounds each hot kernel: one profiled launch each, at the real shapes of gpu_bench ops.
for kernel in conv_v1 conv_tensor_core_v2 norm_apply norm_finalize instance_norm_v1 softmax_slices_v2 \
    sw_accumulate_v1; do
    step "ncu-$kernel" ncu --target-processes all -k "regex:$kernel" -c 1 --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats "$bench" ops --runs 1
done
cat "$logs/report.md" 2>/dev/null
exit $status
