/* Pieces the i3rt subcommands share (cli/common.c). */
#ifndef I3RT_CLI_COMMON_H
#define I3RT_CLI_COMMON_H

#include "core.h"
#include "i3rt.h"
#include "volume_io.h"

#include <stddef.h>

#define CLI_PATH_LEN 4096
/* Exit status of a bad command line (a run that fails exits with 1). */
#define EXIT_USAGE 2

/* "i3rt COMMAND: " + fmt (with arg) and the first line of help on stderr; returns EXIT_USAGE. */
int cli_usage(const char *command, const char *help, const char *fmt, const char *arg);
/* The start of a subcommand that takes a command first (i3rt i3deep, i3rt snc): argv[0] must be one of the
 * n commands, or -h / --help (help printed on stdout). Returns -1 to go on with argv[0] as the command, 0
 * after the help, EXIT_USAGE (with a message listing the commands) otherwise. */
int cli_command(const char *subcommand, const char *help, int argc, char **argv, const char *const *commands, int n);
/* s as a whole number in [lo, hi] into *out; 0 (out untouched) if s is NULL, empty, not a number or outside. */
int cli_parse_number(const char *s, double lo, double hi, double *out);

/* One evaluation case: a name, its image and its ground truth (label NIfTI). */
typedef struct {
    char name[256], image[CLI_PATH_LEN], truth[CLI_PATH_LEN];
} cli_case;

/* --device NAME: "cpu", "cuda" or "emulated" -> the backend kind; 0 if NAME is none of them. */
int cli_parse_device(const char *name, i3rt_backend_kind *out);
/* --precision NAME: "f32", "tf32", "f16" or "bf16" -> its i3rt_precision; 0 if NAME is none of them. */
int cli_parse_precision(const char *name, int *out);
/* A context with n_threads on the backend, its convolutions in the precision (an i3rt_precision, or -1 for
 * the backend's default: f32, or I3RT_CUDA_CONV's); NULL after a message on stderr ("i3rt COMMAND: ...") if
 * the backend does not run that precision. */
i3rt_context *cli_context_create(const char *command, int n_threads, i3rt_backend_kind backend, int precision);

/* LIST.tsv: NAME<TAB>IMAGE<TAB>TRUTH per line; empty lines, '#' comments and a "name" header skipped;
 * relative paths are relative to the list's folder. *out is malloc'ed (free it). */
i3rt_status cli_read_case_list(i3_ctx *ctx, const char *path, cli_case **out, int *n_out);
/* "dir/case_0000.nii.gz" -> "case_0000". */
void cli_base_name(const char *path, char *out, size_t cap);
/* mkdir -p: the folder and any missing parents; 0 (with a message naming the command) on failure. */
int cli_make_dir(const char *command, const char *dir);

/* A label volume (whole numbers within +-32767, one channel) on the image's grid and geometry; *out is
 * malloc'ed. Errors name the file and what is wrong. */
i3rt_status cli_read_labels(i3_ctx *ctx, const char *path, const i3_volume *image, int32_t **out);

#endif /* I3RT_CLI_COMMON_H */
