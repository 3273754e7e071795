/* Core helpers: status names, context errors, f16/bf16 conversion (exhaustive against the
 * hardware-independent definition: every half value round-trips, rounding is to nearest even). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "core.h"

Test(context, rejects_bad_arguments_and_keeps_messages) {
    i3rt_context *ctx = NULL;
    cr_assert_eq(i3rt_context_create(&ctx, 0, I3RT_BACKEND_CPU), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert_eq(i3rt_context_create(&ctx, 2, (i3rt_backend_kind)7), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert_eq(i3rt_context_create(&ctx, 2, I3RT_BACKEND_CPU), I3RT_OK);
    cr_assert_str_empty(i3rt_context_error(ctx));
    cr_assert_eq(i3_fail(ctx, I3RT_ERR_FORMAT, "%s: tensor %s: bad", "a.safetensors", "w"), I3RT_ERR_FORMAT);
    cr_assert_str_eq(i3rt_context_error(ctx), "a.safetensors: tensor w: bad");
    cr_assert_str_eq(i3rt_status_name(I3RT_ERR_SHAPE), "I3RT_ERR_SHAPE");
    size_t in_use = 1, peak = 1;
    cr_assert_eq(i3rt_context_device_memory(NULL, &in_use, &peak), I3RT_ERR_INVALID_ARGUMENT);
    i3rt_context_free(ctx);
}

Test(f16, every_half_round_trips) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = i3_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            cr_assert(isnan(i3_f16_to_f32(i3_f32_to_f16(f))));
            continue;
        }
        cr_assert_eq(i3_f32_to_f16(f), h, "half 0x%04x -> %g -> 0x%04x", h, f, i3_f32_to_f16(f));
    }
}

Test(f16, rounds_to_nearest_even) {
    /* 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties go to the even one, 1 */
    cr_assert_eq(i3_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
    cr_assert_eq(i3_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    cr_assert_eq(i3_f32_to_f16(65520.0f), 0x7c00, "65520 rounds to infinity");
    cr_assert_eq(i3_f32_to_f16(65519.0f), 0x7bff);
    cr_assert_eq(i3_f32_to_f16(ldexpf(1, -25)), 0x0000, "half the smallest subnormal ties to zero");
    cr_assert_eq(i3_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    cr_assert_eq(i3_f32_to_f16(-ldexpf(1, -24)), 0x8001);
}

Test(bf16, round_trips_and_rounds_to_nearest_even) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = i3_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        cr_assert_eq(i3_f32_to_bf16(f), h);
    }
    cr_assert_eq(i3_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    cr_assert_eq(i3_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
}
