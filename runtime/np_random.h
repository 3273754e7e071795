/* numpy's legacy global random generator (numpy.random.RandomState, MT19937), only as far as
 * nnInteractive's refinement box cover draws from it (nnInteractive/utils/bboxes.py
 * random_sampling_fallback: np.random.choice(n)), so that a session seeded like np.random.seed(K) picks
 * the same boxes as the Python session.
 *
 *   np.random.seed(int K)        -> mt19937_seed (Knuth's init_genrand), numpy/random/src/mt19937
 *   np.random.seed(array)        -> mt19937_init_by_array
 *   np.random.randint(lo, hi)    -> legacy bounded draw, dtype int64: rng = hi - 1 - lo; rng == 0 gives
 *                                   lo; else 32-bit words & mask (smallest 2^k - 1 >= rng) until <= rng
 *                                   (masked rejection, random_bounded_uint64_fill with use_masked);
 *                                   ranges above 2^32 - 1 take two words per draw (high word first)
 *   np.random.choice(n)          -> randint(0, n) */
#ifndef I3RT_NP_RANDOM_H
#define I3RT_NP_RANDOM_H

#include <stdint.h>

#define NP_MT19937_N 624

typedef struct {
    uint32_t key[NP_MT19937_N];
    int pos;
} np_random;

void np_random_seed(np_random *r, uint32_t seed);
void np_random_seed_by_array(np_random *r, const uint32_t *init_key, int key_length);
/* the next 32-bit word (genrand_int32) */
uint32_t np_random_uint32(np_random *r);
/* randint(low, high), high > low */
int64_t np_random_randint(np_random *r, int64_t low, int64_t high);
/* choice(n), n > 0: an index in [0, n) */
int64_t np_random_choice(np_random *r, int64_t n);

#endif /* I3RT_NP_RANDOM_H */
