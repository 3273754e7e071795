/* NNIA arrays (runtime/nnia.h): nnInteractive's serialization.py in C, over C-Blosc2. */
#include "nnia.h"

#include <blosc2.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "NNIA is little-endian; i3rt assumes a little-endian host");

#define NNIA_MAGIC "NNIA"
#define NNIA_VERSION 1
#define NNIA_FIXED_HEADER 8
#define NNIA_CHUNK_HEADER 16 /* u64 raw length, u64 compressed length */

static const struct {
    const char *name;
    size_t size;
} DTYPES[I3_NNIA_DTYPE_COUNT] = {
    [I3_NNIA_BOOL] = {"bool", 1},       [I3_NNIA_INT8] = {"int8", 1},      [I3_NNIA_UINT8] = {"uint8", 1},
    [I3_NNIA_INT16] = {"int16", 2},     [I3_NNIA_UINT16] = {"uint16", 2},  [I3_NNIA_INT32] = {"int32", 4},
    [I3_NNIA_UINT32] = {"uint32", 4},   [I3_NNIA_INT64] = {"int64", 8},    [I3_NNIA_UINT64] = {"uint64", 8},
    [I3_NNIA_FLOAT16] = {"float16", 2}, [I3_NNIA_FLOAT32] = {"float32", 4}, [I3_NNIA_FLOAT64] = {"float64", 8},
};

const char *i3_nnia_dtype_name(i3_nnia_dtype t) { return (unsigned)t < I3_NNIA_DTYPE_COUNT ? DTYPES[t].name : "?"; }
size_t i3_nnia_dtype_size(i3_nnia_dtype t) { return (unsigned)t < I3_NNIA_DTYPE_COUNT ? DTYPES[t].size : 0; }

bool i3_nnia_dtype_parse(const char *name, i3_nnia_dtype *out) {
    for (int t = 0; t < I3_NNIA_DTYPE_COUNT; t++)
        if (strcmp(name, DTYPES[t].name) == 0) {
            *out = (i3_nnia_dtype)t;
            return true;
        }
    return false;
}

bool i3_nnia_dtype_is_integer(i3_nnia_dtype t) { return t <= I3_NNIA_UINT64; }

/* blosc2_init registers Blosc2's codecs and filters once per process; the contexts used below are
 * per call, so the library's global state is touched only here. */
static pthread_once_t blosc2_once = PTHREAD_ONCE_INIT;
static void blosc2_init_once(void) { blosc2_init(); }

static uint64_t read_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t read_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

void i3_nnia_free(i3_nnia_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* The Blosc2 chunk header (C-Blosc2's blosc2.h, "Offsets for fields in Blosc2 chunk header"): only
 * what pack_array's compress2 writes passes, so a hostile chunk can never make Blosc2 load a codec or
 * filter plug-in (which it would look for through a Python subprocess) or leave bytes unwritten. */
static i3rt_status check_chunk(i3_ctx *ctx, const char *label, uint32_t index, const uint8_t *src, uint64_t clen,
                               uint64_t ulen) {
    if (clen < BLOSC_EXTENDED_HEADER_LENGTH)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u has %llu bytes, fewer than a Blosc2 chunk header (%d)",
                       label, index, (unsigned long long)clen, BLOSC_EXTENDED_HEADER_LENGTH);
    uint8_t flags = src[BLOSC2_CHUNK_FLAGS];
    if (!(flags & BLOSC_DOSHUFFLE) || !(flags & BLOSC_DOBITSHUFFLE))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u is not a Blosc2 chunk (no extended header)", label, index);
    uint32_t nbytes = read_u32(src + BLOSC2_CHUNK_NBYTES), cbytes = read_u32(src + BLOSC2_CHUNK_CBYTES);
    if (nbytes != ulen)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u: the NNIA header says %llu raw bytes, the Blosc2 chunk %u",
                       label, index, (unsigned long long)ulen, nbytes);
    if (cbytes != clen)
        return i3_fail(ctx, I3RT_ERR_FORMAT,
                       "%s: chunk %u: the NNIA header says %llu compressed bytes, the Blosc2 chunk %u", label, index,
                       (unsigned long long)clen, cbytes);
    int special = (src[BLOSC2_CHUNK_BLOSC2_FLAGS] >> 4) & BLOSC2_SPECIAL_MASK;
    if (special == BLOSC2_SPECIAL_UNINIT || special > BLOSC2_SPECIAL_LASTID)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u: Blosc2 special value %d is not an array's content", label,
                       index, special);
    if (special != BLOSC2_NO_SPECIAL) return I3RT_OK; /* zeros, NaNs or one repeated value: no codec runs */
    if (src[BLOSC2_CHUNK_BLOSC2_FLAGS2] & BLOSC2_VL_BLOCKS)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: chunk %u has variable-length blocks", label, index);
    int codec = (flags >> 5) & 0x7;
    if (codec != BLOSC_BLOSCLZ_FORMAT && codec != BLOSC_LZ4_FORMAT && codec != BLOSC_ZLIB_FORMAT &&
        codec != BLOSC_ZSTD_FORMAT)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: chunk %u uses Blosc2 codec %d, not a built-in one", label, index,
                       codec);
    for (int f = 0; f < BLOSC2_MAX_FILTERS; f++) {
        uint8_t filter = src[BLOSC2_CHUNK_FILTER_CODES + f];
        if (filter > BLOSC_TRUNC_PREC)
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: chunk %u uses Blosc2 filter %u, not a built-in one", label,
                           index, filter);
    }
    return I3RT_OK;
}

