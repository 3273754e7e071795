/* What every kernels/<op>.cu includes first: CUDA under nvcc, the SIMT emulator (simt.h) under the
 * ordinary C++ compiler, and the project's own wrappers that differ between the two:
 *   I3_NS               the namespace the file's code lives in (i3gpu / i3emu), so that both builds
 *                       of the same source link into one library;
 *   I3_DEV(name)        the extern "C" name of a launcher for this build (i3gpu_name / i3emu_name);
 *   I3_LAUNCH(...)      kernel<<<grid, block, smem, stream>>>(args) or the emulator's launch;
 *   I3_DYNAMIC_SHARED   the block's dynamic shared memory;
 *   I3_UNROLL           #pragma unroll for nvcc (nothing on the emulator);
 *   mma_m16n8k16_*      tensor-core MMA, f16/bf16 in, f32 accumulate, PTX fragment layouts;
 *   mma_m16n8k8_tf32    the same with TF32 operands (to_tf32: cvt.rna, nearest, ties away from 0);
 *   ldmatrix_*          8x8 b16 matrix loads from shared memory into those fragments;
 *   cp_async_16 ...     16-byte async global->shared copies, commit and wait (all, or all but the
 *                       newest N groups); a plain copy on the emulator.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16/.bf16): with
 * g = lane / 4 and t = lane % 4, each lane holds
 *   A (16x16, row-major)  a[i] (i = 0..7, two per 32-bit register, low half first):
 *                         row g + 8*((i/2)%2), column 2t + i%2 + 8*(i/4)
 *   B (16x8, k x n)       b[i] (i = 0..3): row (k) 2t + i%2 + 8*(i/2), column (n) g
 *   C, D (16x8, f32)      c[i] (i = 0..3): row g + 8*(i/2), column 2t + i%2
 * m16n8k8 with .tf32 (32-bit registers, one value each):
 *   A (16x8)              a[i] (i = 0..3): row g + 8*(i%2), column t + 4*(i/2)
 *   B (8x8, k x n)        b[i] (i = 0..1): row (k) t + 4*i, column (n) g
 *   C, D                  as above.
 * ldmatrix .x1/.x2/.x4: lanes 8j..8j+7 give the row addresses of matrix j; register j of lane l
 * holds row l/4, columns 2(l%4) and 2(l%4)+1 of matrix j (.trans: the transposed matrix). */
#ifndef I3RT_KERNELS_DEVICE_H
#define I3RT_KERNELS_DEVICE_H

#include <stdint.h>

extern "C" {
#include "ops.h"
}

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define I3_NS i3gpu
#define I3_DEV(name) i3gpu_##name
#define I3_LAUNCH(kernel, grid, block, smem, stream, ...) \
    (kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__), cudaGetLastError())
#define I3_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
/* Fully unrolls the next loop (constant trip count), so that small arrays indexed by its counter
 * stay in registers instead of local memory. */
#define I3_UNROLL _Pragma("unroll")
#else
#include "simt.h"
#define I3_NS i3emu
#define I3_DEV(name) i3emu_##name
#define I3_LAUNCH(kernel, grid, block, smem, stream, ...) \
    (::i3emu::launch_kernel((grid), (block), (smem), (stream), kernel, __VA_ARGS__), ::i3emu::cudaGetLastError())
#define I3_DYNAMIC_SHARED(type, name) type *name = (type *)::i3emu::current_launch()->dynamic_smem
#define I3_UNROLL
#endif

