/* 3D convolution (2D as depth 1), NCDHW float32, with fused bias and activation:
 *   y[n, o, z, y, x] = act(b[o] + sum_{c, a, b, e} w[o, c, a, b, e] * x[n, c, z*s0-p0+a, y*s1-p1+b, x*s2-p2+e])
 * (zero padding). Reference: i3_cpu_conv_ref in runtime/ops/conv.c.
 *
 * Kernel versions:
 *   v1: direct convolution, one output element per thread; a block per (chunk of positions,
 *       sample x output channel), taps outside the input skipped; w is read through the read-only
 *       cache. The correctness baseline every later version is tested against on the emulator.
 *       Fusions (conv_fused): the instance-norm statistics of its output in the epilogue (Welford
 *       per thread, Chan merge across the block, one partial per block: norm_finalize in
 *       instance_norm.cu merges them) and a deferred instance norm + activation of its input in the
 *       prologue (runtime/backend_cuda.cu decides when).
 *   v2: the same direct convolution, register-blocked over output channels: a thread computes one
 *       position for CONV_V2_OC output channels, so each input value it loads feeds CONV_V2_OC
 *       multiply-adds, and the block's weights for a run of input channels sit in shared memory (read
 *       as broadcasts). v1 did one multiply-add per global load: on an H200 the f32 forward of a 128^3
 *       3d_fullres U-Net took 1.13 s against PyTorch's 39 ms. Same fusions, same summation order per output as v1, same partials
 *       layout. Used when the weights of one input channel fit the shared tile (kernel volume <=
 *       CONV_V2_W_FLOATS / CONV_V2_OC taps), else v1.
 * The tensor-core implicit GEMM kernels (conv_tensor_core v2 TF32, v3 f16/bf16, channels-last) are in
 * kernels/conv_tensor_core.cu. */
#include "device.h"
#include "launchers.h"
#include "conv_geometry.h"
#include "moments.h"

namespace I3_NS {

#define CONV_THREADS 128

/* One block per (chunk of output positions, plane (sample, output channel)): the block's threads
 * share the output channel, so they read the same weights. PROLOGUE: the input is a convolution
 * output whose instance norm was deferred: each loaded value becomes act_in(v * scale + shift) of its
 * (sample, channel) (padding stays zero, as it is in the normalized tensor). STATS: the block's
 * outputs' (count, mean, M2) go to partials[plane][chunk] for norm_finalize (instance_norm.cu). */
template <bool PROLOGUE, bool STATS>
__global__ void __launch_bounds__(CONV_THREADS) conv_v1(const float *__restrict__ x, const float *__restrict__ w,
                                                        const float *__restrict__ b, ConvGeometry g, i3_act act,
                                                        const float *__restrict__ in_scale_shift, i3_act act_in,
                                                        float *__restrict__ y, float *__restrict__ partials) {
    __shared__ Moments warp_moments[CONV_THREADS / 32];
    int64_t plane = blockIdx.y, o = plane % g.cout, sample = plane / g.cout;
    int64_t spatial = g.od * g.oh * g.ow;
    Moments stats = {0.0f, 0.0f, 0.0f};
    for (int64_t pos = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; pos < spatial;
         pos += (int64_t)blockDim.x * gridDim.x) {
        int64_t ox = pos % g.ow, oy = pos / g.ow % g.oh, oz = pos / (g.ow * g.oh);
        int64_t z0 = oz * g.stride[0] - g.pad[0], y0 = oy * g.stride[1] - g.pad[1], x0 = ox * g.stride[2] - g.pad[2];
        float acc = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g.cin; c++) {
            const float *xc = x + (sample * g.cin + c) * g.d * g.h * g.w;
            const float *wc = w + (o * g.cin + c) * g.k[0] * g.k[1] * g.k[2];
            float scale = 1.0f, shift = 0.0f;
            if (PROLOGUE) {
                scale = in_scale_shift[2 * (sample * g.cin + c)];
                shift = in_scale_shift[2 * (sample * g.cin + c) + 1];
            }
            for (int a = 0; a < g.k[0]; a++) {
                int64_t zz = z0 + a;
                if (zz < 0 || zz >= g.d) continue;
                for (int bb = 0; bb < g.k[1]; bb++) {
                    int64_t yy = y0 + bb;
                    if (yy < 0 || yy >= g.h) continue;
                    for (int e = 0; e < g.k[2]; e++) {
                        int64_t xx = x0 + e;
                        if (xx < 0 || xx >= g.w) continue;
                        float v = xc[(zz * g.h + yy) * g.w + xx];
                        if (PROLOGUE) v = act_apply(act_in, v * scale + shift);
                        acc += __ldg(&wc[(a * g.k[1] + bb) * g.k[2] + e]) * v;
                    }
                }
            }
        }
        acc = act_apply(act, acc);
        y[plane * spatial + pos] = acc;
        if (STATS) moments_add(stats, acc);
    }
    if (STATS) {
        stats = moments_block_merge(stats, warp_moments);
        if (threadIdx.x == 0) {
            float *part = partials + (plane * gridDim.x + blockIdx.x) * 3;
            part[0] = stats.count;
            part[1] = stats.mean;
            part[2] = stats.m2;
        }
    }
}

