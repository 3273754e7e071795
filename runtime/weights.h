/* Reading i3rt weight files: safetensors with JSON metadata (docs/weights-format.md).
 *
 * The whole file is read into memory once and validated before anything uses it: header length,
 * JSON, dtype names, shapes, offsets in range, contiguous and non-overlapping, sizes that match
 * prod(shape) * dtype size. Every error names the file and the tensor. Nothing reads out of bounds. */
#ifndef I3RT_WEIGHTS_H
#define I3RT_WEIGHTS_H

#include "core.h"

#define I3_WEIGHTS_MAX_DIMS 8
#define I3_WEIGHTS_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    const char *name;
    i3_dtype dtype;
    int ndim;
    int64_t shape[I3_WEIGHTS_MAX_DIMS];
    const void *data;  /* inside the file buffer; little-endian, row-major */
    size_t nbytes;
    size_t numel;
} i3_weight_tensor;

typedef struct i3_weights i3_weights;

/* Reads and validates a file. On failure *out is NULL and ctx names path and problem. */
i3rt_status i3_weights_open(i3_ctx *ctx, const char *path, i3_weights **out);
/* Validates a buffer already in memory (copied; label names it in errors). Used by the fuzzer. */
i3rt_status i3_weights_from_memory(i3_ctx *ctx, const void *buf, size_t len, const char *label, i3_weights **out);
void i3_weights_free(i3_weights *w);

const char *i3_weights_label(const i3_weights *w);  /* the path or label it was opened from */
int i3_weights_count(const i3_weights *w);
const i3_weight_tensor *i3_weights_at(const i3_weights *w, int index);
const i3_weight_tensor *i3_weights_find(const i3_weights *w, const char *name); /* NULL if absent */
/* A "__metadata__" string value, NULL if absent. */
const char *i3_weights_metadata(const i3_weights *w, const char *key);

/* The tensor `name` as float32 (converted from F16/BF16 once and kept), after checking that it
 * exists and has exactly the given shape. Marks the tensor as used (see i3_weights_check_all_used). */
i3rt_status i3_weights_get_f32(i3_ctx *ctx, i3_weights *w, const char *name, int ndim, const int64_t *shape,
                               const float **out);
/* Fails naming the first tensor that no i3_weights_get_f32 call asked for (an extra tensor means
 * the file does not belong to the network that was built). */
i3rt_status i3_weights_check_all_used(i3_ctx *ctx, const i3_weights *w);

/* A float buffer of numel values owned by w (freed with it), for tensors computed from the file's
 * (e.g. convolution weights with batch norm folded in). Cached by name: asking again for the same
 * name returns the same buffer, whose contents the caller wrote before (asking with another numel
 * fails); *fresh (may be NULL) says whether the buffer was just made (its contents to be computed) or
 * is the cached one (computed already: a network rebuilt for another input size need not redo it, and
 * its weight pointers stay the same). The buffer is 64-byte aligned. */
i3rt_status i3_weights_derived(i3_ctx *ctx, i3_weights *w, const char *name, size_t numel, float **out, int *fresh);

#endif /* I3RT_WEIGHTS_H */
