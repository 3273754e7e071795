/* The ops of i3rt: parameter structs (shared by every backend) and the CPU implementations.
 *
 * Layout: every activation is a dense float32 tensor [N, C, D, H, W] (w fastest). 2D networks use
 * D = 1 with kernels of depth 1, so one convolution serves 2D and 3D. Each op has
 *   - i3_cpu_<op>_ref: the plain reference, a direct transcription of the maths (tests compare every
 *     other implementation, and PyTorch, against it), and where speed matters
 *   - i3_cpu_<op>: the fast CPU path (blocked / BLAS / threaded), same signature plus threads/scratch.
 * One file per op in runtime/ops/. */
#ifndef I3RT_OPS_H
#define I3RT_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t n, c, d, h, w;
} i3_shape5;

static inline int64_t i3_shape5_spatial(i3_shape5 s) { return s.d * s.h * s.w; }
static inline int64_t i3_shape5_numel(i3_shape5 s) { return s.n * s.c * s.d * s.h * s.w; }

/* Memory-bound loops over fewer values than this run on one thread: waking the others costs more than
 * it saves, and far more on a busy machine, where OpenMP's barrier waits for a descheduled thread
 * (measured: docs/performance.md, "HRNet ACS 3D"). */
#define I3_PARALLEL_MIN_VALUES (1 << 18)
/* The same for compute-bound ops, in multiply-adds (about half a millisecond on one core). */
#define I3_PARALLEL_MIN_MACS (1 << 22)

/* Activation applied at the end of an op (fused epilogue). slope is LeakyReLU's negative slope. */
typedef enum { I3_ACT_NONE = 0, I3_ACT_RELU, I3_ACT_LEAKY_RELU } i3_act_kind;
typedef struct {
    i3_act_kind kind;
    float slope;
} i3_act;

static inline float i3_act_apply(i3_act a, float v) {
    if (a.kind == I3_ACT_NONE || v >= 0.0f) return v;
    return a.kind == I3_ACT_RELU ? 0.0f : v * a.slope;
}

/* Convolution over (d, h, w). Weight [cout, cin, k[0], k[1], k[2]], bias [cout] or NULL.
 * Output size per axis: (in + 2*pad - k) / stride + 1. */
typedef struct {
    int cout;
    int k[3], stride[3], pad[3];
    i3_act act;
} i3_conv_params;

i3_shape5 i3_conv_out_shape(i3_shape5 x, const i3_conv_params *p);

/* Transposed convolution with stride == kernel size and no padding (nnU-Net's upsampling):
 * weight [cin, cout, k[0], k[1], k[2]] (PyTorch's ConvTranspose layout), bias [cout] or NULL.
 * Output size per axis: in * k. */
typedef struct {
    int cout;
    int k[3];
} i3_conv_transpose_params;

i3_shape5 i3_conv_transpose_out_shape(i3_shape5 x, const i3_conv_transpose_params *p);

/* ACS convolution (ACSConv): a 2D kernel weight [cout, cin, k, k] applied to a 3D volume. Output
 * channels are split (axial, coronal, sagittal) = cout/3 + (i < cout%3); the axial part convolves
 * over (h, w), coronal over (d, w), sagittal over (d, h). Stride applies to all three axes; padding
 * pad on the kernel axes, 0 on the kernel-less axis (centre tap). */
typedef struct {
    int cout;
    int k, stride, pad;
    i3_act act;
} i3_acs_conv_params;

void i3_acs_split(int cout, int split[3]);
i3_shape5 i3_acs_conv_out_shape(i3_shape5 x, const i3_acs_conv_params *p);

/* Instance norm over each (n, c) plane: y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]
 * (biased variance, statistics in double/Welford), then act. gamma/beta may be NULL (no affine). */
typedef struct {
    float eps;
    i3_act act;
} i3_norm_params;

