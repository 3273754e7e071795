/* The SIMT emulator: runs the CUDA kernels of kernels/<op>.cu on the CPU, from the same source.
 *
 * A .cu file includes kernels/device.h, which includes this header when the file is compiled by
 * the ordinary C++ compiler (-x c++) instead of nvcc. It provides what the kernels use:
 *   - threadIdx, blockIdx, blockDim, gridDim, __global__, __device__, __shared__, dim3;
 *   - __syncthreads(), __syncwarp(), warp shuffles and votes, atomics (plain operations: every fiber
 *     runs on one OS thread and switches only at barriers and warp collectives);
 *   - the tensor-core and async-copy wrappers of device.h (mma m16n8k16, ldmatrix, cp.async);
 *   - a launch (I3_LAUNCH in device.h) that runs the grid's blocks one after another, and the
 *     threads of a block as user-level fibers (ucontext) that switch at barriers and warp-collective
 *     calls;
 *   - the few CUDA runtime calls the backend makes (cudaMalloc, cudaMemcpy, streams, events,
 *     errors) on plain host memory.
 *
 * `__shared__` is `static thread_local`: a kernel's shared arrays are function statics, one copy per
 * OS thread, shared by the fibers of the block that runs; blocks run one at a time, so that is the
 * block's shared memory. Like on a GPU their contents are undefined when a block starts.
 *
 * Fibers are resumed in thread order, or in reverse order with the environment variable
 * I3RT_SIMT_ORDER=reverse: a shared-memory race (a read of what another thread writes without a
 * barrier in between) gives different results in the two orders, which the tests compare.
 *
 * The emulator checks what a GPU would leave undefined or hang on: a barrier that some threads of
 * the block never reach, a warp collective whose mask names a thread that exited, a deadlock. The
 * launch then fails with cudaErrorLaunchFailure and a message (cudaGetLastError / i3emu_error()).
 * Under AddressSanitizer the fiber switches are announced to ASan (__sanitizer_*_switch_fiber).
 */
#ifndef I3RT_SIMT_H
#define I3RT_SIMT_H

#ifdef __CUDACC__
#error "simt.h is the emulator: include kernels/device.h, which picks CUDA or the emulator"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <new> /* placement new only: no C++ runtime library */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local

namespace i3emu {

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};
typedef struct i3emu_stream *cudaStream_t;
typedef struct i3emu_event *cudaEvent_t;
typedef struct i3emu_graph *cudaGraph_t;
typedef struct i3emu_graph *cudaGraphExec_t;
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
enum { cudaHostAllocDefault = 0 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };

/* ---- the running launch: one per OS thread ------------------------------------------------- */

enum { WARP_SIZE = 32, SLOT_BYTES = 64 };

struct Fiber;
struct Warp {
    uint32_t arrived;                        /* lanes waiting in a collective */
    unsigned char in[WARP_SIZE][SLOT_BYTES]; /* each lane's operands */
    unsigned char out[WARP_SIZE][SLOT_BYTES];/* each lane's result, written by the last to arrive */
};

/* Thread state of the current block, set by the launcher; kernels see it through the macros below. */
struct Launch {
    dim3 grid, block, block_idx;
    Fiber *fibers;
    Fiber *current;
    Warp *warps;
    int n_threads, live, at_barrier;
    int failed;
    unsigned char *dynamic_smem;
};

Launch *current_launch();
const dim3 &current_thread_idx();
int current_linear_tid();

/* Suspends the current fiber until the launcher or another fiber makes it runnable again. */
void barrier();
/* Enters a warp collective: deposits `in` (at most SLOT_BYTES) for this lane, waits until every lane
 * of `mask` has arrived; the last to arrive runs finalize(warp, mask) which fills warp->out; then
 * copies this lane's result to `out`. */
void warp_collective(uint32_t mask, const void *in, size_t in_bytes, void (*finalize)(Warp *, uint32_t),
                     void *out, size_t out_bytes);
int lane_id();
/* Records the first error of the launch (the launch stops after the current block). */
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef void (*kernel_thunk)(void *);
cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, kernel_thunk thunk, void *closure);

/* A launch kept by a stream under capture, for a CUDA graph: its closure (the kernel and its
 * arguments, copied when the launch was made, as <<<>>> evaluates them) on the heap. */
struct RecordedLaunch {
    dim3 grid, block;
    size_t smem;
    kernel_thunk thunk;
    void (*destroy)(void *);
    void *closure;
};
bool stream_capturing(cudaStream_t s);
/* Appends the launch to the capturing stream's graph, which then owns the closure. */
cudaError_t record_launch(cudaStream_t s, const RecordedLaunch &r);

