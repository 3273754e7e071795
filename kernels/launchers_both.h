/* Both builds' launchers for host C code that picks a device at run time (tests, benchmarks): the
 * emulated build's i3emu_* always, the nvcc build's i3gpu_* when CUDA is built (I3RT_HAVE_CUDA). */
#ifndef I3RT_LAUNCHERS_BOTH_H
#define I3RT_LAUNCHERS_BOTH_H

#define I3_DEV(name) i3emu_##name
#include "launchers.h"
#undef I3_DEV
#ifdef I3RT_HAVE_CUDA
#define I3_DEV(name) i3gpu_##name
#include "launchers.h"
#undef I3_DEV
#endif

#endif /* I3RT_LAUNCHERS_BOTH_H */
