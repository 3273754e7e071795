/* The launchers of the device ops, one per kernels/<op>.cu, callable from C and C++.
 *
 * Each build of the kernels has its own names: I3_DEV(conv) is i3emu_conv in the emulated build and
 * i3gpu_conv in the nvcc build. This header has no include guard on purpose: a C file that wants
 * both defines I3_DEV, includes it, redefines I3_DEV and includes it again (launchers_both.h does;
 * kernels/device.h defines I3_DEV for the .cu files). Every launcher returns a cudaError_t as int (0 = success),
 * queues its work on `stream` (a cudaStream_t, NULL = default) and takes NCDHW float32 tensors
 * with the semantics of the CPU op of the same name in runtime/ops.h; `ys` is the output shape. */
#ifdef __cplusplus
extern "C" {
#endif

#include "ops.h"

int I3_DEV(conv)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p, float *y,
                 i3_shape5 ys, void *stream);
/* The convolution with its fusions (kernels/conv.cu v1): in_scale_shift (NULL: none) holds
 * (scale, shift) per input plane (sample, channel), and each input value v is read as
 * act_in(v * scale + shift) (a deferred instance norm); partials (NULL: none) receives the output's
 * per-plane instance-norm statistics, (count, mean, M2) per [sample * cout + o][chunk] with
 * conv_stat_chunks(ys) chunks, for norm_finalize. */
int I3_DEV(conv_stat_chunks)(i3_shape5 ys);
int I3_DEV(conv_fused)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                       const float *in_scale_shift, i3_act act_in, float *y, i3_shape5 ys, float *partials,
                       void *stream);
/* The same convolution on tensor cores (kernels/conv_tensor_core.cu): inputs and weights rounded to
 * `precision` (f16, bf16, or tf32: 10 mantissa bits, round to nearest, ties away), products
 * accumulated in f32. */
#ifndef I3_TC_F16
#define I3_TC_F16 0
#define I3_TC_BF16 1
#define I3_TC_TF32 2
#define I3_LAYOUT_NCDHW 0 /* float32 */
#define I3_LAYOUT_NDHWC 1 /* channels-last, values in the f16/bf16 of the precision */
#endif
int I3_DEV(conv_tensor_core)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_conv_params *p,
                             float *y, i3_shape5 ys, int precision, void *scratch, void *stream);
/* The scratch a launch on input x (layout x_layout) needs: f16/bf16 the packed weights and, for an NCDHW
 * input the kernel makes channels-last first, that copy (256-byte aligned); tf32 none. */
size_t I3_DEV(conv_tensor_core_scratch_bytes)(i3_shape5 xs, int x_layout, const i3_conv_params *p, int precision);
/* With conv_fused's fusions and a layout per activation: channels-last needs f16/bf16 and a channel
 * count that is a multiple of 8 (x 16-byte aligned); statistics need
 * conv_tensor_core_stat_chunks(ys, precision) > 0 (batch 1, or a spatial size that is a multiple of
 * the row tile, 64 for tf32 and 128 otherwise); a residual (NULL: none) needs f16/bf16 and no statistics.
 * Anything else: cudaErrorInvalidValue. */
int I3_DEV(conv_tensor_core_stat_chunks)(i3_shape5 ys, int precision);
/* Over how many blocks f16/bf16 split each output tile's k range (1: none; a layer with few output tiles). */
int I3_DEV(conv_tensor_core_k_splits)(i3_shape5 xs, int x_layout, const i3_conv_params *p, int precision);
#ifndef I3_RESIDUAL_DEFINED
#define I3_RESIDUAL_DEFINED
/* A residual add in a conv's epilogue: y = act(conv(x) + skip), skip shaped as y, NCDHW f32 or channels-last in
 * the f16/bf16 of the precision (layout); skip may be y itself (each output read, then written, by one thread). */
typedef struct {
    const void *skip;
    int layout;
    i3_act act;
} i3_residual;
#endif
int I3_DEV(conv_tensor_core_fused)(const void *x, i3_shape5 xs, int x_layout, const float *w,
                                   const void *packed_weights, unsigned *split_counters, const float *b,
                                   const i3_conv_params *p, const float *in_scale_shift, i3_act act_in, void *y,
                                   i3_shape5 ys, int y_layout, const i3_residual *residual, float *partials,
                                   int precision, void *scratch, void *stream);
/* f16/bf16: the weights as the launch reads them, packed once for every launch on inputs of the same channels
 * and layout (then passed as packed_weights above, NULL: packed by each launch into its scratch; w is not read
 * then). split_counters: I3_TC_SPLIT_COUNTERS zeros that every launch leaves zero (NULL: in the scratch, zeroed
 * by a launch of their own when the layer splits k): with both, a launch on a channels-last input is one kernel. */