template <typename F>
static inline cudaError_t launch_closure(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, F closure) {
    kernel_thunk thunk = [](void *c) { (*static_cast<F *>(c))(); };
    if (stream && stream_capturing(stream)) {
        void *copy = malloc(sizeof(F));
        if (!copy) return cudaErrorMemoryAllocation;
        new (copy) F(closure);
        RecordedLaunch r = {grid, block, smem, thunk, [](void *c) {
                                static_cast<F *>(c)->~F();
                                free(c);
                            },
                            copy};
        return record_launch(stream, r);
    }
    return launch(grid, block, smem, thunk, &closure);
}

/* kernel<<<grid, block, smem, stream>>>(args...): the arguments are evaluated and copied now. */
template <typename K, typename... A>
static inline cudaError_t launch_kernel(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, K kernel,
                                        A... args) {
    return launch_closure(grid, block, smem, stream, [kernel, args...]() { kernel(args...); });
}

/* ---- runtime calls ------------------------------------------------------------------------- */

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char *cudaGetErrorString(cudaError_t e);
const char *error_detail();   /* the emulator's message about the last failure ("" if none) */
/* extern "C" uint64_t i3emu_kernels_run(void): the kernels run on the calling thread so far (launched directly
 * or by a replayed graph), so that a test can count the launches of a forward. */
cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
/* Stream capture and graphs: launches on a capturing stream are recorded, not run (copies and
 * memsets still run at once: the backend captures kernels only); instantiation moves the
 * recording into the executable graph (a graph instantiates once), a launch re-runs it. */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
/* Pinned host memory is plain host memory here. */
cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *ptr);

/* ---- built-in variables -------------------------------------------------------------------- */

#define threadIdx (::i3emu::current_thread_idx())
#define blockIdx (::i3emu::current_launch()->block_idx)
#define blockDim (::i3emu::current_launch()->block)
#define gridDim (::i3emu::current_launch()->grid)
#define warpSize 32

static inline void __syncthreads() { barrier(); }

static inline void syncwarp_finalize(Warp *, uint32_t) {}
static inline void __syncwarp(uint32_t mask = 0xffffffffu) {
    warp_collective(mask, nullptr, 0, syncwarp_finalize, nullptr, 0);
}
static inline void __threadfence() {}
static inline void __threadfence_block() {}

/* ---- shuffles and votes ---------------------------------------------------------------------- */

struct ShflIn {
    int src;                 /* source lane computed by the caller */
    unsigned char value[8];
};

static inline void shfl_finalize(Warp *w, uint32_t mask) {
    for (int l = 0; l < WARP_SIZE; l++) {
        if (!(mask >> l & 1)) continue;
        ShflIn in;
        memcpy(&in, w->in[l], sizeof in);
        ShflIn src;
        memcpy(&src, w->in[in.src], sizeof src);
        memcpy(w->out[l], src.value, sizeof src.value);
    }
}

template <typename T>
static inline T shfl_from(uint32_t mask, T var, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    ShflIn in;
    in.src = src;
    memset(in.value, 0, sizeof in.value);
    memcpy(in.value, &var, sizeof var);
    T out;
    warp_collective(mask, &in, sizeof in, shfl_finalize, &out, sizeof out);
    return out;
}

template <typename T>
static inline T __shfl_sync(uint32_t mask, T var, int src_lane, int width = warpSize) {
    int lane = lane_id(), base = lane & ~(width - 1);
    return shfl_from(mask, var, base + (src_lane & (width - 1)));
}
template <typename T>
static inline T __shfl_xor_sync(uint32_t mask, T var, int lane_mask, int width = warpSize) {
    int lane = lane_id(), base = lane & ~(width - 1), src = lane ^ lane_mask;
    return shfl_from(mask, var, src >= base + width ? lane : src);
}
template <typename T>
static inline T __shfl_down_sync(uint32_t mask, T var, unsigned delta, int width = warpSize) {
    int lane = lane_id(), base = lane & ~(width - 1), src = lane + (int)delta;
    return shfl_from(mask, var, src >= base + width ? lane : src);
}
template <typename T>
static inline T __shfl_up_sync(uint32_t mask, T var, unsigned delta, int width = warpSize) {
    int lane = lane_id(), base = lane & ~(width - 1), src = lane - (int)delta;
    return shfl_from(mask, var, src < base ? lane : src);
}

