#include "common.h" /* cli/common.h */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cli_usage(const char *command, const char *help, const char *fmt, const char *arg) {
    fprintf(stderr, "i3rt %s: ", command);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%.*s (--help for more)\n", (int)strcspn(help, "\n"), help);
    return EXIT_USAGE;
}

int cli_command(const char *subcommand, const char *help, int argc, char **argv, const char *const *commands, int n) {
    char list[512] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", commands[i]);
    if (argc < 1) return cli_usage(subcommand, help, "a command is needed: %s", list);
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        fputs(help, stdout);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (strcmp(argv[0], commands[i]) == 0) return -1;
    fprintf(stderr, "i3rt %s: unknown command '%s' (%s)\n%.*s (--help for more)\n", subcommand, argv[0], list,
            (int)strcspn(help, "\n"), help);
    return EXIT_USAGE;
}

int cli_parse_number(const char *s, double lo, double hi, double *out) {
    char *end;
    const double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || *end || !(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

int cli_parse_device(const char *name, i3rt_backend_kind *out) {
    if (!name) return 0;
    if (strcmp(name, "cpu") == 0) *out = I3RT_BACKEND_CPU;
    else if (strcmp(name, "cuda") == 0) *out = I3RT_BACKEND_CUDA;
    else if (strcmp(name, "emulated") == 0) *out = I3RT_BACKEND_EMULATED;
    else return 0;
    return 1;
}

int cli_parse_precision(const char *name, int *out) {
    static const char *const names[] = {[I3RT_PRECISION_F32] = "f32", [I3RT_PRECISION_F16] = "f16",
                                        [I3RT_PRECISION_BF16] = "bf16", [I3RT_PRECISION_TF32] = "tf32"};
    for (int i = 0; name && i < (int)(sizeof names / sizeof *names); i++)
        if (strcmp(name, names[i]) == 0) {
            *out = i;
            return 1;
        }
    return 0;
}

i3rt_context *cli_context_create(const char *command, int n_threads, i3rt_backend_kind backend, int precision) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, n_threads, backend) != I3RT_OK) {
        fprintf(stderr, "i3rt %s: cannot create a context%s\n", command,
                backend == I3RT_BACKEND_CUDA ? " on the CUDA backend" : "");
        return NULL;
    }
    if (precision >= 0 && i3rt_context_set_precision(ctx, (i3rt_precision)precision) != I3RT_OK) {
        fprintf(stderr, "i3rt %s: --precision: %s\n", command, i3rt_context_error(ctx));
        i3rt_context_free(ctx);
        return NULL;
    }
    return ctx;
}

i3rt_status cli_read_case_list(i3_ctx *ctx, const char *path, cli_case **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "r");
    if (!f) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open the case list", path);
    const char *slash = strrchr(path, '/');
    const int dir_len = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    char line[3 * CLI_PATH_LEN];
    i3rt_status st = I3RT_OK;
    cli_case *cases = NULL;
    int n = 0;
    for (int number = 1; st == I3RT_OK && fgets(line, sizeof line, f); number++) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#' || strncmp(line, "name\t", 5) == 0) continue;
        char *fields[3], *rest = line;
        int k = 0;
        for (; k < 3 && rest; k++) {
            fields[k] = rest;
            rest = strchr(rest, '\t');
            if (rest) *rest++ = '\0';
        }
        if (k != 3 || rest || !fields[0][0] || !fields[1][0] || !fields[2][0]) {
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: line %d: expected NAME<TAB>IMAGE<TAB>TRUTH", path, number);
            break;
        }
        cli_case *grown = realloc(cases, (size_t)(n + 1) * sizeof *cases);
        if (!grown) {
            st = i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            break;
        }
        cases = grown;
        cli_case *e = &cases[n++];
        int too_long = snprintf(e->name, sizeof e->name, "%s", fields[0]) >= (int)sizeof e->name;
        char *targets[2] = {e->image, e->truth};
        for (int j = 0; j < 2; j++) {
            const char *p = fields[1 + j];
            const int len = p[0] == '/' ? snprintf(targets[j], CLI_PATH_LEN, "%s", p)
                                        : snprintf(targets[j], CLI_PATH_LEN, "%.*s/%s", dir_len, dir, p);
            too_long |= len >= CLI_PATH_LEN;
        }
        if (too_long) st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: line %d: a name or path is too long", path, number);
    }
    if (st == I3RT_OK && ferror(f)) st = i3_fail(ctx, I3RT_ERR_IO, "%s: read error", path);
    if (st == I3RT_OK && n == 0) st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: no cases", path);
    fclose(f);
    if (st != I3RT_OK) {
        free(cases);
        return st;
    }
    *out = cases;
    *n_out = n;
    return I3RT_OK;
}

void cli_base_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    char *dot = strstr(out, ".nii");
    if (dot) *dot = '\0';
}

int cli_make_dir(const char *command, const char *dir) {
    char path[CLI_PATH_LEN];
    struct stat sb;
    if (snprintf(path, sizeof path, "%s", dir) < (int)sizeof path)
        for (char *p = path + 1;; p++)
            if (*p == '/' || *p == '\0') {
                const char end = *p;
                *p = '\0';
                if (mkdir(path, 0755) != 0 && (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))) break;
                if (!end) return 1;
                *p = '/';
            }
    fprintf(stderr, "i3rt %s: cannot make the output directory %s\n", command, dir);
    return 0;
}

i3rt_status cli_read_labels(i3_ctx *ctx, const char *path, const i3_volume *image, int32_t **out) {
    i3_volume v;
    I3_TRY(i3_volume_read(ctx, path, &v));
    i3rt_status st = i3_volume_geometry_check(ctx, &image->geometry, "the image", &v.geometry, path);
    if (st == I3RT_OK && v.channels != 1)
        st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s: %lld channels, a label map has one", path, (long long)v.channels);
    const int64_t n = v.d * v.h * v.w;
    int32_t *labels = st == I3RT_OK ? i3_malloc(ctx, (size_t)n * sizeof *labels, path) : NULL;
    if (st == I3RT_OK && !labels) st = I3RT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n && st == I3RT_OK; i++) {
        if (v.data[i] != nearbyintf(v.data[i]) || fabsf(v.data[i]) > 32767.0f)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s: voxel %lld holds %g, not a label", path, (long long)i, v.data[i]);
        else
            labels[i] = (int32_t)v.data[i];
    }
    i3_volume_free(&v);
    if (st != I3RT_OK) free(labels);
    *out = st == I3RT_OK ? labels : NULL;
    return st;
}