namespace I3_NS {

/* Blocks of a grid-stride loop over n items: enough to fill a GPU; on the emulator fewer, larger
 * loops (each thread is a fiber, and creating fibers is what costs there). */
#ifdef __CUDACC__
#define I3_MAX_GRID_STRIDE_BLOCKS 4096
#else
#define I3_MAX_GRID_STRIDE_BLOCKS 16
#endif
static inline unsigned grid_stride_blocks(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    return (unsigned)(blocks < 1 ? 1 : blocks > I3_MAX_GRID_STRIDE_BLOCKS ? I3_MAX_GRID_STRIDE_BLOCKS : blocks);
}
#define I3_GRID_STRIDE_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

/* The fused activation of ops.h (i3_act_apply), on the device. */
__device__ __forceinline__ float act_apply(i3_act a, float v) {
    if (a.kind == I3_ACT_NONE || v >= 0.0f) return v;
    return a.kind == I3_ACT_RELU ? 0.0f : v * a.slope;
}

/* A float as the bits of an f16 (BF16 = false) or bf16 (BF16 = true), round to nearest even. */
template <bool BF16>
__device__ __forceinline__ uint16_t to_b16(float v) {
    return BF16 ? __bfloat16_as_ushort(__float2bfloat16(v)) : __half_as_ushort(__float2half(v));
}

/* The float that f16 (BF16 = false) or bf16 (BF16 = true) bits stand for. */
template <bool BF16>
__device__ __forceinline__ float from_b16(uint16_t h) {
    return BF16 ? __bfloat162float(__ushort_as_bfloat16(h)) : __half2float(__ushort_as_half(h));
}

/* The activation formats a kernel may read: NCDHW f32, or channels-last [n, d, h, w, c] f16 / bf16 (the
 * tensor-core convolution's, kernels/conv_tensor_core.cu). */
enum { INPUT_F32, INPUT_F16_CL, INPUT_BF16_CL };

/* Element (sample, channel c, position pos) of x [n, channels, spatial] in format INPUT, as a float. */
template <int INPUT>
__device__ __forceinline__ float input_at(const void *x, int64_t sample, int64_t c, int64_t channels, int64_t pos,
                                          int64_t spatial) {
    if (INPUT == INPUT_F32) return ((const float *)x)[(sample * channels + c) * spatial + pos];
    return from_b16<INPUT == INPUT_BF16_CL>(((const uint16_t *)x)[(sample * spatial + pos) * channels + c]);
}

/* Packs two 16-bit values into one fragment register, the first in the low half. */
__device__ __forceinline__ uint32_t pack_b16(uint16_t lo, uint16_t hi) { return (uint32_t)lo | (uint32_t)hi << 16; }

#ifdef __CUDACC__

__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ uint32_t to_tf32(float v) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ uint32_t smem_address(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void ldmatrix_x1(uint32_t r[1], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}
__device__ __forceinline__ void cp_async_16(void *smem_dst, const void *global_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(smem_dst)), "l"(global_src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
/* Waits until at most N of this thread's committed groups are still in flight. */
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#else /* the emulator: the warp's lanes meet in a collective and the last one computes for all */

struct MmaIn {
    uint32_t a[4], b[2];
    float c[4];
};
typedef float (*b16_to_float)(uint16_t);
static inline float f16_bits_to_float(uint16_t h) { return __half2float(__half{h}); }
static inline float bf16_bits_to_float(uint16_t h) { return __bfloat162float(__nv_bfloat16{h}); }

/* D = C + A B on the warp's 16x8 tile (A 16xK, B Kx8), each lane's four D values in the PTX
 * fragment order (row g or g + 8, columns 2t and 2t + 1), for every mma shape the kernels use. */
template <int K>
static inline void mma_write_d(Warp *w, const float (*A)[K], const float (*B)[8], const float (*C)[8]) {
    for (int lane = 0; lane < WARP_SIZE; lane++) {
        int g = lane / 4, t = lane % 4;
        float d[4];
        for (int i = 0; i < 4; i++) {
            int row = g + 8 * (i / 2), col = 2 * t + i % 2;
            float acc = C[row][col];
            for (int k = 0; k < K; k++) acc += A[row][k] * B[k][col];
            d[i] = acc;
        }
        memcpy(w->out[lane], d, sizeof d);
    }
}

/* One mma.sync as a warp collective: every lane hands in its fragments, `finalize` (run once with all
 * of them) gathers A, B and C and writes each lane's D. */
static inline void mma_sync(void (*finalize)(Warp *, uint32_t), float d[4], const uint32_t a[4],
                            const uint32_t b[2], const float c[4]) {
    if ((current_launch()->n_threads - current_linear_tid() / WARP_SIZE * WARP_SIZE) < WARP_SIZE)
        fail("mma.sync needs a full warp");
    MmaIn in;
    memcpy(in.a, a, sizeof in.a);
    memcpy(in.b, b, sizeof in.b);
    memcpy(in.c, c, sizeof in.c);
    float out[4];
    warp_collective(0xffffffffu, &in, sizeof in, finalize, out, sizeof out);
    memcpy(d, out, sizeof out);
}

template <b16_to_float to_float>
static inline void mma_finalize(Warp *w, uint32_t mask) {
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < WARP_SIZE; lane++) {
        MmaIn in;
        memcpy(&in, w->in[lane], sizeof in);
        int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 8; i++)
            A[g + 8 * (i / 2 % 2)][2 * t + i % 2 + 8 * (i / 4)] = to_float((uint16_t)(in.a[i / 2] >> 16 * (i % 2)));
        for (int i = 0; i < 4; i++)
            B[2 * t + i % 2 + 8 * (i / 2)][g] = to_float((uint16_t)(in.b[i / 2] >> 16 * (i % 2)));
        for (int i = 0; i < 4; i++) C[g + 8 * (i / 2)][2 * t + i % 2] = in.c[i];
    }
    mma_write_d<16>(w, A, B, C);
}

static inline void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_sync(mma_finalize<f16_bits_to_float>, d, a, b, c);
}
static inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_sync(mma_finalize<bf16_bits_to_float>, d, a, b, c);
}

/* cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest with ties away from zero (NaN and
 * infinity pass unchanged). */
static inline uint32_t to_tf32(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
    return (bits + 0x1000u) & 0xffffe000u;
}
static inline float tf32_bits_to_float(uint32_t bits) {
    float v;
    bits &= 0xffffe000u; /* the tensor core ignores the low 13 bits */
    memcpy(&v, &bits, sizeof v);
    return v;
}

static inline void mma_tf32_finalize(Warp *w, uint32_t mask) {
    float A[16][8], B[8][8], C[16][8];
    for (int lane = 0; lane < WARP_SIZE; lane++) {
        MmaIn in;
        memcpy(&in, w->in[lane], sizeof in);
        int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++) A[g + 8 * (i % 2)][t + 4 * (i / 2)] = tf32_bits_to_float(in.a[i]);
        for (int i = 0; i < 2; i++) B[t + 4 * i][g] = tf32_bits_to_float(in.b[i]);
        for (int i = 0; i < 4; i++) C[g + 8 * (i / 2)][2 * t + i % 2] = in.c[i];
    }
    mma_write_d<8>(w, A, B, C);
}

static inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    mma_sync(mma_tf32_finalize, d, a, b, c);
}

template <int N_MATRICES, bool TRANS>
static inline void ldmatrix_finalize(Warp *w, uint32_t mask) {
    const uint16_t *rows[WARP_SIZE];
    for (int lane = 0; lane < WARP_SIZE; lane++) memcpy(&rows[lane], w->in[lane], sizeof rows[lane]);
    for (int lane = 0; lane < WARP_SIZE; lane++) {
        uint32_t r[4] = {0, 0, 0, 0};
        for (int j = 0; j < N_MATRICES; j++) {
            uint16_t e[2];
            for (int i = 0; i < 2; i++)
                e[i] = TRANS ? rows[8 * j + 2 * (lane % 4) + i][lane / 4] : rows[8 * j + lane / 4][2 * (lane % 4) + i];
            r[j] = pack_b16(e[0], e[1]);
        }
        memcpy(w->out[lane], r, sizeof r);
    }
}
template <int N_MATRICES, bool TRANS>
static inline void ldmatrix(uint32_t *r, const void *row) {
    if ((current_launch()->n_threads - current_linear_tid() / WARP_SIZE * WARP_SIZE) < WARP_SIZE)
        fail("ldmatrix needs a full warp");
    uint32_t out[4];
    warp_collective(0xffffffffu, &row, sizeof row, ldmatrix_finalize<N_MATRICES, TRANS>, out, sizeof out);
    memcpy(r, out, N_MATRICES * sizeof(uint32_t));
}
static inline void ldmatrix_x1(uint32_t r[1], const void *row) { ldmatrix<1, false>(r, row); }
static inline void ldmatrix_x2(uint32_t r[2], const void *row) { ldmatrix<2, false>(r, row); }
static inline void ldmatrix_x4(uint32_t r[4], const void *row) { ldmatrix<4, false>(r, row); }
static inline void ldmatrix_x2_trans(uint32_t r[2], const void *row) { ldmatrix<2, true>(r, row); }
static inline void ldmatrix_x4_trans(uint32_t r[4], const void *row) { ldmatrix<4, true>(r, row); }
static inline void cp_async_16(void *smem_dst, const void *global_src) {
    if (((uintptr_t)smem_dst | (uintptr_t)global_src) % 16) fail("cp.async of 16 bytes needs 16-byte aligned addresses");
    memcpy(smem_dst, global_src, 16);
}
static inline void cp_async_commit() {}
static inline void cp_async_wait_all() {}
template <int N>
static inline void cp_async_wait_group() {}

#endif

}  // namespace I3_NS

#endif /* I3RT_KERNELS_DEVICE_H */
