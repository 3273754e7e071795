/* TV-L1 optical flow on 2D float images, and Slice-and-Conquer's post-processing built on it.
 *
 * i3_tvl1 reproduces scikit-image 0.26's skimage.registration.optical_flow_tvl1 (Zach, Pock, Bischof
 * 2007; Wedel et al. 2009; the IPOL description of Perez et al. 2013) step by step: its Gaussian
 * pyramid (downscale 2, at most 10 levels, no level below 16 pixels), its nearest-neighbour flow
 * upsampling, its bilinear warping with edge replication, its dual TV projection (time step 0.25, two
 * projections per fixed-point iteration) and its stopping test, all in float32 where it computes in
 * float32 and in double where scipy does. docs/snc.md lists the few places where the two can differ.
 *
 * Images are planes [rows, cols] (row-major, as a slice of i3_slice_get). The flow is [2, rows, cols]:
 * flow[0] the row displacement, flow[1] the column displacement, such that
 *   reference(r, c) ~ moving(r + flow[0](r, c), c + flow[1](r, c)).
 * No global state; the caller may hand in scratch memory (i3_tvl1_scratch_bytes) or let the call
 * allocate it. */
#ifndef I3RT_TVL1_H
#define I3RT_TVL1_H

#include "core.h"
#include "slice_select.h"

typedef struct {
    double attachment;  /* lambda, weight of the data term, > 0 (skimage: 15) */
    double tightness;   /* theta, coupling of the data and TV parts, > 0 (0.3) */
    int num_warp;       /* warps of the moving image per pyramid level, >= 1 (5) */
    int num_iter;       /* fixed-point iterations per warp, >= 1 (10) */
    double tol;         /* stop a level's warps once the squared flow change < tol * pixels, >= 0 (1e-4) */
} i3_tvl1_params;

/* skimage's defaults (prefilter=False; the median prefilter is not implemented). */
#define I3_TVL1_DEFAULTS ((i3_tvl1_params){15.0, 0.3, 5, 10, 1e-4})

/* Bytes of scratch i3_tvl1 needs for images of rows x cols (0 if the size overflows). */
size_t i3_tvl1_scratch_bytes(int64_t rows, int64_t cols);

/* Flow [2, rows, cols] from reference to moving (both [rows, cols], finite; rows, cols >= 2).
 * scratch: NULL to allocate, or at least i3_tvl1_scratch_bytes(rows, cols) bytes aligned for float.
 * params NULL means I3_TVL1_DEFAULTS. */
i3rt_status i3_tvl1(i3_ctx *ctx, const float *reference, const float *moving, int64_t rows, int64_t cols,
                    const i3_tvl1_params *params, void *scratch, float *flow);

/* out(r, c) = image(r + alpha * flow[0](r, c), c + alpha * flow[1](r, c)): bilinear, coordinates
 * clamped to the image (skimage.transform.warp(order=1, mode='edge')). out must not alias image. */
void i3_warp_bilinear(const float *image, int64_t rows, int64_t cols, const float *flow, float alpha, float *out);

/* ---- shared with the device version (kernels/tvl1.cu) ---- */

#define I3_TVL1_MAX_LEVELS 10

typedef struct {
    int64_t rows, cols;
} i3_tvl1_size;

/* skimage's pyramid: level 0 is rows x cols, each next level ceil(size / 2) per axis while the smaller
 * side of the previous one is > 32, at most 10 levels. Returns the number of levels. */
int i3_tvl1_pyramid(int64_t rows, int64_t cols, i3_tvl1_size sizes[I3_TVL1_MAX_LEVELS]);

/* The planes of the scratch: both pyramids above level 0, then at level-0 size the flow, the auxiliary
 * flow, the flow kept for the stopping test, the warped image, its gradient (2 planes each but the
 * warped image), |gradient|^2, the residual's constant part and the dual variables (4 planes). */
typedef struct {
    float *ref[I3_TVL1_MAX_LEVELS], *mov[I3_TVL1_MAX_LEVELS];  /* [0] is the caller's image */
    float *flow, *aux, *prev, *warped, *grad, *ni, *rho0, *proj;
} i3_tvl1_work;

void i3_tvl1_carve(i3_tvl1_work *wk, void *scratch, const i3_tvl1_size *sizes, int levels);

/* The pyramid's Gaussian (sigma 2/3, radius 3) as scipy builds it: w[j] for offsets +-j. */
void i3_tvl1_gauss_weights(double w[4]);

/* The device version: the same flow, computed by kernels/tvl1.cu on device pointers (reference,
 * moving, scratch of i3_tvl1_device_scratch_bytes, flow) on `stream`, with parameters already
 * checked (i3_tvl1's rules). Returns a cudaError_t (0 = success). i3emu_tvl1 runs on the SIMT
 * emulator; i3gpu_tvl1 exists in builds with -DI3RT_CUDA=ON. */
#define I3_TVL1_DEVICE_PARTIALS 64
size_t i3_tvl1_device_scratch_bytes(int64_t rows, int64_t cols);
/* Where in that scratch the stopping test's per-block sums (doubles) start: after i3_tvl1's scratch. */
size_t i3_tvl1_device_partials_offset(int64_t rows, int64_t cols);
int i3emu_tvl1(const float *reference, const float *moving, int64_t rows, int64_t cols, const i3_tvl1_params *params,
               void *scratch, float *flow, void *stream);
#ifdef I3RT_HAVE_CUDA
int i3gpu_tvl1(const float *reference, const float *moving, int64_t rows, int64_t cols, const i3_tvl1_params *params,
               void *scratch, float *flow, void *stream);
#endif

/* ---- Slice-and-Conquer post-processing ---- */

/* Weight of the k-th neighbour of an annotated slice: max(1 - gamma |k|, 0) (paper Sec. 3.3). */
float i3_snc_blend_weight(double gamma, int64_t k);

/* Slice-and-Conquer post-processing (paper Sec. 3.3, Eq. 3) for one accurate 2D mask.
 *   prediction  the 3D prediction [d, h, w] (foreground probability or 0/1 mask), changed in place
 *   axis, index the slice the 2D mask was annotated on
 *   mask        the accurate 2D mask of that slice, plane [rows, cols] of i3_slice_dims
 * The flow from the prediction's slice (moving) to the mask (reference) is computed once; every slice
 * index + k with weight a = i3_snc_blend_weight(gamma, k) > 0 is replaced by itself warped with a
 * times that flow (i3_warp_bilinear), so slice `index` becomes ~ mask and the effect fades over
 * |k| < 1 / gamma (the whole axis for gamma = 0). The result stays in [0, 1] for inputs in [0, 1];
 * threshold it at 0.5 for a binary mask. gamma in [0, 1]; params NULL means I3_TVL1_DEFAULTS. */
i3rt_status i3_snc_postprocess(i3_ctx *ctx, float *prediction, int64_t d, int64_t h, int64_t w, i3_axis axis,
                               int64_t index, const float *mask, double gamma, const i3_tvl1_params *params);

#endif /* I3RT_TVL1_H */