/* Resize of the spatial axes to out (d, h, w), linear per axis (trilinear; bilinear when d stays 1),
 * PyTorch's F.interpolate(mode="trilinear"/"bilinear", align_corners=...) semantics. */
typedef struct {
    int64_t out[3];
    int align_corners;
} i3_resize_params;

/* ---------------------------------------------------------------------------------------------- */
/* CPU implementations. All pointers are dense NCDHW float32. n_threads >= 1.                      */

void i3_cpu_conv_ref(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                     float *y);
/* Fast path (direct kernel, GEMM or im2col + GEMM, see ops/conv.c). scratch must hold
 * i3_cpu_conv_scratch_bytes(...) bytes (may be NULL if that is 0), per thread:
 *   direct: about 2 MB of zero-padded input rows + cin * taps * 4 floats of packed weights;
 *   im2col: K * T * 4 bytes, K = cin * kd * kh * kw, T = max(64, 1 MB / (4 K)) columns capped by the
 *           output size (1 MB; 2.2 MB for 320 channels 3x3x3);  1x1x1 stride-1 unpadded: 0. */
size_t i3_cpu_conv_scratch_bytes(i3_shape5 xs, const i3_conv_params *p, int n_threads);
void i3_cpu_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                 float *y, void *scratch, int n_threads);

void i3_cpu_conv_transpose_ref(const float *x, i3_shape5 xs, const float *w, const float *b,
                               const i3_conv_transpose_params *p, float *y);
void i3_cpu_conv_transpose(const float *x, i3_shape5 xs, const float *w, const float *b,
                           const i3_conv_transpose_params *p, float *y, int n_threads);

/* The direct convolution path over parts that share one input window (ops/conv.c): part q computes output
 * channels [o0, o0 + cout) of y from weights w [cout, cin, k[0], k[1], k[2]] and bias b (or NULL), its tap
 * (0, 0, 0) at offset shift (slices, rows, columns) into window's (kernel, stride, padding); window.cout is
 * y's channel count. A plain convolution is one part; an ACS convolution three (ops/acs_conv.c), which then
 * copy their input once. Returns 0, doing nothing, where the direct path does not apply (cin < 8 unless
 * the window is 3D and cout >= 16, a pointwise window, an empty output); otherwise sets *scratch_bytes (if
 * given) and, if y is given, runs. */
#define I3_CONV_MAX_PARTS 3
typedef struct {
    int64_t o0, cout;
    int k[3], shift[3];
    const float *w, *b;
} i3_conv_part;
int i3_cpu_conv_parts(const float *x, i3_shape5 xs, const i3_conv_params *window, const i3_conv_part *parts,
                      int n_parts, float *y, void *scratch, size_t *scratch_bytes, int n_threads);

void i3_cpu_acs_conv_ref(const float *x, i3_shape5 xs, const float *w, const float *b,
                         const i3_acs_conv_params *p, float *y);
/* Fast path (ops/acs_conv.c): the three parts as one direct convolution, or three i3_cpu_conv calls where
 * the direct path does not apply; its scratch (0 where the reference runs: even k or pad < k / 2). */
size_t i3_cpu_acs_conv_scratch_bytes(i3_shape5 xs, const i3_acs_conv_params *p, int n_threads);
void i3_cpu_acs_conv(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_acs_conv_params *p,
                     float *y, void *scratch, int n_threads);

/* In place allowed (y == x), for both. */
void i3_cpu_instance_norm_ref(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                              const i3_norm_params *p, float *y);
void i3_cpu_instance_norm(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                          const i3_norm_params *p, float *y, int n_threads);

/* Batch norm folded into the preceding convolution's weight [cout, ...] and bias [cout] (bias may
 * be NULL on input; bias_out always receives the folded bias):
 *   w' = w * gamma / sqrt(var + eps),  b' = (b - mean) * gamma / sqrt(var + eps) + beta. */
