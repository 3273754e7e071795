/* numpy's legacy MT19937 (numpy/random/src/mt19937/mt19937.c, randomkit) and its bounded integers
 * (numpy/random/src/distributions/distributions.c random_bounded_uint64_fill, masked). See np_random.h. */
#include "np_random.h"

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void np_random_seed(np_random *r, uint32_t seed) {
    for (int i = 0; i < NP_MT19937_N; i++) {
        r->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    r->pos = NP_MT19937_N;
}

void np_random_seed_by_array(np_random *r, const uint32_t *init_key, int key_length) {
    np_random_seed(r, 19650218u);
    uint32_t *mt = r->key;
    int i = 1, j = 0;
    for (int k = NP_MT19937_N > key_length ? NP_MT19937_N : key_length; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + init_key[j] + (uint32_t)j;
        i++, j++;
        if (i >= NP_MT19937_N) mt[0] = mt[NP_MT19937_N - 1], i = 1;
        if (j >= key_length) j = 0;
    }
    for (int k = NP_MT19937_N - 1; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= NP_MT19937_N) mt[0] = mt[NP_MT19937_N - 1], i = 1;
    }
    mt[0] = 0x80000000u; /* MSB is 1, assuring a non-zero initial array */
    r->pos = NP_MT19937_N;
}

static void mt_generate(np_random *r) {
    uint32_t *mt = r->key;
    for (int i = 0; i < NP_MT19937_N; i++) {
        uint32_t y = (mt[i] & MT_UPPER) | (mt[(i + 1) % NP_MT19937_N] & MT_LOWER);
        mt[i] = mt[(i + MT_M) % NP_MT19937_N] ^ (y >> 1) ^ (y & 1u ? MT_MATRIX_A : 0u);
    }
    r->pos = 0;
}

uint32_t np_random_uint32(np_random *r) {
    if (r->pos >= NP_MT19937_N) mt_generate(r);
    uint32_t y = r->key[r->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

int64_t np_random_randint(np_random *r, int64_t low, int64_t high) {
    const uint64_t rng = (uint64_t)(high - 1) - (uint64_t)low;
    if (rng == 0) return low;
    uint64_t mask = rng; /* smallest 2^k - 1 >= rng */
    for (int s = 1; s < 64; s <<= 1) mask |= mask >> s;
    uint64_t val;
    if (rng <= 0xffffffffu) {
        do val = np_random_uint32(r) & mask; while (val > rng);
    } else {
        do {
            uint64_t hi = np_random_uint32(r);
            val = ((hi << 32) | np_random_uint32(r)) & mask;
        } while (val > rng);
    }
    return (int64_t)((uint64_t)low + val);
}

int64_t np_random_choice(np_random *r, int64_t n) { return np_random_randint(r, 0, n); }