i3rt_status i3_nnia_decode(i3_ctx *ctx, const uint8_t *buf, size_t len, size_t max_bytes, int nthreads,
                           const char *label, i3_nnia_array *out) {
    memset(out, 0, sizeof *out);
    if (!buf || len < NNIA_FIXED_HEADER)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: %zu bytes, fewer than the 8-byte NNIA header", label, buf ? len : 0);
    if (memcmp(buf, NNIA_MAGIC, 4) != 0) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: not an NNIA array (bad magic)", label);
    if (buf[4] != NNIA_VERSION)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: NNIA version %u (i3rt reads version 1)", label, buf[4]);
    if (buf[5] != I3_NNIA_ZSTD && buf[5] != I3_NNIA_LZ4)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: NNIA codec id %u (1 ZSTD and 2 LZ4 are defined)", label, buf[5]);
    int ndim = buf[6];
    size_t name_len = buf[7], offset = NNIA_FIXED_HEADER;
    if (ndim > I3_NNIA_MAX_DIMS)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: %d dimensions (at most %d)", label, ndim, I3_NNIA_MAX_DIMS);
    if (len - offset < name_len + (size_t)ndim * 8 + 4)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated in the header (%zu bytes)", label, len);
    char name[256];
    memcpy(name, buf + offset, name_len);
    name[name_len] = '\0';
    offset += name_len;
    for (size_t i = 0; i < name_len; i++)
        if (name[i] < 0x20 || name[i] > 0x7e) name[i] = '?'; /* the message must stay printable */
    if (!i3_nnia_dtype_parse(name, &out->dtype))
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: dtype '%s' is not one the protocol carries", label, name);
    size_t itemsize = i3_nnia_dtype_size(out->dtype), numel = 1;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++, offset += 8) {
        int64_t dim = (int64_t)read_u64(buf + offset);
        if (dim < 0) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: negative size %lld of axis %d", label, (long long)dim, d);
        out->shape[d] = dim;
        if (!i3_mul_size(numel, (size_t)dim, &numel))
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: the shape overflows the address space", label);
    }
    size_t nbytes;
    if (!i3_mul_size(numel, itemsize, &nbytes))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: the shape overflows the address space", label);
    if (max_bytes && nbytes > max_bytes)
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: %zu bytes of %s, more than the limit of %zu bytes", label,
                       nbytes, name, max_bytes);
    uint32_t nchunks = read_u32(buf + offset);
    offset += 4;
    const size_t payload = offset;

    /* First pass: every length against the buffer and the shape, before anything is allocated. */
    size_t written = 0;
    for (uint32_t c = 0; c < nchunks; c++) {
        if (len - offset < NNIA_CHUNK_HEADER)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated at chunk %u of %u", label, c, nchunks);
        uint64_t ulen = read_u64(buf + offset), clen = read_u64(buf + offset + 8);
        offset += NNIA_CHUNK_HEADER;
        if (ulen == 0 || ulen > nbytes - written)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u holds %llu bytes; the shape leaves %zu", label, c,
                           (unsigned long long)ulen, nbytes - written);
        if (ulen % itemsize)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u length %llu is not a multiple of the %s item size",
                           label, c, (unsigned long long)ulen, name);
        if (ulen > BLOSC2_MAX_BUFFERSIZE)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u has %llu raw bytes, more than a Blosc2 chunk holds",
                           label, c, (unsigned long long)ulen);
        if (clen > len - offset)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u is truncated (%llu compressed bytes, %zu left)", label,
                           c, (unsigned long long)clen, len - offset);
        I3_TRY(check_chunk(ctx, label, c, buf + offset, clen, ulen));
        written += ulen;
        offset += clen;
    }
    if (written != nbytes)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: the chunks hold %zu bytes, the shape needs %zu", label, written,
                       nbytes);
    if (offset != len)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: %zu bytes after the last chunk", label, len - offset);

    out->data = i3_malloc(ctx, nbytes ? nbytes : 1, "an NNIA array");
    if (!out->data) return I3RT_ERR_OUT_OF_MEMORY;
    out->numel = numel;
    out->nbytes = nbytes;
    if (nchunks == 0) return I3RT_OK;

    pthread_once(&blosc2_once, blosc2_init_once);
    blosc2_dparams dparams = BLOSC2_DPARAMS_DEFAULTS;
    dparams.nthreads = (int16_t)(nthreads < 1 ? 1 : nthreads > 64 ? 64 : nthreads);
    blosc2_context *dctx = blosc2_create_dctx(dparams);
    if (!dctx) {
        i3_nnia_free(out);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: cannot create a Blosc2 context", label);
    }
    i3rt_status st = I3RT_OK;
    offset = payload;
    written = 0;
    for (uint32_t c = 0; c < nchunks && st == I3RT_OK; c++) {
        uint64_t ulen = read_u64(buf + offset), clen = read_u64(buf + offset + 8);
        offset += NNIA_CHUNK_HEADER;
        int got = blosc2_decompress_ctx(dctx, buf + offset, (int32_t)clen, (uint8_t *)out->data + written,
                                        (int32_t)ulen);
        if (got < 0 || (uint64_t)got != ulen)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: chunk %u does not decompress (Blosc2 error %d)", label, c, got);
        written += ulen;
        offset += clen;
    }
    blosc2_free_ctx(dctx);
    if (st != I3RT_OK) i3_nnia_free(out);
    return st;
}

