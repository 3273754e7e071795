/* libFuzzer target for the weight file reader (runtime/weights.c).
 *
 * Feeds arbitrary bytes to i3_weights_from_memory. On success it touches everything a loader would:
 * every tensor's bytes, the f32 view of every float tensor, name lookup, metadata, the used check. On
 * failure the message must name the input (label "fuzz") - an error without the file name is a bug too.
 * Build: CC=clang cmake -S . -B build-fuzz -DI3RT_FUZZ=ON && ninja -C build-fuzz fuzz_weights
 * Run:   build-fuzz/fuzz/fuzz_weights -dict=fuzz/fuzz_weights.dict -max_total_time=60 CORPUS fuzz/corpus/weights */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) abort();
    i3_weights *w = NULL;
    i3rt_status st = i3_weights_from_memory(ctx, data, size, "fuzz", &w);
    if (st != I3RT_OK) {
        if (w || (st != I3RT_ERR_OUT_OF_MEMORY && strncmp(i3rt_context_error(ctx), "fuzz: ", 6) != 0)) abort();
        i3rt_context_free(ctx);
        return 0;
    }
    volatile uint8_t sink = 0;
    for (int i = 0; i < i3_weights_count(w); i++) {
        const i3_weight_tensor *t = i3_weights_at(w, i);
        if (i3_weights_find(w, t->name) != t) abort();
        for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const uint8_t *)t->data)[k];
        const float *f;
        if (i3_weights_get_f32(ctx, w, t->name, t->ndim, t->shape, &f) == I3RT_OK)
            for (size_t k = 0; k < t->numel; k++) sink ^= (uint8_t)(f[k] > 0);
    }
    (void)sink;
    (void)i3_weights_metadata(w, "format");
    (void)i3_weights_check_all_used(ctx, w);
    i3_weights_free(w);
    i3rt_context_free(ctx);
    return 0;
}
