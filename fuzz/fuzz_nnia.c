/* libFuzzer target for the NNIA array reader (runtime/nnia.c), what `i3rt serve` runs on every array a
 * client uploads.
 *
 * Feeds arbitrary bytes to i3_nnia_decode (at most 64 MiB decoded). On failure the message must name
 * the input (label "fuzz"); on success the array must be consistent, and encoding it again and decoding
 * that must give back the same bytes.
 * Build: CC=clang cmake -S . -B build-fuzz -DI3RT_FUZZ=ON && ninja -C build-fuzz fuzz_nnia
 * Run:   build-fuzz/fuzz/fuzz_nnia -dict=fuzz/fuzz_nnia.dict -max_total_time=60 CORPUS fuzz/corpus/nnia */
#include "nnia.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) abort();
    i3_nnia_array a;
    i3rt_status st = i3_nnia_decode(ctx, data, size, (size_t)64 << 20, 1, "fuzz", &a);
    if (st != I3RT_OK) {
        if (a.data || strncmp(i3rt_context_error(ctx), "fuzz: ", 6) != 0) abort();
        i3rt_context_free(ctx);
        return 0;
    }
    size_t numel = 1;
    for (int d = 0; d < a.ndim; d++) numel *= (size_t)a.shape[d];
    if (numel != a.numel || a.nbytes != numel * i3_nnia_dtype_size(a.dtype)) abort();
    i3_nnia_options opt = I3_NNIA_OPTIONS_DEFAULT;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    if (i3_nnia_encode(ctx, &a, &opt, &enc, &enc_len) != I3RT_OK) abort();
    i3_nnia_array back;
    if (i3_nnia_decode(ctx, enc, enc_len, 0, 1, "fuzz", &back) != I3RT_OK) abort();
    if (back.nbytes != a.nbytes || memcmp(back.data, a.data, a.nbytes) != 0) abort();
    i3_nnia_free(&back);
    free(enc);
    i3_nnia_free(&a);
    i3rt_context_free(ctx);
    return 0;
}
