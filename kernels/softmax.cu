/* Channel softmax fused with the uncertainty maps, over logits [n, c, s] (s = spatial size):
 * probabilities [n, c, s], normalized entropy H = -sum p log p / log C (0 when C == 1) [n, s], max
 * softmax probability [n, s] and argmax [n, s] (lowest index wins ties), any output may be NULL.
 * Reference: i3_cpu_softmax_uncertainty (runtime/ops).
 *
 * Kernel versions:
 *   v1: one spatial position per thread (grid-stride); neighbouring threads read neighbouring
 *       positions of each channel, so every channel read is coalesced. One pass finds max and
 *       argmax, a second sums exp(x - max) and sum (x - max) exp(x - max), a third (only when
 *       probabilities are wanted) writes them. With S = sum exp(x - m):
 *         p_i = exp(x_i - m) / S,  msp = 1 / S,  -sum p log p = log S - sum (x_i - m) exp(x_i - m) / S.
 *   v2 (softmax_slices): one volume [c, d, h, w], the same maps plus their per-slice sums along all
 *       three axes (i3_cpu_slice_sums of entropy, msp and argmax) in the same pass over the logits.
 *       A block of 32 x 8 threads takes a band of 32 columns x of one slice z; a warp is one row y
 *       of the band (coalesced reads of each channel), its rows step by 8. Each voxel's three values
 *       go to: the thread's column sums (merged across the 8 warps in shared memory -> partial of
 *       sum_w for this z), a warp shuffle per row (-> partial of sum_h for this (z, band)) and the
 *       block's total (-> partial of sum_d). slice_sums_merge then adds the partials over bands and
 *       slices in a fixed order: deterministic, no atomics, all in double. */
#include "device.h"
#include "launchers.h"

namespace I3_NS {

/* Softmax of the c logits at x[0], x[stride], ...: probabilities (optional) written with the same
 * stride, and the uncertainty values of the position (see the top comment for the formulas). */
__device__ __forceinline__ void softmax_position(const float *x, int64_t c, int64_t stride, float inv_log_c,
                                                 float *probs, float &entropy, float &msp, int32_t &argmax) {
    float max = x[0];
    int32_t best = 0;
    for (int64_t k = 1; k < c; k++) {
        float v = x[k * stride];
        if (v > max) {
            max = v;
            best = (int32_t)k;
        }
    }
    float sum = 0.0f, weighted = 0.0f;
    for (int64_t k = 0; k < c; k++) {
        float shifted = x[k * stride] - max, e = expf(shifted);
        sum += e;
        weighted += shifted * e;
    }
    float inv_sum = 1.0f / sum;
    if (probs)
        for (int64_t k = 0; k < c; k++) probs[k * stride] = expf(x[k * stride] - max) * inv_sum;
    entropy = (logf(sum) - weighted * inv_sum) * inv_log_c;
    msp = inv_sum;
    argmax = best;
}

__global__ void softmax_uncertainty_v1(const float *__restrict__ logits, int64_t n, int64_t c, int64_t s,
                                       float *__restrict__ probs, float *__restrict__ entropy,
                                       float *__restrict__ msp, int32_t *__restrict__ argmax) {
    float inv_log_c = c > 1 ? 1.0f / logf((float)c) : 0.0f;
    I3_GRID_STRIDE_LOOP(i, n * s) {
        int64_t sample = i / s, pos = i % s;
        float h, p;
        int32_t best;
        softmax_position(logits + sample * c * s + pos, c, s, inv_log_c, probs ? probs + sample * c * s + pos : NULL,
                         h, p, best);
        if (entropy) entropy[i] = h;
        if (msp) msp[i] = p;
        if (argmax) argmax[i] = best;
    }
}

#define BAND 32  /* columns per block: one warp across */
#define ROWS 8   /* warps per block */
#define MAPS 3   /* entropy, msp, argmax */

/* Partials, in double: by_d [MAPS][d][bands], by_h [MAPS][d][bands][h], by_w [MAPS][d][w]. */
struct SlicePartials {
    double *by_d, *by_h, *by_w;
};

static inline SlicePartials slice_partials(void *scratch, int64_t d, int64_t h, int64_t w) {
    int64_t bands = (w + BAND - 1) / BAND;
    double *base = (double *)scratch;
    SlicePartials p = {base, base + MAPS * d * bands, base + MAPS * d * bands * (1 + h)};
    return p;
}

__global__ void __launch_bounds__(BAND * ROWS)
    softmax_slices_v2(const float *__restrict__ logits, int64_t c, int64_t d, int64_t h, int64_t w,
                      float *__restrict__ probs, float *__restrict__ entropy, float *__restrict__ msp,
                      int32_t *__restrict__ argmax, SlicePartials part) {
    __shared__ double column_sums[MAPS][ROWS][BAND];
    __shared__ double row_totals[MAPS][ROWS];
    int64_t band = blockIdx.x, bands = gridDim.x, z = blockIdx.y, s = d * h * w;
    int lane = threadIdx.x, row = threadIdx.y;
    int64_t xx = band * BAND + lane;
    float inv_log_c = c > 1 ? 1.0f / logf((float)c) : 0.0f;
    double column[MAPS] = {0.0, 0.0, 0.0}, total[MAPS] = {0.0, 0.0, 0.0};
    for (int64_t yy = row; yy < h; yy += ROWS) { /* the same trip count for all lanes of the warp */
        double v[MAPS] = {0.0, 0.0, 0.0};
        if (xx < w) {
            int64_t pos = (z * h + yy) * w + xx;
            float e, p;
            int32_t best;
            softmax_position(logits + pos, c, s, inv_log_c, probs ? probs + pos : NULL, e, p, best);
            if (entropy) entropy[pos] = e;
            if (msp) msp[pos] = p;
            if (argmax) argmax[pos] = best;
            v[0] = e, v[1] = p, v[2] = best;
        }
        for (int m = 0; m < MAPS; m++) {
            column[m] += v[m];
            double across = v[m];
            for (int offset = 16; offset > 0; offset /= 2) across += __shfl_xor_sync(0xffffffffu, across, offset);
            if (lane == 0) part.by_h[((m * d + z) * bands + band) * h + yy] = across;
            total[m] += across;
        }
    }
    for (int m = 0; m < MAPS; m++) {
        column_sums[m][row][lane] = column[m];
        if (lane == 0) row_totals[m][row] = total[m];
    }
    __syncthreads();
    if (row < MAPS) { /* warp m adds up map m over the 8 rows of warps */
        int m = row;
        double sum = 0.0;
        for (int r = 0; r < ROWS; r++) sum += column_sums[m][r][lane];
        if (xx < w) part.by_w[(m * d + z) * w + xx] = sum;
        if (lane == 0) {
            double slice = 0.0;
            for (int r = 0; r < ROWS; r++) slice += row_totals[m][r];
            part.by_d[(m * d + z) * bands + band] = slice;
        }
    }
}

/* sums [MAPS][d + h + w]: sum_d, sum_h, sum_w of each map, from the partials (one thread per output). */
__global__ void slice_sums_merge(SlicePartials part, int64_t d, int64_t h, int64_t w, int64_t bands,
                                 double *__restrict__ sums) {
    I3_GRID_STRIDE_LOOP(i, MAPS * (d + h + w)) {
        int64_t m = i / (d + h + w), j = i % (d + h + w);
        double sum = 0.0;
        if (j < d) {
            for (int64_t b = 0; b < bands; b++) sum += part.by_d[(m * d + j) * bands + b];
        } else if (j < d + h) {
            for (int64_t z = 0; z < d; z++)
                for (int64_t b = 0; b < bands; b++) sum += part.by_h[((m * d + z) * bands + b) * h + j - d];
        } else {
            for (int64_t z = 0; z < d; z++) sum += part.by_w[(m * d + z) * w + j - d - h];
        }
        sums[i] = sum;
    }
}

}  // namespace I3_NS

