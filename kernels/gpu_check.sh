#!/bin/sh
# The GPU check of issue 5 in one call (on the GPU machine the `device` tool lends, see
# ../shared/gpu/README.md): builds with -DI3RT_CUDA=ON, runs the whole test suite (the `gpu` suites
# of test_simt and test_cuda_ops run every kernel on the real device there), then the two device
# test programs under compute-sanitizer memcheck, racecheck and synccheck. Logs go to $1 (default
# $OUT/gpu-check, else ./gpu-check); the script's exit status is nonzero if any step failed.
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
for conv in f16 bf16; do   # the graph's convolutions on tensor cores (runtime/backend_cuda.cu)
    step "test_cuda_ops-gpu-conv-$conv" env I3RT_CUDA_CONV=$conv "$build/tests/test_cuda_ops" --jobs 1 --verbose \
        --filter 'gpu/unet*'
done
exit $status
