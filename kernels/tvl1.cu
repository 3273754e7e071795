/* TV-L1 optical flow on the device: the same flow as i3_tvl1 (runtime/tvl1.c, skimage's
 * optical_flow_tvl1), with the per-pixel steps of runtime/tvl1_pixel.h, the pyramid sizes and scratch
 * layout of tvl1.h, and the same level schedule, driven from the host (the stopping test reads one
 * small sum back after every warp).
 *
 * Kernel versions:
 *   v1: one pixel per thread, grid-stride; one kernel per step of skimage's loop: Gaussian pass (one
 *       axis), downsample, flow upsample, warp, linearization (gradient, |grad|^2, rho0), data step
 *       (also keeps the stopping test's flow), dual update and divergence (both flow components in
 *       one launch: they are independent), squared-change partial sums (double, fixed order: a block
 *       tree, then the host adds the blocks in order). About 53 launches per warp.
 *
 * Rounding: on the emulator this file is compiled without contracted multiply-adds, like tvl1.c, and
 * gives the CPU's flow bit for bit. nvcc contracts a * b + c into FMAs by default (-fmad=true), so a
 * GPU build can differ from the CPU by rounding (docs/snc.md: ~1e-3 px at most on the test images). */
#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "device.h"

extern "C" {
#include "tvl1.h"
}
#include "tvl1_pixel.h"