i3rt_status i3_nnia_encode(i3_ctx *ctx, const i3_nnia_array *a, const i3_nnia_options *opt, uint8_t **out,
                           size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if ((unsigned)a->dtype >= I3_NNIA_DTYPE_COUNT || a->ndim < 0 || a->ndim > I3_NNIA_MAX_DIMS ||
        (opt->codec != I3_NNIA_ZSTD && opt->codec != I3_NNIA_LZ4) || opt->clevel < 0 || opt->clevel > 9)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "NNIA encode: bad dtype, ndim, codec or level");
    size_t itemsize = i3_nnia_dtype_size(a->dtype), numel = 1, nbytes;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] < 0 || !i3_mul_size(numel, (size_t)a->shape[d], &numel))
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "NNIA encode: bad shape");
    if (!i3_mul_size(numel, itemsize, &nbytes))
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "NNIA encode: the shape overflows the address space");
    /* every chunk but the last is a whole number of items (serialization.py: aligned chunks keep Blosc2
     * off its broken all-zero path for lengths that are not a multiple of the type size) */
    size_t chunk = opt->chunk_bytes ? opt->chunk_bytes : I3_NNIA_CHUNK_BYTES;
    if (chunk > I3_NNIA_CHUNK_BYTES) chunk = I3_NNIA_CHUNK_BYTES;
    chunk -= chunk % itemsize;
    if (chunk == 0) chunk = itemsize;
    size_t nchunks = (nbytes + chunk - 1) / chunk;
    if (nchunks > UINT32_MAX) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "NNIA encode: too many chunks");

    const char *name = i3_nnia_dtype_name(a->dtype);
    size_t name_len = strlen(name);
    size_t header = NNIA_FIXED_HEADER + name_len + (size_t)a->ndim * 8 + 4;
    size_t cap = header + nchunks * (NNIA_CHUNK_HEADER + BLOSC2_MAX_OVERHEAD) + nbytes;
    uint8_t *buf = i3_malloc(ctx, cap, "an NNIA encoding");
    if (!buf) return I3RT_ERR_OUT_OF_MEMORY;
    memcpy(buf, NNIA_MAGIC, 4);
    buf[4] = NNIA_VERSION;
    buf[5] = (uint8_t)opt->codec;
    buf[6] = (uint8_t)a->ndim;
    buf[7] = (uint8_t)name_len;
    memcpy(buf + NNIA_FIXED_HEADER, name, name_len);
    size_t offset = NNIA_FIXED_HEADER + name_len;
    for (int d = 0; d < a->ndim; d++, offset += 8) memcpy(buf + offset, &a->shape[d], 8);
    uint32_t n32 = (uint32_t)nchunks;
    memcpy(buf + offset, &n32, 4);
    offset += 4;

    pthread_once(&blosc2_once, blosc2_init_once);
    blosc2_cparams cparams = BLOSC2_CPARAMS_DEFAULTS;
    cparams.compcode = opt->codec == I3_NNIA_ZSTD ? BLOSC_ZSTD : BLOSC_LZ4;
    cparams.clevel = (uint8_t)opt->clevel;
    cparams.typesize = (int32_t)itemsize;
    cparams.nthreads = (int16_t)(opt->nthreads < 1 ? 1 : opt->nthreads > 64 ? 64 : opt->nthreads);
    for (int f = 0; f < BLOSC2_MAX_FILTERS; f++) cparams.filters[f] = BLOSC_NOFILTER;
    if (opt->shuffle) cparams.filters[BLOSC2_MAX_FILTERS - 1] = BLOSC_SHUFFLE;
    blosc2_context *cctx = blosc2_create_cctx(cparams);
    if (!cctx) {
        free(buf);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "NNIA encode: cannot create a Blosc2 context");
    }
    i3rt_status st = I3RT_OK;
    for (size_t c = 0, start = 0; c < nchunks && st == I3RT_OK; c++, start += chunk) {
        uint64_t ulen = nbytes - start < chunk ? nbytes - start : chunk;
        int clen = blosc2_compress_ctx(cctx, (const uint8_t *)a->data + start, (int32_t)ulen,
                                       buf + offset + NNIA_CHUNK_HEADER, (int32_t)(ulen + BLOSC2_MAX_OVERHEAD));
        if (clen <= 0) {
            st = i3_fail(ctx, I3RT_ERR_BACKEND, "NNIA encode: Blosc2 failed on chunk %zu (error %d)", c, clen);
            break;
        }
        uint64_t clen64 = (uint64_t)clen;
        memcpy(buf + offset, &ulen, 8);
        memcpy(buf + offset + 8, &clen64, 8);
        offset += NNIA_CHUNK_HEADER + (size_t)clen;
    }
    blosc2_free_ctx(cctx);
    if (st != I3RT_OK) {
        free(buf);
        return st;
    }
    uint8_t *shrunk = realloc(buf, offset);
    *out = shrunk ? shrunk : buf;
    *out_len = offset;
    return I3RT_OK;
}

