/* Context, errors, dtypes and allocation helpers (see core.h). */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *i3rt_status_name(i3rt_status status) {
    switch (status) {
    case I3RT_OK: return "I3RT_OK";
    case I3RT_ERR_INVALID_ARGUMENT: return "I3RT_ERR_INVALID_ARGUMENT";
    case I3RT_ERR_IO: return "I3RT_ERR_IO";
    case I3RT_ERR_FORMAT: return "I3RT_ERR_FORMAT";
    case I3RT_ERR_UNSUPPORTED: return "I3RT_ERR_UNSUPPORTED";
    case I3RT_ERR_SHAPE: return "I3RT_ERR_SHAPE";
    case I3RT_ERR_OUT_OF_MEMORY: return "I3RT_ERR_OUT_OF_MEMORY";
    case I3RT_ERR_BACKEND: return "I3RT_ERR_BACKEND";
    }
    return "I3RT_ERR_UNKNOWN";
}

i3rt_status i3_fail(i3_ctx *ctx, i3rt_status status, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
    }
    return status;
}

i3rt_status i3rt_context_create(i3rt_context **out, int n_threads, i3rt_backend_kind backend) {
    if (!out) return I3RT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024) return I3RT_ERR_INVALID_ARGUMENT;
    if (backend != I3RT_BACKEND_CPU && backend != I3RT_BACKEND_CUDA && backend != I3RT_BACKEND_EMULATED)
        return I3RT_ERR_INVALID_ARGUMENT;
    i3rt_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return I3RT_ERR_OUT_OF_MEMORY;
    ctx->n_threads = n_threads;
    ctx->backend = backend;
    *out = ctx;
    return I3RT_OK;
}

void i3rt_context_free(i3rt_context *ctx) { free(ctx); }

i3rt_status i3rt_context_set_precision(i3rt_context *ctx, i3rt_precision precision) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if ((int)precision < I3RT_PRECISION_F32 || (int)precision > I3RT_PRECISION_TF32)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "precision %d is not one of i3rt_precision", (int)precision);
    if (ctx->backend == I3RT_BACKEND_CPU && precision != I3RT_PRECISION_F32)
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "the CPU backend computes in f32 only");
    ctx->precision = precision;
    ctx->precision_set = 1;
    return I3RT_OK;
}

const char *i3rt_context_error(const i3rt_context *ctx) { return ctx ? ctx->error : ""; }

i3rt_status i3rt_context_device_memory(const i3rt_context *ctx, size_t *in_use, size_t *peak) {
    if (!ctx) return I3RT_ERR_INVALID_ARGUMENT;
    if (in_use) *in_use = ctx->device_bytes;
    if (peak) *peak = ctx->device_bytes_peak;
    return I3RT_OK;
}

size_t i3_dtype_size(i3_dtype t) {
    switch (t) {
    case I3_F32: case I3_I32: return 4;
    case I3_F16: case I3_BF16: return 2;
    case I3_U8: return 1;
    case I3_I64: return 8;
    default: return 0;
    }
}

const char *i3_dtype_name(i3_dtype t) {
    static const char *names[I3_DTYPE_COUNT] = {"F32", "F16", "BF16", "I32", "U8", "I64"};
    return (t >= 0 && t < I3_DTYPE_COUNT) ? names[t] : "?";
}

float i3_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t i3_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        /* value = m * 2^(e-150); a half subnormal unit is 2^-24, so q = m >> (126 - e) */
        uint32_t shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        uint32_t rounded = q + (rem > halfway || (rem == halfway && (q & 1)));
        return (uint16_t)(sign | rounded);
    }
    uint32_t r = absx - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t q = r >> 13, rem = r & 0x1fff;
    q += (rem > 0x1000 || (rem == 0x1000 && (q & 1)));
    return (uint16_t)(sign | q);
}

float i3_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t i3_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void *i3_malloc(i3_ctx *ctx, size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *i3_calloc(i3_ctx *ctx, size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *i3_aligned_alloc(i3_ctx *ctx, size_t bytes, const char *what) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    return p;
}

bool i3_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

char *i3_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *text = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1)) != NULL) {
            if (fread(text, 1, (size_t)n, f) != (size_t)n) {
                free(text);
                text = NULL;
            } else text[n] = '\0';
        }
    }
    fclose(f);
    return text;
}

double i3_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double i3_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
