/* Launchers of kernels/simt_selftest.cu (see launchers.h for the I3_DEV naming; no include guard
 * for the same reason). Each returns a cudaError_t as int and takes host arrays. */
#include <stdint.h>

#ifndef SELFTEST_BLOCK
#define SELFTEST_BLOCK 96   /* three warps */
#define SELFTEST_SHUFFLES 8
#define SELFTEST_VOTES 5
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* neighbour [2 * SELFTEST_BLOCK], block_sum [2]: two blocks */
int I3_DEV(selftest_barrier)(int *neighbour, int *block_sum);
int I3_DEV(selftest_shuffles)(int *out);      /* [SELFTEST_BLOCK * SELFTEST_SHUFFLES] */
int I3_DEV(selftest_votes)(unsigned *out);    /* [SELFTEST_BLOCK * SELFTEST_VOTES] */
int I3_DEV(selftest_atomics)(int blocks, int *counter, float *sum, int *max_by_cas);
int I3_DEV(selftest_racy)(int *out);          /* [SELFTEST_BLOCK]: a block sum missing its barrier */
int I3_DEV(selftest_divergent_barrier)(void); /* expected to fail on the emulator */
int I3_DEV(selftest_deadlock)(void);           /* emulator only: hangs on a GPU */
int I3_DEV(selftest_mma)(const uint16_t *a, const uint16_t *b, const float *c, float *d, int bf16, int use_ldmatrix);
/* D [16x8] = A [16x8] B [8x8] + C with mma m16n8k8 .tf32 (inputs rounded to TF32 on the device). */
int I3_DEV(selftest_mma_tf32)(const float *a, const float *b, const float *c, float *d);

#ifdef __cplusplus
}
#endif