#ifndef I3_TC_SPLIT_COUNTERS
#define I3_TC_SPLIT_COUNTERS 264
#endif
size_t I3_DEV(conv_tensor_core_packed_weights_bytes)(i3_shape5 xs, int x_layout, const i3_conv_params *p, int precision);
int I3_DEV(conv_tensor_core_pack_weights)(i3_shape5 xs, int x_layout, const float *w, const i3_conv_params *p,
                                          int precision, void *packed, void *stream);
int I3_DEV(conv_transpose)(const float *x, i3_shape5 xs, const float *w, const float *b,
                           const i3_conv_transpose_params *p, float *y, i3_shape5 ys, void *stream);
/* The same on a channels-last input [n, d, h, w, cin] in the f16/bf16 of `precision`; y NCDHW f32. */
int I3_DEV(conv_transpose_channels_last)(const void *x, i3_shape5 xs, int precision, const float *w, const float *b,
                                         const i3_conv_transpose_params *p, float *y, i3_shape5 ys, void *stream);
/* The same on tensor cores (f16/bf16 operands, f32 sums; kernels/conv_tensor_core.cu v3 as a GEMM over input
 * positions x (tap, output channel)): x NCDHW f32 or channels-last, y channels-last in the f16/bf16 of
 * `precision` (ys.c a multiple of 8) with y_stride >= ys.c elements from one position to the next (more:
 * y is the second part of a channels-last concat's output); scratch of
 * conv_transpose_tensor_core_scratch_bytes. */
size_t I3_DEV(conv_transpose_tensor_core_scratch_bytes)(i3_shape5 xs, int x_layout, const i3_conv_transpose_params *p,
                                                       int precision);
int I3_DEV(conv_transpose_tensor_core)(const void *x, i3_shape5 xs, int x_layout, const float *w, const float *b,
                                       const i3_conv_transpose_params *p, void *y, i3_shape5 ys, int64_t y_stride,
                                       int precision, void *scratch, void *stream);
int I3_DEV(acs_conv)(const float *x, i3_shape5 xs, const float *w, const float *b, const i3_acs_conv_params *p,
                     float *y, i3_shape5 ys, void *stream);
int I3_DEV(instance_norm)(const float *x, i3_shape5 xs, const float *gamma, const float *beta,
                          const i3_norm_params *p, float *y, void *stream);
/* Instance norm from a convolution's statistics: norm_finalize merges `chunks` partials per plane
 * (planes = n * c) into (scale, shift) per plane with gamma/beta (either may be NULL) and eps;
 * norm_apply writes y = act_out(act(x * scale + shift) + skip) (skip NULL: y = act(x * scale +
 * shift)); in place allowed. */
int I3_DEV(norm_finalize)(const float *partials, int64_t planes, int chunks, int64_t channels, const float *gamma,
                          const float *beta, float eps, float *scale_shift, void *stream);
int I3_DEV(norm_apply)(const float *x, int64_t planes, int64_t spatial, const float *scale_shift, i3_act act,
                       const float *skip, i3_act act_out, float *y, void *stream);
/* norm_apply written to y [n, spatial, c] channels-last in the f16/bf16 of `precision`; x and skip (NULL:
 * none) each channels-last in that format or NCDHW f32 as x_layout / skip_layout (I3_LAYOUT_*) say; y may be
 * x when both are channels-last. scale_shift NULL: no norm, y = act_out(x + skip) (a residual add). */
int I3_DEV(norm_apply_channels_last)(const void *x, int x_layout, int64_t n, int64_t c, int64_t spatial,
                                     const float *scale_shift, i3_act act, const void *skip, int skip_layout,
                                     i3_act act_out, void *y, int precision, void *stream);
int I3_DEV(activation)(const float *x, int64_t n, i3_act act, float *y, void *stream);
int I3_DEV(add)(const float *a, const float *b, int64_t n, i3_act act, float *y, void *stream);
int I3_DEV(concat)(const float *a, int64_t ca, const float *b, int64_t cb, int64_t n, int64_t s, float *y,
                   void *stream);
/* The same concat written channels-last, y[n, s, ca + cb] in the f16/bf16 of `precision` (I3_TC_F16 or
 * I3_TC_BF16); each input is NCDHW f32 or already channels-last in that format (a_layout, b_layout:
 * I3_LAYOUT_*). Both: a or b NULL leaves that input's channels of y as they are (written there by its
 * producer, or a count of 0). */
int I3_DEV(concat_channels_last)(const void *a, int a_layout, int64_t ca, const void *b, int b_layout, int64_t cb,
                                 int64_t n, int64_t s, int precision, void *y, void *stream);