using namespace I3_NS;

extern "C" int I3_DEV(softmax_uncertainty)(const float *logits, int64_t n, int64_t c, int64_t s, float *probs,
                                           float *entropy, float *msp, int32_t *argmax, void *stream) {
    if (n * s == 0 || c == 0) return 0;
    return (int)I3_LAUNCH(softmax_uncertainty_v1, grid_stride_blocks(n * s, 256), 256, 0, (cudaStream_t)stream,
                          logits, n, c, s, probs, entropy, msp, argmax);
}

extern "C" size_t I3_DEV(softmax_slices_scratch_bytes)(int64_t d, int64_t h, int64_t w) {
    int64_t bands = (w + BAND - 1) / BAND;
    return (size_t)(MAPS * (d * bands * (1 + h) + d * w)) * sizeof(double);
}

extern "C" int I3_DEV(softmax_slices)(const float *logits, int64_t c, int64_t d, int64_t h, int64_t w, float *probs,
                                      float *entropy, float *msp, int32_t *argmax, double *sums, void *scratch,
                                      void *stream) {
    if (d * h * w == 0 || c == 0) return 0;
    int64_t bands = (w + BAND - 1) / BAND;
    if (d > 65535) return (int)cudaErrorInvalidConfiguration;
    SlicePartials part = slice_partials(scratch, d, h, w);
    int e = (int)I3_LAUNCH(softmax_slices_v2, dim3((unsigned)bands, (unsigned)d), dim3(BAND, ROWS), 0,
                           (cudaStream_t)stream, logits, c, d, h, w, probs, entropy, msp, argmax, part);
    if (e) return e;
    return (int)I3_LAUNCH(slice_sums_merge, grid_stride_blocks(MAPS * (d + h + w), 128), 128, 0, (cudaStream_t)stream,
                          part, d, h, w, bands, sums);
}