#define CONV_V2_OC 8          /* output channels per thread */
#define CONV_V2_W_FLOATS 4096 /* the shared weight tile: [input channel][tap][CONV_V2_OC] */

/* One block per (chunk of output positions, sample x group of CONV_V2_OC output channels); the chunks
 * and the grid-stride walk over positions are v1's, so the statistics land in the same partials. */
template <bool PROLOGUE, bool STATS>
__global__ void __launch_bounds__(CONV_THREADS) conv_v2(const float *__restrict__ x, const float *__restrict__ w,
                                                        const float *__restrict__ b, ConvGeometry g, i3_act act,
                                                        const float *__restrict__ in_scale_shift, i3_act act_in,
                                                        float *__restrict__ y, float *__restrict__ partials) {
    __shared__ float w_tile[CONV_V2_W_FLOATS];
    __shared__ Moments block_moments[CONV_THREADS / 32][CONV_V2_OC];
    const int64_t groups = (g.cout + CONV_V2_OC - 1) / CONV_V2_OC;
    const int64_t sample = blockIdx.y / groups, o0 = blockIdx.y % groups * CONV_V2_OC;
    const int oc = g.cout - o0 < CONV_V2_OC ? (int)(g.cout - o0) : CONV_V2_OC;
    const int taps = g.k[0] * g.k[1] * g.k[2];
    const int64_t spatial = g.od * g.oh * g.ow, in_plane = g.d * g.h * g.w;
    const int64_t c_step = CONV_V2_W_FLOATS / (taps * CONV_V2_OC); /* input channels per weight tile */
    Moments stats[CONV_V2_OC]; /* every loop over j has a constant count, so these stay in registers */
    I3_UNROLL
    for (int j = 0; j < CONV_V2_OC; j++) stats[j] = Moments{0.0f, 0.0f, 0.0f};
    /* base is the same for the whole block, so every thread reaches every __syncthreads */
    for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < spatial; base += (int64_t)blockDim.x * gridDim.x) {
        const int64_t pos = base + threadIdx.x;
        const bool active = pos < spatial;
        const int64_t ox = pos % g.ow, oy = pos / g.ow % g.oh, oz = pos / (g.ow * g.oh);
        const int64_t z0 = oz * g.stride[0] - g.pad[0], y0 = oy * g.stride[1] - g.pad[1],
                      x0 = ox * g.stride[2] - g.pad[2];
        float acc[CONV_V2_OC];
        I3_UNROLL
        for (int j = 0; j < CONV_V2_OC; j++) acc[j] = b && j < oc ? b[o0 + j] : 0.0f;
        for (int64_t c_begin = 0; c_begin < g.cin; c_begin += c_step) {
            const int64_t c_end = c_begin + c_step < g.cin ? c_begin + c_step : g.cin;
            const int64_t tile = (c_end - c_begin) * taps * CONV_V2_OC;
            __syncthreads(); /* the previous tile is no longer read */
            for (int64_t i = threadIdx.x; i < tile; i += blockDim.x) {
                const int j = (int)(i % CONV_V2_OC);
                const int64_t ct = i / CONV_V2_OC; /* (channel - c_begin) * taps + tap */
                w_tile[i] = j < oc ? __ldg(&w[((o0 + j) * g.cin + c_begin) * taps + ct]) : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            for (int64_t c = c_begin; c < c_end; c++) {
                const float *xc = x + (sample * g.cin + c) * in_plane;
                const float *wc = w_tile + (c - c_begin) * taps * CONV_V2_OC;
                float scale = 1.0f, shift = 0.0f;
                if (PROLOGUE) {
                    scale = in_scale_shift[2 * (sample * g.cin + c)];
                    shift = in_scale_shift[2 * (sample * g.cin + c) + 1];
                }
                for (int a = 0; a < g.k[0]; a++) {
                    const int64_t zz = z0 + a;
                    if (zz < 0 || zz >= g.d) continue;
                    for (int bb = 0; bb < g.k[1]; bb++) {
                        const int64_t yy = y0 + bb;
                        if (yy < 0 || yy >= g.h) continue;
                        for (int e = 0; e < g.k[2]; e++) {
                            const int64_t xx = x0 + e;
                            if (xx < 0 || xx >= g.w) continue;
                            float v = xc[(zz * g.h + yy) * g.w + xx];
                            if (PROLOGUE) v = act_apply(act_in, v * scale + shift);
                            const float *wt = wc + ((a * g.k[1] + bb) * g.k[2] + e) * CONV_V2_OC;
                            I3_UNROLL
                            for (int j = 0; j < CONV_V2_OC; j++) acc[j] += wt[j] * v;
                        }
                    }
                }
            }
        }
        if (!active) continue;
        I3_UNROLL
        for (int j = 0; j < CONV_V2_OC; j++) {
            if (j >= oc) continue;
            const float out = act_apply(act, acc[j]);
            y[((sample * g.cout) + o0 + j) * spatial + pos] = out;
            if (STATS) moments_add(stats[j], out);
        }
    }
    if (STATS) { /* each warp's moments per channel, then one thread per channel merges the warps */
        I3_UNROLL
        for (int j = 0; j < CONV_V2_OC; j++) {
            const Moments m = moments_warp_merge(stats[j]);
            if (threadIdx.x % 32 == 0) block_moments[threadIdx.x / 32][j] = m;
        }
        __syncthreads();
        if ((int)threadIdx.x < oc) {
            const int j = (int)threadIdx.x;
            Moments m = block_moments[0][j];
            for (int k = 1; k < CONV_THREADS / 32; k++) m = moments_merge(m, block_moments[k][j]);
            float *part = partials + ((sample * g.cout + o0 + j) * gridDim.x + blockIdx.x) * 3;
            part[0] = m.count;
            part[1] = m.mean;
            part[2] = m.m2;
        }
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(conv_stat_chunks)(i3_shape5 ys) {
    int64_t planes = ys.n * ys.c, spatial = ys.d * ys.h * ys.w;
    int64_t chunks = (spatial + 4 * CONV_THREADS - 1) / (4 * CONV_THREADS), most = I3_MAX_GRID_STRIDE_BLOCKS / planes;
    chunks = chunks < most ? chunks : most;
    return (int)(chunks < 1 ? 1 : chunks);
}

extern "C" int I3_DEV(conv_fused)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                                  const float *in_scale_shift, i3_act act_in, float *y, i3_shape5 ys, float *partials,
                                  void *stream) {
    ConvGeometry g = conv_geometry(xs, p, ys);
    if (i3_shape5_numel(ys) == 0) return 0;
    const float *ss = in_scale_shift;
    const unsigned chunks = (unsigned)I3_DEV(conv_stat_chunks)(ys);
    if ((int64_t)p->k[0] * p->k[1] * p->k[2] * CONV_V2_OC <= CONV_V2_W_FLOATS) {
        dim3 grid(chunks, (unsigned)(ys.n * ((ys.c + CONV_V2_OC - 1) / CONV_V2_OC)));
        decltype(&conv_v2<false, false>) kernel = ss ? (partials ? conv_v2<true, true> : conv_v2<true, false>)
                                                     : (partials ? conv_v2<false, true> : conv_v2<false, false>);
        return (int)I3_LAUNCH(kernel, grid, CONV_THREADS, 0, (cudaStream_t)stream, x, w, b, g, p->act, ss, act_in, y,
                              partials);
    }
    dim3 grid(chunks, (unsigned)(ys.n * ys.c));
    decltype(&conv_v1<false, false>) kernel = ss ? (partials ? conv_v1<true, true> : conv_v1<true, false>)
                                                 : (partials ? conv_v1<false, true> : conv_v1<false, false>);
    return (int)I3_LAUNCH(kernel, grid, CONV_THREADS, 0, (cudaStream_t)stream, x, w, b, g, p->act, ss, act_in, y,
                          partials);
}

extern "C" int I3_DEV(conv)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                            float *y, i3_shape5 ys, void *stream) {
    i3_act none = {I3_ACT_NONE, 0.0f};
    return I3_DEV(conv_fused)(x, xs, w, b, p, NULL, none, y, ys, NULL, stream);
}
