#!/bin/sh
# The GPU check, on the GPU machine the `device` tool lends (docs/cuda.md "On a GPU machine"), in phases:
#   build     configure with -DI3RT_CUDA=ON and build (folder build-gpu-check)
#   fixtures  the fixtures the `gpu` tests and the forward benchmark read (tests/gen_unet.py, which runs
#             nnU-Net's planner and needs SimpleITK, gen_snc_session.py, gen_snc_guided.py, gen_tvl1.py)
#   test      the `gpu` suites of test_simt and test_cuda_ops (every kernel on the real device against the
#             CPU reference), test_tvl1's GPU test, and the whole networks (U-Nets, HRNet 2D, guided 3D) with
#             their convolutions on tensor cores (f16, bf16, tf32)
#   ctest     the whole CTest suite (needs the whole reference Python environment; not in the default list)
#   apps      the pipelines against their Python originals on the GPU: SnC (bench/snc_vs_torch.py, both sides
#             in f32 on HRNet-18s, then both in f16 on HRNet-18s and -18), nnInteractive (tools/ni_evaluate.py; i3rt in f16 as the session's
#             autocast)
#   i3deep    i3Deep's waiting time against nnUNetPredictor (bench/i3deep_waiting.py; i3rt in f16, as
#             nnUNetPredictor's autocast)
#   predict   whole-case prediction against nnUNetPredictor (bench/predict_vs_nnunet.py; SimpleITK; f16), with
#             the committed brain model and with a full-size one (bench/full_size_model.py) on Colin27
#   bench     bench/gpu_bench.c and bench/gpu_torch.py on the same shapes, bench/gpu_report.py -> report.md
#   ncu       Nsight Compute: the time of every kernel of two f16 HRNet-18s forwards at a click's size (with
#             and without its cache flush), one small conv of them in detail, one launch of each hot kernel
#   sanitize  the `gpu` suites under compute-sanitizer memcheck, then synccheck and racecheck (slow)
# scripts/gpu_payload.sh assembles what the machine lacks and scripts/gpu_env.sh installs it there; the
# SimpleITK wheel does not fit beside the rest, so a session makes two calls on the same warm machine:
# `build apps i3deep` carrying .gpu/debs and .gpu/a, then at once `predict` and the other phases carrying
# .gpu/b (docs/cuda.md "On a GPU machine").
# Logs go to $1 (default $OUT/gpu-check, else ./gpu-check), one per step, with summary.txt; the other
# arguments name the phases (default: all but ctest; they run in the order above, the issues' measurements
# before the kernel benchmarks, ncu and the sanitizers, whatever the order of the arguments). The exit status is nonzero if any step failed. PYTHON: a Python with torch (default python3). GPU_CHECK_SECONDS:
# a budget for the whole call (default 540); a step that would start after it is skipped and says so, and
# every step is killed at its own limit, so that the logs come back from a `run` call of 10 minutes.
set -u
logs=${1:-${OUT:-.}/gpu-check}
[ $# -gt 0 ] && shift
phases=${*:-build fixtures test apps i3deep predict bench ncu sanitize}
build=build-gpu-check
fixtures=$PWD/$build/fixtures
py=${PYTHON:-python3}
deadline=$(($(date +%s) + ${GPU_CHECK_SECONDS:-540}))
mkdir -p "$logs"
status=0
step() {   # step <name> <seconds> <command...>: runs it (at most that long), logs to $logs/<name>.log
    name=$1
    limit=$2
    shift 2
    left=$((deadline - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        echo "== $name: skipped (the call's time is spent)" | tee -a "$logs/summary.txt"
        status=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (${limit} s at most): $*" | tee -a "$logs/summary.txt"
    t0=$(date +%s)
    if timeout -k 5 "$limit" "$@" > "$logs/$name.log" 2>&1; then
        echo "   ok ($(($(date +%s) - t0)) s)" | tee -a "$logs/summary.txt"
    else
        echo "   FAILED (exit $?, $(($(date +%s) - t0)) s), see $name.log" | tee -a "$logs/summary.txt"
        status=1
    fi
}
wants() { case " $phases " in *" $1 "*) return 0 ;; esac; return 1; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nvcc --version | tail -1
  git log -1 --format='commit %h %s' 2>/dev/null; } >> "$logs/device.txt" 2>&1

if wants build; then
    step configure 120 cmake -S . -B "$build" -G Ninja -DI3RT_CUDA=ON -DI3RT_PYTHON="$(command -v "$py")"
    step build 300 ninja -C "$build"
fi
if wants fixtures; then
    for gen in unet snc_session snc_guided tvl1; do
        step "gen-$gen" 180 "$py" "tests/gen_$gen.py" --out "$fixtures/$gen"
    done
fi
export I3RT_FIXTURES="$fixtures" I3RT_SOURCE_DIR="$PWD" I3RT_BINARY_DIR="$PWD/$build"
if wants test; then
    for prog in test_simt test_cuda_ops; do
        step "$prog-gpu" 240 "$build/tests/$prog" --jobs 1 --verbose --filter 'gpu/*'
    done
    step test_tvl1-gpu 60 "$build/tests/test_tvl1" --jobs 1 --verbose --filter 'tvl1/gpu*'
    for conv in f16 bf16 tf32; do   # the graph's convolutions on tensor cores (runtime/backend_cuda.cu)
        step "test_cuda_ops-gpu-conv-$conv" 120 env I3RT_CUDA_CONV=$conv "$build/tests/test_cuda_ops" --jobs 1 \
            --verbose --filter 'gpu/@(unet*|hrnet*|snc*)'
    done
fi
if wants ctest; then
    step ctest 3600 sh -c "cd $build && ctest --output-on-failure"
fi

bench=$build/kernels/gpu_bench
model=$fixtures/unet/plain_3d.safetensors   # 3d_fullres widths 32..320, written by the fixtures phase

if wants apps; then
    # SnC: click latency and one 3D step, i3rt's CUDA backend vs PyTorch CUDA (docs/snc.md)
    for precision in f32 f16; do   # f32 on the small network only: the first run measured both in f32
        arch=$([ $precision = f32 ] && echo 18s || echo "18s 18")
        step "bench-snc-$precision" 150 sh -c "$py bench/snc_vs_torch.py --build $build --device cuda \
            --precision $precision --arch $arch --runs 5 > $logs/snc_bench_$precision.txt"
    done
    # nnInteractive: time per interaction and peak memory, i3rt vs the Python session, same simulated user
    # and prompts as docs/nninteractive-evaluation.md (one held-out brain case + the head CT)
    step bench-nninteractive 240 sh -c "$py tools/ni_evaluate.py --cases 1 --device cuda --lib $build/libi3rt.so \
        --json $logs/ni_eval.json > $logs/ni_eval.md"
fi
cases=$build/bench-cases   # scripts/i3deep_cases.py: 2 evaluation cases + Colin27, as nnU-Net inputs in predict/
make_cases() {
    [ -f "$cases/cases.tsv" ] && return
    step bench-cases 120 sh -c "rm -rf $cases && $py scripts/i3deep_cases.py --out $cases --n 2 && \
        mkdir -p $cases/predict && for f in $cases/images/*.nii.gz; do \
        ln -sf \"\$(readlink -f \$f)\" $cases/predict/\$(basename \$f .nii.gz)_0000.nii.gz; done"
}
if wants i3deep; then
    make_cases
    step bench-i3deep 240 sh -c "$py bench/i3deep_waiting.py -m weights/brain_3d_fullres \
        -r weights/brain_refine_3d_fullres --cases $cases --large --repeat 2 --threads 4 --device cuda \
        --i3rt $build/i3rt --json $logs/i3deep_waiting.json > $logs/i3deep_waiting.txt"
fi
if wants predict; then
    if "$py" -c "import SimpleITK; SimpleITK.ReadImage" 2>/dev/null; then   # nnUNetPredictor reads files with it
        make_cases
        step bench-predict 180 sh -c "$py bench/predict_vs_nnunet.py -m weights/brain_3d_fullres -i $cases/predict \
            -f 0 --threads 4 --device cuda --i3rt $build/i3rt --json $logs/predict.json > $logs/predict.txt"
        # device memory at real network size: widths 32..320, 128^3 patch, random weights, on Colin27
        step full-size-model 60 "$py" bench/full_size_model.py --like weights/brain_3d_fullres --out $build/full_size_3d
        mkdir -p $build/colin27 && ln -sf "$(readlink -f $cases/images/colin27.nii.gz)" $build/colin27/colin27_0000.nii.gz
        step bench-predict-full-size 240 sh -c "$py bench/predict_vs_nnunet.py -m $build/full_size_3d -i $build/colin27 \
            -f 0 --threads 4 --device cuda --i3rt $build/i3rt --json $logs/predict_full_size.json \
            > $logs/predict_full_size.txt"
    else
        echo "== bench-predict: skipped (nnUNetPredictor reads the cases with SimpleITK, not installed)" \
            | tee -a "$logs/summary.txt"
        status=1
    fi
fi
# Benchmarks: i3rt and PyTorch/cuDNN on the same shapes in the same run (docs/cuda.md, "Benchmarks").
if wants bench; then
    step bench-i3rt-ops 120 sh -c "$bench ops --runs 7 > $logs/i3rt_ops.jsonl"
    step bench-torch-ops 120 sh -c "$py bench/gpu_torch.py ops --runs 7 > $logs/torch_ops.jsonl"
    rm -f "$logs/i3rt_forward.jsonl"
    for conv in f32 tf32 f16 bf16; do
        step "bench-i3rt-forward-$conv" 60 sh -c "I3RT_CUDA_CONV=$conv $bench forward $model 128 128 128 --runs 5 \
            >> $logs/i3rt_forward.jsonl"
    done
    for conv in f32 f16; do   # where a forward's time goes: per-op totals of 2 forwards (warm-up + 1)
        step "profile-forward-$conv" 60 sh -c "I3RT_CUDA_PROFILE=1 I3RT_CUDA_CONV=$conv $bench forward $model \
            128 128 128 --runs 1 > /dev/null 2> $logs/profile_forward_$conv.txt"
    done
    for precision in f32 f16; do   # where a click's time goes: 3 clicks of the test HRNet-18s on Colin27's slice 79
        step "profile-snc-click-$precision" 60 sh -c "I3RT_CUDA_PROFILE=1 $build/i3rt snc click \
            /usr/share/mricron/templates/ch2.nii.gz -2 $fixtures/snc_session/hrnet2d.safetensors --slice axial 79 \
            --click 107 80 + --click 107 100 + --click 125 90 - --device cuda --precision $precision \
            -o /tmp/snc-click-$precision > $logs/profile_snc_click_$precision.txt 2>&1"
    done
    step bench-torch-forward 120 sh -c "$py bench/gpu_torch.py forward $model 128 128 128 --runs 5 \
        > $logs/torch_forward.jsonl"
    step report 30 sh -c "$py bench/gpu_report.py $logs/torch_ops.jsonl $logs/i3rt_ops.jsonl \
        $logs/torch_forward.jsonl $logs/i3rt_forward.jsonl > $logs/report.md"
    cat "$logs/report.md" 2>/dev/null
fi
if wants ncu; then   # what bounds each hot kernel: one profiled launch each, at the real shapes
    # first (issue 8): every launch of two f16 forwards of the test HRNet-18s at a click's slice size (the second
    # captured as a CUDA graph): GPU time per kernel, without the backend profile's synchronizations
    step ncu-hrnet-forward 180 sh -c "I3RT_CUDA_CONV=f16 ncu --csv --print-units base --metrics gpu__time_duration.sum \
        $bench forward $fixtures/snc_session/hrnet2d.safetensors 1 217 181 --runs 1 > $logs/ncu_hrnet_forward_f16.csv \
        && $py bench/ncu_kernel_times.py $logs/ncu_hrnet_forward_f16.csv --forwards 2 > $logs/ncu_hrnet_forward_f16.txt"
    # the same without ncu's cache flush between launches (as a replayed graph runs them): on the third run every
    # conv of a few MFLOP took 32-46 us flushed, which cold instruction and data caches may explain
    step ncu-hrnet-forward-warm 180 sh -c "I3RT_CUDA_CONV=f16 ncu --csv --print-units base --cache-control none \
        --metrics gpu__time_duration.sum $bench forward $fixtures/snc_session/hrnet2d.safetensors 1 217 181 --runs 1 \
        > $logs/ncu_hrnet_forward_f16_warm.csv && $py bench/ncu_kernel_times.py $logs/ncu_hrnet_forward_f16_warm.csv \
        --forwards 2 > $logs/ncu_hrnet_forward_f16_warm.txt"
    # and why one of those small convs takes its time (the 201st v3 launch: with -k, ncu counts only
    # that kernel's launches, 157 per forward, so one in the second forward):
    # warp stalls, issue slots, instructions
    step ncu-hrnet-conv 90 env I3RT_CUDA_CONV=f16 ncu --cache-control none -k regex:conv_tensor_core_v3 \
        --launch-skip 200 -c 1 --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section WarpStateStats --section SchedulerStats --section InstructionStats \
        "$bench" forward "$fixtures/snc_session/hrnet2d.safetensors" 1 217 181 --runs 1
    for kernel in conv_tensor_core_v3 conv_v2 conv_tensor_core_v2 norm_apply norm_finalize instance_norm_v1 \
        softmax_slices_v2 sw_accumulate_v2; do
        step "ncu-$kernel" 60 ncu --target-processes all -k "regex:$kernel" -c 1 --section SpeedOfLight \
            --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats "$bench" ops --runs 1
    done
fi
if wants sanitize; then
    # racecheck of test_cuda_ops is the slowest step (about 230 s on an H200): last, so that a short
    # session's budget cuts only it
    for tool in memcheck synccheck racecheck; do
        for prog in test_simt test_cuda_ops; do
            step "$prog-$tool" 300 compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 1 \
                "$build/tests/$prog" --jobs 1 --filter 'gpu/*'
        done
    done
fi
exit $status