void i3_cpu_fold_batch_norm(float *w, int cout, int64_t per_out, const float *b, const float *gamma,
                            const float *beta, const float *mean, const float *var, float eps, float *bias_out);

/* y = act(x) elementwise, n values; in place allowed. */
void i3_cpu_activation(const float *x, int64_t n, i3_act act, float *y, int n_threads);
/* y = act(a + b) elementwise; in place allowed. */
void i3_cpu_add(const float *a, const float *b, int64_t n, i3_act act, float *y, int n_threads);
/* Channel concat: y [n, ca + cb, s] from a [n, ca, s] and b [n, cb, s] (s = spatial size); a or b NULL:
 * that part of y is there already (i3_graph_plan's concat views). */
void i3_cpu_concat(const float *a, int64_t ca, const float *b, int64_t cb, int64_t n, int64_t s, float *y);

void i3_cpu_resize(const float *x, i3_shape5 xs, const i3_resize_params *p, float *y, int n_threads);
/* Its pieces, for resamplers that read their rows elsewhere (nnInteractive's zoom, runtime/ni_zoom.c):
 * the per-axis source indices and weights of out samples from in; one source row interpolated along x
 * (n outputs); four such rows (z0 y0, z0 y1, z1 y0, z1 y1) combined with wzy = {wz0, wz1, wy0, wy1}. */
typedef struct {
    int64_t i0, i1;
    float l0, l1;
} i3_lerp_tap;
void i3_resize_axis_taps(int64_t in, int64_t out, int align_corners, i3_lerp_tap *taps);
void i3_resize_row_x(const float *src, const i3_lerp_tap *tx, int64_t n, float *out);
void i3_resize_rows_yz(const float *x00, const float *x01, const float *x10, const float *x11, const float wzy[4],
                       int64_t n, float *out);
/* A thread's last four x-interpolated source rows (up-sampling, neighbouring output rows mostly share
 * them): key[j] is row[j]'s source row in the caller's numbering, -1 while empty; row[j] holds n floats.
 * i3_lerp_rows_get sets x[k] to source row need[k] interpolated along x, k < 4, computing only the rows
 * not kept from earlier calls; fetch(ctx, key) returns a source row. */
typedef struct {
    int64_t key[4];
    float *row[4];
} i3_lerp_rows;
typedef const float *(*i3_row_fetch)(void *ctx, int64_t key);
void i3_lerp_rows_get(i3_lerp_rows *c, const int64_t need[4], i3_row_fetch fetch, void *ctx, const i3_lerp_tap *tx,
                      int64_t n, const float *x[4]);

/* Channel reductions over logits [n, c, s]: softmax probabilities (y same shape), normalized entropy
 * H = -sum p log p / log C (0 for C == 1) [n, s], max softmax probability [n, s], argmax [n, s]
 * (lowest index wins ties). Any output pointer may be NULL; one pass computes all requested. */
void i3_cpu_softmax_uncertainty(const float *logits, int64_t n, int64_t c, int64_t s, float *probs,
                                float *entropy, float *msp, int32_t *argmax, int n_threads);

/* Per-slice sums of a map [d, h, w] along each axis: sum_d [d], sum_h [h], sum_w [w] (any may be
 * NULL). Accumulated in double. */
void i3_cpu_slice_sums(const float *x, int64_t d, int64_t h, int64_t w, double *sum_d, double *sum_h,
                       double *sum_w);

/* Average pooling with kernel == stride and no padding (the strided skip of ResNet-D blocks in
 * ResidualEncoderUNet, torch AvgPool3d(k, k)). Output size per axis: in / k (floor). */
typedef struct {
    int k[3];
} i3_avg_pool_params;

i3_shape5 i3_avg_pool_out_shape(i3_shape5 x, const i3_avg_pool_params *p);
void i3_cpu_avg_pool_ref(const float *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y);

