/* Pieces the i3rt subcommands share (cli/common.c). */
#ifndef I3RT_CLI_COMMON_H
#define I3RT_CLI_COMMON_H

#include "i3rt.h"

/* --device NAME: "cpu", "cuda" or "emulated" -> the backend kind; 0 if NAME is none of them. */
int cli_parse_device(const char *name, i3rt_backend_kind *out);

#endif /* I3RT_CLI_COMMON_H */