static inline void ballot_finalize(Warp *w, uint32_t mask) {
    uint32_t bits = 0;
    for (int l = 0; l < WARP_SIZE; l++)
        if ((mask >> l & 1) && w->in[l][0]) bits |= 1u << l;
    for (int l = 0; l < WARP_SIZE; l++)
        if (mask >> l & 1) memcpy(w->out[l], &bits, sizeof bits);
}
static inline uint32_t __ballot_sync(uint32_t mask, int predicate) {
    unsigned char p = predicate != 0;
    uint32_t bits;
    warp_collective(mask, &p, 1, ballot_finalize, &bits, sizeof bits);
    return bits;
}
static inline int __all_sync(uint32_t mask, int predicate) { return __ballot_sync(mask, !predicate) == 0; }
static inline int __any_sync(uint32_t mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

static inline int __popc(uint32_t x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((uint32_t)x); }

/* ---- atomics: fibers never interleave inside a call, so plain read-modify-write is atomic -------- */

template <typename T>
static inline T atomicAdd(T *address, T val) {
    T old = *address;
    *address = old + val;
    return old;
}
template <typename T>
static inline T atomicSub(T *address, T val) {
    T old = *address;
    *address = old - val;
    return old;
}
template <typename T>
static inline T atomicMax(T *address, T val) {
    T old = *address;
    if (val > old) *address = val;
    return old;
}
template <typename T>
static inline T atomicMin(T *address, T val) {
    T old = *address;
    if (val < old) *address = val;
    return old;
}
template <typename T>
static inline T atomicExch(T *address, T val) {
    T old = *address;
    *address = val;
    return old;
}
template <typename T>
static inline T atomicCAS(T *address, T compare, T val) {
    T old = *address;
    if (old == compare) *address = val;
    return old;
}

/* ---- float helpers the kernels use ----------------------------------------------------------- */

static inline float __expf(float x) { return expf(x); }
static inline float __logf(float x) { return logf(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
template <typename T>
static inline T __ldg(const T *p) { return *p; }
template <typename T>
static inline T __ldcg(const T *p) { return *p; }

/* f16 and bf16 as their bit patterns (round to nearest even), like cuda_fp16.h / cuda_bf16.h. */
struct __half {
    uint16_t x;
};
struct __nv_bfloat16 {
    uint16_t x;
};
static inline float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.x & 0x8000) << 16, exp = h.x >> 10 & 0x1f, mant = h.x & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | mant << 13;
    } else if (mant == 0) {
        bits = sign;
    } else {   /* subnormal: normalize */
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while (!(mant & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (mant & 0x3ff) << 13;
    }
    return __int_as_float((int)bits);
}
static inline __half __float2half(float f) {
    uint32_t x = (uint32_t)__float_as_int(f), sign = x >> 16 & 0x8000;
    uint32_t abs = x & 0x7fffffffu;
    __half h;
    if (abs >= 0x7f800000u) {
        h.x = (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
    } else if (abs >= 0x477ff000u) {   /* rounds to >= 65520: infinity */
        h.x = (uint16_t)(sign | 0x7c00);
    } else if (abs < 0x38800000u) {    /* subnormal half (or zero) */
        float scaled = __int_as_float((int)abs) * 16777216.0f;   /* 2^24: units of the smallest subnormal */
        h.x = (uint16_t)(sign | (uint32_t)nearbyintf(scaled));
    } else {
        uint32_t mant = abs + 0xfffu + (abs >> 13 & 1);   /* round to nearest even at bit 13 */
        h.x = (uint16_t)(sign | ((mant - 0x38000000u) >> 13));
    }
    return h;
}
static inline uint16_t __half_as_ushort(__half h) { return h.x; }
static inline uint16_t __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
static inline __half __ushort_as_half(uint16_t x) { return __half{x}; }
static inline __nv_bfloat16 __ushort_as_bfloat16(uint16_t x) { return __nv_bfloat16{x}; }
static inline float __bfloat162float(__nv_bfloat16 b) { return __int_as_float((int)((uint32_t)b.x << 16)); }
static inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t x = (uint32_t)__float_as_int(f);
    __nv_bfloat16 b;
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        b.x = (uint16_t)(x >> 16 | 0x40);
    } else {
        b.x = (uint16_t)((x + 0x7fffu + (x >> 16 & 1)) >> 16);
    }
    return b;
}

}  // namespace i3emu

#endif /* I3RT_SIMT_H */
