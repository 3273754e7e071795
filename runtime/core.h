/* Internal core of i3rt: the context (error message, threads, backend), dtypes and small helpers
 * shared by every part of the runtime. Not part of the public API. */
#ifndef I3RT_CORE_H
#define I3RT_CORE_H

#include "i3rt.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define I3_ERROR_MAX 1024

struct i3rt_context {
    int n_threads;
    i3rt_backend_kind backend;
    int precision_set;         /* i3rt_context_set_precision was called: it overrides the defaults */
    i3rt_precision precision;
    size_t device_bytes, device_bytes_peak; /* what the context's CUDA backends hold (i3rt_context_device_memory) */
    char error[I3_ERROR_MAX];
};
typedef struct i3rt_context i3_ctx;

/* Wall-clock seconds (monotonic) and the process's CPU seconds (all threads), for stage timings and
 * benchmarks: on a loaded machine CPU time excludes the time spent descheduled. */
double i3_now_seconds(void);
double i3_cpu_seconds(void);

/* Records a formatted message in ctx (if not NULL) and returns status, so that callers can write
 * `return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: ...", path, name);`. */
i3rt_status i3_fail(i3_ctx *ctx, i3rt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Propagates a failure: `I3_TRY(f(...));` returns the status of f if it is not I3RT_OK. */
#define I3_TRY(expr)                                   \
    do {                                               \
        i3rt_status i3_try_status_ = (expr);           \
        if (i3_try_status_ != I3RT_OK) return i3_try_status_; \
    } while (0)

/* Storage types. Activations on the CPU are f32; weights may be stored as f16/bf16 in a file. */
typedef enum { I3_F32 = 0, I3_F16, I3_BF16, I3_I32, I3_U8, I3_I64, I3_DTYPE_COUNT } i3_dtype;

size_t i3_dtype_size(i3_dtype t);
const char *i3_dtype_name(i3_dtype t);

float i3_f16_to_f32(uint16_t h);
uint16_t i3_f32_to_f16(float f);   /* round to nearest even */
float i3_bf16_to_f32(uint16_t h);
uint16_t i3_f32_to_bf16(float f);  /* round to nearest even */

/* Allocation that reports failure through ctx instead of returning NULL silently. */
void *i3_malloc(i3_ctx *ctx, size_t bytes, const char *what);
void *i3_calloc(i3_ctx *ctx, size_t count, size_t size, const char *what);
/* 64-byte aligned allocation (free with free()). */
void *i3_aligned_alloc(i3_ctx *ctx, size_t bytes, const char *what);

/* Overflow-checked products for sizes coming from files. Return false on overflow. */
bool i3_mul_size(size_t a, size_t b, size_t *out);

/* A whole (small, text) file, NUL-terminated, malloc'ed; NULL if it cannot be read. */
char *i3_read_text(const char *path);

#endif /* I3RT_CORE_H */
