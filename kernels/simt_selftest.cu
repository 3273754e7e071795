/* Kernels that exercise the device primitives one by one: barriers and shared memory, shuffles,
 * votes, atomics, a detected divergent barrier, and the tensor-core wrappers (mma m16n8k16 and m16n8k8 .tf32 with
 * fragments loaded by hand from the PTX layouts, and through ldmatrix). tests/test_simt.c runs them
 * on the emulator, and on a GPU when one is present, and checks them against scalar code. Each
 * launcher takes host arrays and does its own device copies, so the test needs no device API. */
#include "device.h"
#include "simt_selftest.h"

namespace I3_NS {

/* Each thread writes its id to shared memory, then reads its neighbour's after the barrier; then a
 * tree reduction over the block in dynamic shared memory. */
__global__ void selftest_barrier_kernel(int *neighbour, int *block_sum) {
    __shared__ int ids[SELFTEST_BLOCK];
    I3_DYNAMIC_SHARED(int, partial);
    int t = threadIdx.x, n = blockDim.x;
    ids[t] = t + 1000 * blockIdx.x;
    __syncthreads();
    neighbour[blockIdx.x * n + t] = ids[(t + 1) % n];
    partial[t] = t;
    __syncthreads();
    for (int stride = 64; stride > 0; stride /= 2) {   /* n == 96: fold 64..95 first */
        if (t < stride && t + stride < n) partial[t] += partial[t + stride];
        __syncthreads();
    }
    if (t == 0) block_sum[blockIdx.x] = partial[0];
}

__global__ void selftest_shuffle_kernel(int *out) {
    int lane = threadIdx.x % 32;
    int *o = out + threadIdx.x * SELFTEST_SHUFFLES;
    int v = 100 + lane;
    o[0] = __shfl_sync(0xffffffffu, v, 3);
    o[1] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[2] = __shfl_down_sync(0xffffffffu, v, 7);
    o[3] = __shfl_up_sync(0xffffffffu, v, 2);
    o[4] = __shfl_sync(0xffffffffu, v, 2, 8);
    o[5] = __shfl_down_sync(0xffffffffu, v, 3, 8);
    float f = __shfl_xor_sync(0xffffffffu, (float)lane * 0.5f, 16);
    o[6] = (int)(f * 2.0f);
    /* only the even lanes take part */
    o[7] = -1;
    if (lane % 2 == 0) o[7] = __shfl_xor_sync(0x55555555u, v, 2);
}

__global__ void selftest_vote_kernel(unsigned *out) {
    int lane = threadIdx.x % 32;
    unsigned *o = out + threadIdx.x * SELFTEST_VOTES;
    o[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    o[1] = (unsigned)__all_sync(0xffffffffu, lane < 32);
    o[2] = (unsigned)__all_sync(0xffffffffu, lane < 16);
    o[3] = (unsigned)__any_sync(0xffffffffu, lane == 17);
    o[4] = (unsigned)__any_sync(0xffffffffu, lane > 40);
}

__global__ void selftest_atomic_kernel(int *counter, float *sum, int *max_by_cas) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(counter, 1);
    atomicAdd(sum, 0.5f);
    int value = (t * 7919) % 1009, old = *max_by_cas;
    while (old < value) {
        int seen = atomicCAS(max_by_cas, old, value);
        if (seen == old) break;
        old = seen;
    }
}

/* A reduction missing the barrier between writing and reading shared memory: its result depends on
 * the order the threads run in (I3RT_SIMT_ORDER on the emulator). */
__global__ void selftest_racy_kernel(int *out) {
    __shared__ int values[SELFTEST_BLOCK];
    values[threadIdx.x] = (int)threadIdx.x + 1;
    /* __syncthreads() belongs here */
    int sum = 0;
    for (int i = 0; i < (int)blockDim.x; i++) sum += values[i];
    out[threadIdx.x] = sum;
    __syncthreads();
}

/* Thread 0 waits at a barrier while its warp's other lanes wait in a shuffle that needs it: hangs
 * on a GPU, a reported deadlock on the emulator. */
__global__ void selftest_deadlock_kernel(int *out) {
    if (threadIdx.x == 0) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
        __syncthreads();
    }
}