int I3_DEV(resize)(const float *x, i3_shape5 xs, const i3_resize_params *p, float *y, void *stream);
int I3_DEV(avg_pool)(const float *x, i3_shape5 xs, const i3_avg_pool_params *p, float *y, void *stream);
/* The same on a channels-last input in the f16/bf16 of `precision`; y NCDHW f32. */
int I3_DEV(avg_pool_channels_last)(const void *x, i3_shape5 xs, int precision, const i3_avg_pool_params *p, float *y,
                                   void *stream);
int I3_DEV(softmax_uncertainty)(const float *logits, int64_t n, int64_t c, int64_t s, float *probs, float *entropy,
                                float *msp, int32_t *argmax, void *stream);
/* softmax_uncertainty of one volume logits [c, d, h, w] plus the per-slice sums of its maps in the
 * same pass (kernels/softmax.cu v2): sums [3][d + h + w] (double) holds, for entropy, msp and argmax
 * in that order, sum_d, sum_h and sum_w as i3_cpu_slice_sums computes them. probs, entropy, msp
 * and argmax may be NULL; scratch: softmax_slices_scratch_bytes(d, h, w) bytes of device memory. */
size_t I3_DEV(softmax_slices_scratch_bytes)(int64_t d, int64_t h, int64_t w);
int I3_DEV(softmax_slices)(const float *logits, int64_t c, int64_t d, int64_t h, int64_t w, float *probs,
                           float *entropy, float *msp, int32_t *argmax, double *sums, void *scratch, void *stream);
/* Sliding window (kernels/sliding_window.cu, runtime/sliding_window.c's device loop): sw_tile writes
 * y [channels, tile] = x [channels, shape] at offset + flip(t) (flip along the axes of flip_mask, bit a =
 * axis a), 0 outside x (offset may be negative), as i3_sw_tile (runtime/sliding_window.h); sw_gather sets
 * (first) or adds pred [classes, tile] read flipped back into sum [classes, tile]; sw_accumulate adds
 * sum / passes * gauss [tile] into acc [classes, volume] at `offset` and gauss into wsum [volume], both
 * float32 or (fp16) f16 bits rounded at every addition; sw_normalize divides acc by wsum in place (f16:
 * rounded). A tile outside the volume, or passes < 1, is cudaErrorInvalidValue. */
int I3_DEV(sw_tile)(const float *x, int64_t channels, const int64_t shape[3], const int64_t offset[3],
                    const int64_t tile[3], int flip_mask, float *y, void *stream);
int I3_DEV(sw_gather)(const float *pred, int64_t classes, const int64_t tile[3], int flip_mask, int first, float *sum,
                      void *stream);
int I3_DEV(sw_accumulate)(const float *sum, int64_t classes, const int64_t tile[3], int passes, const float *gauss,
                          int fp16, void *acc, void *wsum, const int64_t volume[3], const int64_t offset[3],
                          void *stream);
int I3_DEV(sw_normalize)(void *acc, const void *wsum, int64_t classes, const int64_t volume[3], int fp16, void *stream);
/* RITM's HRNet-OCR head (kernels/ocr.cu): key/value of object_attention are [n, ck|cv, kc, 1, 1] with
 * 1 <= kc <= I3_OCR_MAX_CLASSES (else cudaErrorInvalidValue); spatial_gather writes [n, c, kc]. */
int I3_DEV(slice_channels)(const float *x, i3_shape5 xs, const i3_slice_params *p, float *y, void *stream);
int I3_DEV(spatial_gather)(const float *feats, const float *logits, int64_t n, int64_t c, int64_t kc, int64_t s,
                           float *y, void *stream);
int I3_DEV(object_attention)(const float *q, const float *key, const float *value, int64_t n, int64_t ck, int64_t cv,
                             int64_t kc, int64_t s, float *y, void *stream);
/* Slice-and-Conquer's mask attention (kernels/mask_attention.cu): mask_pool needs
 * mask_pool_scratch_bytes(feats shape) bytes of device scratch; channel_gate may run in place. */
size_t I3_DEV(mask_pool_scratch_bytes)(i3_shape5 fs);
int I3_DEV(mask_pool)(const float *feats, i3_shape5 fs, const float *guide, i3_shape5 gs, const i3_mask_pool_params *p,
                      float *y, void *scratch, void *stream);
int I3_DEV(channel_gate)(const float *x, i3_shape5 xs, const float *gate, float *y, void *stream);
int I3_DEV(slice_sums)(const float *x, int64_t d, int64_t h, int64_t w, double *sum_d, double *sum_h, double *sum_w,
                      void *stream);

#ifdef __cplusplus
}
#endif