/* One element of any dtype as a double (exact for every value a mask or an image carries). */
static double element(const void *data, i3_nnia_dtype t, size_t i) {
    switch (t) {
    case I3_NNIA_BOOL: return ((const uint8_t *)data)[i] != 0;
    case I3_NNIA_INT8: return ((const int8_t *)data)[i];
    case I3_NNIA_UINT8: return ((const uint8_t *)data)[i];
    case I3_NNIA_INT16: return ((const int16_t *)data)[i];
    case I3_NNIA_UINT16: return ((const uint16_t *)data)[i];
    case I3_NNIA_INT32: return ((const int32_t *)data)[i];
    case I3_NNIA_UINT32: return ((const uint32_t *)data)[i];
    case I3_NNIA_INT64: return (double)((const int64_t *)data)[i];
    case I3_NNIA_UINT64: return (double)((const uint64_t *)data)[i];
    case I3_NNIA_FLOAT16: return i3_f16_to_f32(((const uint16_t *)data)[i]);
    case I3_NNIA_FLOAT32: return ((const float *)data)[i];
    case I3_NNIA_FLOAT64: return ((const double *)data)[i];
    default: return 0;
    }
}

void i3_nnia_to_f32(const i3_nnia_array *a, float *out) {
    if (a->dtype == I3_NNIA_FLOAT32) {
        memcpy(out, a->data, a->numel * sizeof(float));
        return;
    }
    for (size_t i = 0; i < a->numel; i++) out[i] = (float)element(a->data, a->dtype, i);
}

void i3_nnia_to_mask(const i3_nnia_array *a, uint8_t *out) {
    for (size_t i = 0; i < a->numel; i++) {
        double v = element(a->data, a->dtype, i);
        out[i] = v != 0 && !isnan(v);
    }
}

void i3_nnia_from_mask(const uint8_t *mask, size_t n, i3_nnia_dtype t, void *out) {
    size_t size = i3_nnia_dtype_size(t);
    if (size == 1 && t != I3_NNIA_FLOAT16) {
        memcpy(out, mask, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *dst = (uint8_t *)out + i * size;
        switch (t) {
        case I3_NNIA_FLOAT16: { uint16_t h = i3_f32_to_f16(mask[i]); memcpy(dst, &h, 2); break; }
        case I3_NNIA_FLOAT32: { float f = mask[i]; memcpy(dst, &f, 4); break; }
        case I3_NNIA_FLOAT64: { double f = mask[i]; memcpy(dst, &f, 8); break; }
        default: /* integers, little-endian: the value in the low byte */
            memset(dst, 0, size);
            dst[0] = mask[i];
        }
    }
}
