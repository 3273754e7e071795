/* NNIA: the array wire format of nnInteractive's client/server protocol (the `serialization.py` of
 * nnInteractive.inference.remote), read and written with C-Blosc2:
 *
 *   "NNIA" | u8 version (1) | u8 codec (1 ZSTD, 2 LZ4) | u8 ndim | u8 dtype-name length | the numpy
 *   dtype name ("float32", "uint8", ...) | ndim x i64 shape | u32 chunk count | per chunk: u64 raw
 *   length, u64 compressed length, one Blosc2 chunk (at most 1 GiB raw)
 *
 * all little-endian, the data in C order. An all-zero chunk is a Blosc2 special-value chunk of a few
 * bytes. Decoding checks every length against the buffer and the declared shape before it allocates or
 * decompresses, and accepts only the Blosc2 chunk features pack_array writes (built-in codecs and
 * filters, no plug-ins), so truncated, corrupt or hostile input is an error, never a crash. */
#ifndef I3RT_NNIA_H
#define I3RT_NNIA_H

#include "core.h"

#define I3_NNIA_MAX_DIMS 32
#define I3_NNIA_CHUNK_BYTES ((size_t)1 << 30) /* serialization.py's _CHUNK_SIZE */

/* The numpy dtypes of the protocol (images, masks, target buffers). */
typedef enum {
    I3_NNIA_BOOL = 0,
    I3_NNIA_INT8,
    I3_NNIA_UINT8,
    I3_NNIA_INT16,
    I3_NNIA_UINT16,
    I3_NNIA_INT32,
    I3_NNIA_UINT32,
    I3_NNIA_INT64,
    I3_NNIA_UINT64,
    I3_NNIA_FLOAT16,
    I3_NNIA_FLOAT32,
    I3_NNIA_FLOAT64,
    I3_NNIA_DTYPE_COUNT
} i3_nnia_dtype;

typedef enum { I3_NNIA_ZSTD = 1, I3_NNIA_LZ4 = 2 } i3_nnia_codec;

typedef struct {
    i3_nnia_dtype dtype;
    int ndim;
    int64_t shape[I3_NNIA_MAX_DIMS];
    size_t numel, nbytes;
    void *data; /* little-endian, C order; owned by the array after a decode (i3_nnia_free) */
} i3_nnia_array;

typedef struct {
    i3_nnia_codec codec; /* pack_array's default: ZSTD */
    int clevel;          /* 0..9; pack_array's default: 3 */
    int shuffle;         /* byte shuffle (images) or none (masks, segmentations: NOFILTER) */
    int nthreads;        /* Blosc2 threads */
    size_t chunk_bytes;  /* raw bytes per chunk; 0: I3_NNIA_CHUNK_BYTES */
} i3_nnia_options;

/* pack_array(arr, filters=[NOFILTER]): what the server answers a prediction with. */
#define I3_NNIA_OPTIONS_DEFAULT ((i3_nnia_options){I3_NNIA_ZSTD, 3, 0, 1, 0})

const char *i3_nnia_dtype_name(i3_nnia_dtype t); /* numpy's name */
size_t i3_nnia_dtype_size(i3_nnia_dtype t);
/* numpy's dtype name -> dtype; false if the protocol has no such dtype. */
bool i3_nnia_dtype_parse(const char *name, i3_nnia_dtype *out);
bool i3_nnia_dtype_is_integer(i3_nnia_dtype t); /* bool and the integer types */

/* Decodes buf (len bytes). max_bytes > 0 caps the decoded size (checked before anything is allocated).
 * label names the input in error messages. On failure *out is left empty. */
i3rt_status i3_nnia_decode(i3_ctx *ctx, const uint8_t *buf, size_t len, size_t max_bytes, int nthreads,
                           const char *label, i3_nnia_array *out);
/* Encodes a (its data, dtype and shape) into a malloc'd buffer *out of *out_len bytes. */
i3rt_status i3_nnia_encode(i3_ctx *ctx, const i3_nnia_array *a, const i3_nnia_options *opt, uint8_t **out,
                           size_t *out_len);
void i3_nnia_free(i3_nnia_array *a);

/* Element conversions for the session: any dtype to float32 (the image), any dtype to a 0/1 mask
 * (nonzero -> 1), and a 0/1 mask to any dtype (a target buffer region). n elements each. */
void i3_nnia_to_f32(const i3_nnia_array *a, float *out);
void i3_nnia_to_mask(const i3_nnia_array *a, uint8_t *out);
void i3_nnia_from_mask(const uint8_t *mask, size_t n, i3_nnia_dtype t, void *out);

#endif /* I3RT_NNIA_H */