/* Ensemble uncertainty from mean probabilities (ops/prob_uncertainty.c, i3Deep Eq. 1-2).
 * i3_cpu_softmax_mean_accumulate folds the t-th member's logits [n, c, s] (t >= 1) into the running
 * mean of softmax probabilities: mean += (softmax(logits) - mean) / t (t == 1 overwrites mean).
 * i3_cpu_prob_uncertainty takes probabilities [n, c, s]: normalized entropy -sum p log p / log C
 * (0 log 0 = 0; 0 for C == 1), max probability, argmax (lowest index wins ties); outputs may be NULL. */
void i3_cpu_softmax_mean_accumulate(const float *logits, int64_t n, int64_t c, int64_t s, int64_t t,
                                    float *mean, int n_threads);
void i3_cpu_prob_uncertainty(const float *probs, int64_t n, int64_t c, int64_t s, float *entropy, float *msp,
                             int32_t *argmax, int n_threads);

/* ---- ops of RITM's HRNet-OCR (ops/slice_channels.c, ops/spatial_gather.c, ops/object_attention.c) ---- */

/* Channels [begin, begin + count) of x [n, c, s] -> y [n, count, s]. */
typedef struct {
    int begin, count;
} i3_slice_params;

void i3_cpu_slice_channels(const float *x, i3_shape5 xs, const i3_slice_params *p, float *y);

/* OCR's SpatialGather_Module (scale 1): per class k a softmax of logits[n, k, :] over all spatial
 * positions, and the feature average it weighs: y[n, c, k] = sum_s softmax_s(logits[n, k, s]) feats[n, c, s].
 * feats [n, c, s], logits [n, kc, s]; y is [n, c, kc] (as NCDHW: [n, c, kc, 1, 1]). Sums in double. */
void i3_cpu_spatial_gather_ref(const float *feats, const float *logits, int64_t n, int64_t c, int64_t kc, int64_t s,
                               float *y);

/* OCR's ObjectAttentionBlock2D core (scale 1): per position s,
 *   a[k] = softmax_k(ck^-1/2 sum_c q[n, c, s] key[n, c, k]),   y[n, cv, s] = sum_k a[k] value[n, cv, k].
 * q [n, ck, s], key [n, ck, kc], value [n, cv, kc] -> y [n, cv, s], kc <= I3_OCR_MAX_CLASSES. Sums in double. */
#define I3_OCR_MAX_CLASSES 64
void i3_cpu_object_attention_ref(const float *q, const float *key, const float *value, int64_t n, int64_t ck,
                                 int64_t cv, int64_t kc, int64_t s, float *y, int n_threads);

/* ---- ops of Slice-and-Conquer's mask-attention module (ops/mask_pool.c, ops/channel_gate.c) ---- */

/* Mask pooling: feats [n, c, d', h', w'] averaged over the annotated foreground and background given by
 * guide [n, 2, d, h, w] (2D masks placed in 3D, annotated-slice indicator) at stride `stride` of the
 * features (d' = ceil(d / stride) per axis, i3_mask_pool_feature_len): y [n, 2c, 1, 1, 1] =
 * (foreground average, background average), each sum_j w(j) feats(j) / (sum_j w(j) + eps) with w the
 * guide's window means (ops/mask_pool.c). */
typedef struct {
    int stride;
    float eps;
} i3_mask_pool_params;

i3_shape5 i3_mask_pool_out_shape(i3_shape5 feats);
int64_t i3_mask_pool_feature_len(int64_t in, int stride);
void i3_cpu_mask_pool_ref(const float *feats, i3_shape5 fs, const float *guide, i3_shape5 gs,
                          const i3_mask_pool_params *p, float *y);

/* y = x * 2 sigmoid(gate[n, c]) per channel; gate [n, c, 1, 1, 1]; in place allowed. */
void i3_cpu_channel_gate(const float *x, i3_shape5 xs, const float *gate, float *y, int n_threads);

#endif /* I3RT_OPS_H */
