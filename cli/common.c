#include "common.h" /* cli/common.h */

#include <string.h>

int cli_parse_device(const char *name, i3rt_backend_kind *out) {
    if (!name) return 0;
    if (strcmp(name, "cpu") == 0) *out = I3RT_BACKEND_CPU;
    else if (strcmp(name, "cuda") == 0) *out = I3RT_BACKEND_CUDA;
    else if (strcmp(name, "emulated") == 0) *out = I3RT_BACKEND_EMULATED;
    else return 0;
    return 1;
}