/* Threads 0..15 return before a barrier that the others reach: undefined on a GPU, an error on the
 * emulator. */
__global__ void selftest_divergent_barrier_kernel(int *out) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

/* D = A B + C for A [16x16], B [16x8] (both row-major, 16-bit values), C and D [16x8] f32, by one
 * warp: fragments either gathered by hand from the PTX layouts or loaded with ldmatrix. */
__global__ void selftest_mma_kernel(const uint16_t *a, const uint16_t *b, const float *c, float *d, int bf16,
                                    int use_ldmatrix) {
    __shared__ __align__(16) uint16_t sa[16 * 16];
    __shared__ __align__(16) uint16_t sb[16 * 8];
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    for (int i = lane; i < 16 * 16; i += 32) sa[i] = a[i];
    for (int i = lane; i < 16 * 8; i += 32) sb[i] = b[i];
    __syncthreads();
    uint32_t fa[4], fb[2];
    if (use_ldmatrix) {
        /* A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) */
        int j = lane / 8, r = lane % 8;
        ldmatrix_x4(fa, &sa[(r + 8 * (j % 2)) * 16 + 8 * (j / 2)]);
        /* B is k-major in memory: the transposed load gives the column fragments (k 0-7, k 8-15) */
        ldmatrix_x2_trans(fb, &sb[(lane % 16) * 8]);
    } else {
        for (int i = 0; i < 4; i++) {
            int row = g + 8 * (i % 2), col = 2 * t + 8 * (i / 2);
            fa[i] = pack_b16(sa[row * 16 + col], sa[row * 16 + col + 1]);
        }
        for (int i = 0; i < 2; i++) {
            int k = 2 * t + 8 * i;
            fb[i] = pack_b16(sb[k * 8 + g], sb[(k + 1) * 8 + g]);
        }
    }
    float fc[4], fd[4];
    for (int i = 0; i < 4; i++) fc[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    if (bf16)
        mma_m16n8k16_bf16(fd, fa, fb, fc);
    else
        mma_m16n8k16_f16(fd, fa, fb, fc);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = fd[i];
}

/* D = A B + C for A [16x8], B [8x8] (row-major f32, rounded to TF32 here), C and D [16x8] f32, by
 * one warp with mma m16n8k8 .tf32, fragments gathered from the PTX layouts. */
__global__ void selftest_mma_tf32_kernel(const float *a, const float *b, const float *c, float *d) {
    int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    uint32_t fa[4], fb[2];
    for (int i = 0; i < 4; i++) fa[i] = to_tf32(a[(g + 8 * (i % 2)) * 8 + t + 4 * (i / 2)]);
    for (int i = 0; i < 2; i++) fb[i] = to_tf32(b[(t + 4 * i) * 8 + g]);
    float fc[4], fd[4];
    for (int i = 0; i < 4; i++) fc[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    mma_m16n8k8_tf32(fd, fa, fb, fc);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = fd[i];
}

/* Device buffers for a launcher: copies in, runs, copies out, frees; the first error wins. */
struct Buffers {
    void *ptr[4];
    int n;
    cudaError_t error;
};

template <typename T>
static T *to_device(Buffers *bufs, const T *host, size_t count) {
    void *p = NULL;
    if (bufs->error == cudaSuccess) bufs->error = cudaMalloc(&p, count * sizeof(T));
    if (bufs->error != cudaSuccess) return NULL;
    bufs->ptr[bufs->n++] = p;
    bufs->error = host ? cudaMemcpy(p, host, count * sizeof(T), cudaMemcpyHostToDevice)
                       : cudaMemset(p, 0, count * sizeof(T));
    return (T *)p;
}

template <typename T>
static void to_host(Buffers *bufs, T *host, const T *device, size_t count) {
    if (bufs->error == cudaSuccess) bufs->error = cudaMemcpy(host, device, count * sizeof(T), cudaMemcpyDeviceToHost);
}

static int finish(Buffers *bufs) {
    for (int i = 0; i < bufs->n; i++) cudaFree(bufs->ptr[i]);
    return (int)bufs->error;
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(selftest_barrier)(int *neighbour, int *block_sum) {
    Buffers bufs = {};
    int *dn = to_device<int>(&bufs, NULL, 2 * SELFTEST_BLOCK), *ds = to_device<int>(&bufs, NULL, 2);
    if (bufs.error == cudaSuccess)
        bufs.error = I3_LAUNCH(selftest_barrier_kernel, 2, SELFTEST_BLOCK, SELFTEST_BLOCK * sizeof(int), 0, dn, ds);
    to_host(&bufs, neighbour, dn, 2 * SELFTEST_BLOCK);
    to_host(&bufs, block_sum, ds, 2);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_shuffles)(int *out) {
    Buffers bufs = {};
    int *d = to_device<int>(&bufs, NULL, SELFTEST_BLOCK * SELFTEST_SHUFFLES);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_shuffle_kernel, 1, SELFTEST_BLOCK, 0, 0, d);
    to_host(&bufs, out, d, SELFTEST_BLOCK * SELFTEST_SHUFFLES);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_votes)(unsigned *out) {
    Buffers bufs = {};
    unsigned *d = to_device<unsigned>(&bufs, NULL, SELFTEST_BLOCK * SELFTEST_VOTES);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_vote_kernel, 1, SELFTEST_BLOCK, 0, 0, d);
    to_host(&bufs, out, d, SELFTEST_BLOCK * SELFTEST_VOTES);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_atomics)(int blocks, int *counter, float *sum, int *max_by_cas) {
    Buffers bufs = {};
    int *dc = to_device<int>(&bufs, NULL, 1), *dm = to_device<int>(&bufs, NULL, 1);
    float *ds = to_device<float>(&bufs, NULL, 1);
    if (bufs.error == cudaSuccess)
        bufs.error = I3_LAUNCH(selftest_atomic_kernel, blocks, SELFTEST_BLOCK, 0, 0, dc, ds, dm);
    to_host(&bufs, counter, dc, 1);
    to_host(&bufs, sum, ds, 1);
    to_host(&bufs, max_by_cas, dm, 1);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_racy)(int *out) {
    Buffers bufs = {};
    int *d = to_device<int>(&bufs, NULL, SELFTEST_BLOCK);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_racy_kernel, 1, SELFTEST_BLOCK, 0, 0, d);
    to_host(&bufs, out, d, SELFTEST_BLOCK);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_deadlock)(void) {
    Buffers bufs = {};
    int *d = to_device<int>(&bufs, NULL, 32);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_deadlock_kernel, 1, 32, 0, 0, d);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_divergent_barrier)(void) {
    Buffers bufs = {};
    int *d = to_device<int>(&bufs, NULL, 64);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_divergent_barrier_kernel, 1, 64, 0, 0, d);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_mma)(const uint16_t *a, const uint16_t *b, const float *c, float *d, int bf16,
                                    int use_ldmatrix) {
    Buffers bufs = {};
    const uint16_t *da = to_device(&bufs, a, 16 * 16), *db = to_device(&bufs, b, 16 * 8);
    const float *dc = to_device(&bufs, c, 16 * 8);
    float *dd = to_device<float>(&bufs, NULL, 16 * 8);
    if (bufs.error == cudaSuccess)
        bufs.error = I3_LAUNCH(selftest_mma_kernel, 1, 32, 0, 0, da, db, dc, dd, bf16, use_ldmatrix);
    to_host(&bufs, d, dd, 16 * 8);
    return finish(&bufs);
}

extern "C" int I3_DEV(selftest_mma_tf32)(const float *a, const float *b, const float *c, float *d) {
    Buffers bufs = {};
    const float *da = to_device(&bufs, a, 16 * 8), *db = to_device(&bufs, b, 8 * 8), *dc = to_device(&bufs, c, 16 * 8);
    float *dd = to_device<float>(&bufs, NULL, 16 * 8);
    if (bufs.error == cudaSuccess) bufs.error = I3_LAUNCH(selftest_mma_tf32_kernel, 1, 32, 0, 0, da, db, dc, dd);
    to_host(&bufs, d, dd, 16 * 8);
    return finish(&bufs);
}