namespace I3_NS {

#define TVL1_THREADS 128

struct gauss_weights {
    double w[4];
};

__global__ void tvl1_gauss_v1(const float *x, int64_t rows, int64_t cols, int along_rows, gauss_weights g, float *y) {
    I3_GRID_STRIDE_LOOP(i, rows * cols) {
        const int64_t r = i / cols, c = i % cols;
        y[i] = along_rows ? tvl1_gauss_at(x + c, rows, cols, r, g.w) : tvl1_gauss_at(x + r * cols, cols, 1, c, g.w);
    }
}

__global__ void tvl1_downsample_v1(const float *x, i3_tvl1_size from, i3_tvl1_size to, float *y) {
    const double zr = (double)from.rows / (double)to.rows, zc = (double)from.cols / (double)to.cols;
    I3_GRID_STRIDE_LOOP(i, to.rows * to.cols) {
        const int64_t r = i / to.cols, c = i % to.cols;
        y[i] = tvl1_bilinear(x, from.rows, from.cols, ((double)r + 0.5) * zr - 0.5, ((double)c + 0.5) * zc - 0.5);
    }
}

__global__ void tvl1_resize_flow_v1(const float *flow, i3_tvl1_size from, i3_tvl1_size to, float *out) {
    const double zr = to.rows > 1 ? (double)(from.rows - 1) / (double)(to.rows - 1) : 1.0;
    const double zc = to.cols > 1 ? (double)(from.cols - 1) / (double)(to.cols - 1) : 1.0;
    const float scale_r = (float)((double)to.rows / (double)from.rows);
    const float scale_c = (float)((double)to.cols / (double)from.cols);
    const int64_t n_from = from.rows * from.cols, n_to = to.rows * to.cols;
    I3_GRID_STRIDE_LOOP(i, n_to) {
        const int64_t r = i / to.cols, c = i % to.cols;
        const int64_t src = tvl1_nearest_index(r, zr, from.rows) * from.cols + tvl1_nearest_index(c, zc, from.cols);
        out[i] = scale_r * flow[src];
        out[n_to + i] = scale_c * flow[n_from + src];
    }
}

__global__ void tvl1_warp_v1(const float *im, int64_t rows, int64_t cols, const float *flow, float *out) {
    I3_GRID_STRIDE_LOOP(i, rows * cols) out[i] = tvl1_warp_at(im, rows, cols, flow, 1.0f, i / cols, i % cols);
}

/* gradient of the warped image, |grad|^2 (0 -> 1) and rho0 = warped - ref - grad . flow */
__global__ void tvl1_linearize_v1(const float *warped, const float *ref, int64_t rows, int64_t cols, const float *flow,
                                  float *grad, float *ni, float *rho0) {
    const int64_t n = rows * cols;
    I3_GRID_STRIDE_LOOP(i, n) {
        float gr, gc;
        tvl1_gradient_at(warped, rows, cols, i / cols, i % cols, &gr, &gc);
        grad[i] = gr, grad[n + i] = gc;
        const float s = gr * gr + gc * gc;
        ni[i] = s == 0.0f ? 1.0f : s;
        rho0[i] = warped[i] - ref[i] - (gr * flow[i] + gc * flow[n + i]);
    }
}

/* aux = flow = data step of flow; prev = the same when not NULL (the first iteration of a warp) */
__global__ void tvl1_data_v1(const float *rho0, const float *grad, const float *ni, int64_t n, float f0, float *flow,
                             float *aux, float *prev) {
    I3_GRID_STRIDE_LOOP(i, n) {
        float vr, vc;
        tvl1_data_at(rho0[i], grad[i], grad[n + i], ni[i], f0, flow[i], flow[n + i], &vr, &vc);
        aux[i] = flow[i] = vr;
        aux[n + i] = flow[n + i] = vc;
        if (prev) prev[i] = vr, prev[n + i] = vc;
    }
}

__global__ void tvl1_dual_v1(const float *flow, int64_t rows, int64_t cols, float f1, float *proj) {
    const int64_t n = rows * cols;
    I3_GRID_STRIDE_LOOP(i, 2 * n) {
        const int64_t k = i / n, j = i % n;
        tvl1_dual_at(flow + k * n, rows, cols, j / cols, j % cols, f1, proj + 2 * k * n, proj + (2 * k + 1) * n);
    }
}

__global__ void tvl1_divergence_v1(const float *aux, const float *proj, int64_t rows, int64_t cols, float *flow) {
    const int64_t n = rows * cols;
    I3_GRID_STRIDE_LOOP(i, 2 * n) {
        const int64_t k = i / n, j = i % n;
        flow[i] = tvl1_divergence_at(aux + k * n, proj + 2 * k * n, proj + (2 * k + 1) * n, cols, j / cols, j % cols);
    }
}

/* partials[block] = sum over the block's grid-stride elements of (prev - flow)^2, in double */
__global__ void __launch_bounds__(TVL1_THREADS) tvl1_change_v1(const float *prev, const float *flow, int64_t n,
                                                                double *partials) {
    __shared__ double sums[TVL1_THREADS];
    double s = 0.0;
    I3_GRID_STRIDE_LOOP(i, n) {
        const float delta = prev[i] - flow[i];
        s += (double)(delta * delta);
    }
    sums[threadIdx.x] = s;
    __syncthreads();
    for (unsigned half = TVL1_THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = sums[0];
}

}  // namespace I3_NS

using namespace I3_NS;

#define TVL1_TRY(call)                                   \
    do {                                                 \
        const cudaError_t tvl1_err_ = (call);            \
        if (tvl1_err_ != cudaSuccess) return (int)tvl1_err_; \
    } while (0)

static unsigned tvl1_blocks(int64_t n) { return grid_stride_blocks(n, TVL1_THREADS); }

/* One pyramid level: the schedule of solve_level in runtime/tvl1.c. */
static int tvl1_level(i3_tvl1_work *wk, const float *ref, const float *mov, i3_tvl1_size s, const i3_tvl1_params *p,
                      double *partials, cudaStream_t stream) {
    const int64_t rows = s.rows, cols = s.cols, n = rows * cols;
    const float f0 = (float)(p->attachment * p->tightness), f1 = (float)(0.25 / p->tightness);
    const unsigned change_blocks = tvl1_blocks(2 * n) < I3_TVL1_DEVICE_PARTIALS ? tvl1_blocks(2 * n) : I3_TVL1_DEVICE_PARTIALS;
    TVL1_TRY(cudaMemsetAsync(wk->proj, 0, 4 * (size_t)n * sizeof(float), stream));
    for (int warp = 0; warp < p->num_warp; warp++) {
        TVL1_TRY(I3_LAUNCH(tvl1_warp_v1, tvl1_blocks(n), TVL1_THREADS, 0, stream, mov, rows, cols, wk->flow, wk->warped));
        TVL1_TRY(I3_LAUNCH(tvl1_linearize_v1, tvl1_blocks(n), TVL1_THREADS, 0, stream, wk->warped, ref, rows, cols,
                           wk->flow, wk->grad, wk->ni, wk->rho0));
        for (int iter = 0; iter < p->num_iter; iter++) {
            TVL1_TRY(I3_LAUNCH(tvl1_data_v1, tvl1_blocks(n), TVL1_THREADS, 0, stream, wk->rho0, wk->grad, wk->ni, n, f0,
                               wk->flow, wk->aux, iter == 0 ? wk->prev : (float *)NULL));
            for (int proj = 0; proj < 2; proj++) {
                TVL1_TRY(I3_LAUNCH(tvl1_dual_v1, tvl1_blocks(2 * n), TVL1_THREADS, 0, stream, wk->flow, rows, cols, f1,
                                   wk->proj));
                TVL1_TRY(I3_LAUNCH(tvl1_divergence_v1, tvl1_blocks(2 * n), TVL1_THREADS, 0, stream, wk->aux, wk->proj,
                                   rows, cols, wk->flow));
            }
        }
        TVL1_TRY(I3_LAUNCH(tvl1_change_v1, change_blocks, TVL1_THREADS, 0, stream, wk->prev, wk->flow, 2 * n, partials));
        double host[I3_TVL1_DEVICE_PARTIALS], change = 0.0;
        TVL1_TRY(cudaMemcpyAsync(host, partials, change_blocks * sizeof(double), cudaMemcpyDeviceToHost, stream));
        TVL1_TRY(cudaStreamSynchronize(stream));
        for (unsigned b = 0; b < change_blocks; b++) change += host[b];
        if (change < p->tol * (double)n) break;
    }
    return 0;
}

/* skimage's pyramid_reduce of one image: Gaussian along rows into tmp, along columns into tmp2,
 * then half-size bilinear sampling into y. */
static int tvl1_reduce(const float *x, i3_tvl1_size from, i3_tvl1_size to, gauss_weights g, float *tmp, float *tmp2,
                       float *y, cudaStream_t stream) {
    const int64_t n = from.rows * from.cols;
    TVL1_TRY(I3_LAUNCH(tvl1_gauss_v1, tvl1_blocks(n), TVL1_THREADS, 0, stream, x, from.rows, from.cols, 1, g, tmp));
    TVL1_TRY(I3_LAUNCH(tvl1_gauss_v1, tvl1_blocks(n), TVL1_THREADS, 0, stream, tmp, from.rows, from.cols, 0, g, tmp2));
    TVL1_TRY(I3_LAUNCH(tvl1_downsample_v1, tvl1_blocks(to.rows * to.cols), TVL1_THREADS, 0, stream, tmp2, from, to, y));
    return 0;
}

extern "C" int I3_DEV(tvl1)(const float *reference, const float *moving, int64_t rows, int64_t cols,
                            const i3_tvl1_params *params, void *scratch, float *flow, void *stream_ptr) {
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    i3_tvl1_size sizes[I3_TVL1_MAX_LEVELS];
    const int levels = i3_tvl1_pyramid(rows, cols, sizes);
    i3_tvl1_work wk;
    i3_tvl1_carve(&wk, scratch, sizes, levels);
    wk.ref[0] = (float *)reference, wk.mov[0] = (float *)moving;
    double *partials = (double *)((char *)scratch + i3_tvl1_device_partials_offset(rows, cols));
    gauss_weights g;
    i3_tvl1_gauss_weights(g.w);
    for (int l = 1; l < levels; l++) {
        int err = tvl1_reduce(wk.ref[l - 1], sizes[l - 1], sizes[l], g, wk.warped, wk.rho0, wk.ref[l], stream);
        if (!err) err = tvl1_reduce(wk.mov[l - 1], sizes[l - 1], sizes[l], g, wk.warped, wk.rho0, wk.mov[l], stream);
        if (err) return err;
    }
    const int top = levels - 1;
    TVL1_TRY(cudaMemsetAsync(wk.flow, 0, 2 * (size_t)(sizes[top].rows * sizes[top].cols) * sizeof(float), stream));
    for (int l = top; l >= 0; l--) {
        if (l < top) {
            TVL1_TRY(I3_LAUNCH(tvl1_resize_flow_v1, tvl1_blocks(sizes[l].rows * sizes[l].cols), TVL1_THREADS, 0, stream,
                               wk.flow, sizes[l + 1], sizes[l], wk.aux));
            float *t = wk.flow;
            wk.flow = wk.aux, wk.aux = t;
        }
        const int err = tvl1_level(&wk, wk.ref[l], wk.mov[l], sizes[l], params, partials, stream);
        if (err) return err;
    }
    TVL1_TRY(cudaMemcpyAsync(flow, wk.flow, 2 * (size_t)(rows * cols) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    return 0;
}
