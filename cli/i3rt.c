/* The i3rt command-line tool.
 *
 *   i3rt info MODEL [--size D H W]                  the network: stages, shapes, parameters, memory
 *   i3rt forward MODEL IN... OUT [--threads N] [--argmax]
 *                                                   one forward pass of a whole volume on the CPU
 *   i3rt version
 *
 * `forward` reads one NIfTI file per input channel (nnU-Net's case_0000.nii.gz, case_0001.nii.gz, ...)
 * or one 4D file, zero-pads the volume up to a multiple of the network's total stride, runs the network
 * once (2D networks: once per z slice), crops the logits back and writes them as a 4D float32 NIfTI
 * (4th dim = classes) or, with --argmax, the label map, with the input's geometry. This is a raw
 * network forward: no nnU-Net preprocessing (normalization, resampling) and no sliding window. */
#include "i3rt.h"
#include "ops.h"
#include "volume_io.h"
#include "common.h" /* cli/common.h: EXIT_USAGE */
#include "ensemble.h" /* cli/ensemble.h */
#include "predict.h" /* cli/predict.h */
#include "i3deep.h" /* cli/i3deep.h */
#include "serve.h" /* cli/serve.h */
#include "snc.h" /* cli/snc.h */

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static const char *MAIN_HELP =
    "i3rt " I3RT_VERSION ": inference engine for interactive 3D medical image segmentation\n"
    "\n"
    "usage: i3rt COMMAND [ARGS] (i3rt COMMAND --help for more)\n"
    "\n"
    "commands:\n"
    "  info MODEL [--size D H W]          print the network: stages, shapes, parameters, planned memory\n"
    "  forward MODEL IN... OUT [options]  one forward pass of a NIfTI volume on the CPU\n"
    "  predict -i IN -o OUT -m MODELDIR   nnU-Net v2 prediction of whole cases (i3rt predict --help)\n"
    "  ensemble -i DIR DIR... -o OUT      nnUNetv2_ensemble of predict's probabilities (i3rt ensemble --help)\n"
    "  i3deep COMMAND ARGS                i3Deep: recommend, refine-input, refine, simulate, evaluate (i3rt i3deep --help)\n"
    "  snc COMMAND ARGS                   Slice-and-Conquer: click, propagate, recommend, simulate, evaluate (i3rt snc --help)\n"
    "  serve --model DIR [options]        nnInteractive's HTTP server protocol for its client and viewers (i3rt serve --help)\n"
    "  version                            print the version\n"
    "\n"
    "MODEL is an i3rt weight file (tools/convert_pt/convert_nnunet.py writes them from nnU-Net models).\n";

static const char *INFO_HELP =
    "usage: i3rt info MODEL [--size D H W]\n"
    "\n"
    "Loads MODEL and prints the network class, dimensions, input channels, classes, its stages, every\n"
    "node's output shape at the configuration's patch size (or at D x H W with --size), the number of\n"
    "parameters and the planned peak activation memory.\n"
    "\n"
    "options:\n"
    "  --size D H W   input size to plan for (each a multiple of the network's total stride)\n"
    "  -h, --help     this help\n";

static const char *FORWARD_HELP =
    "usage: i3rt forward MODEL IN [IN...] OUT [--threads N] [--argmax]\n"
    "\n"
    "Runs MODEL once on a whole volume on the CPU and writes the result with the input's geometry.\n"
    "IN: one NIfTI file (.nii or .nii.gz) per input channel, in order (nnU-Net's case_0000, case_0001,\n"
    "...), or one 4D file whose 4th dimension is the channels; all on the same grid.\n"
    "OUT: .nii or .nii.gz; logits as a 4D float32 volume (4th dimension = classes), or with --argmax the\n"
    "label map (uint8, or int16 above 255 classes).\n"
    "Axes: NIfTI x, y, z are the network's W, H, D (no reorientation). The volume is zero-padded to a\n"
    "multiple of the network's total stride and the logits cropped back. The intensities are used as\n"
    "they are: no nnU-Net normalization, resampling or sliding window.\n"
    "\n"
    "options:\n"
    "  --threads N    CPU threads (default 1)\n"
    "  --argmax       write the label map instead of the logits\n"
    "  -h, --help     this help\n";

static bool is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

static int usage_error(const char *help, const char *fmt, const char *arg) {
    fprintf(stderr, "i3rt: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%.*s (--help for more)\n", (int)strcspn(help, "\n"), help);
    return EXIT_USAGE;
}

/* Parses a positive integer option value; false if it is not one. */
static bool parse_positive(const char *s, int64_t max, int64_t *out) {
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 1 || v > max) return false;
    *out = v;
    return true;
}

static int fail(i3rt_context *ctx, const char *command) {
    fprintf(stderr, "i3rt %s: %s\n", command, i3rt_context_error(ctx));
    return EXIT_FAILURE;
}

/* ---- info ------------------------------------------------------------------------------------ */

static int cmd_info(int argc, char **argv) {
    const char *model_path = NULL;
    int64_t size[3];
    bool has_size = false;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(INFO_HELP, stdout);
            return EXIT_SUCCESS;
        } else if (strcmp(argv[i], "--size") == 0) {
            if (i + 3 >= argc) return usage_error(INFO_HELP, "%s needs three sizes D H W", argv[i]);
            for (int a = 0; a < 3; a++)
                if (!parse_positive(argv[i + 1 + a], 1 << 16, &size[a]))
                    return usage_error(INFO_HELP, "--size: '%s' is not a positive size", argv[i + 1 + a]);
            has_size = true;
            i += 3;
        } else if (argv[i][0] == '-') {
            return usage_error(INFO_HELP, "info: unknown option %s", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return usage_error(INFO_HELP, "info: unexpected argument %s", argv[i]);
        }
    }
    if (!model_path) return usage_error(INFO_HELP, "info: %s", "no MODEL given");

    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) {
        fprintf(stderr, "i3rt info: cannot create a context\n");
        return EXIT_FAILURE;
    }
    i3rt_model *model = NULL;
    int rc = EXIT_FAILURE;
    if (i3rt_model_load(ctx, model_path, &model) != I3RT_OK) {
        rc = fail(ctx, "info");
    } else {
        size_t needed = i3rt_model_describe(model, has_size ? size : NULL, NULL, 0);
        char *text = malloc(needed + 1);
        if (text) {
            i3rt_model_describe(model, has_size ? size : NULL, text, needed + 1);
            fputs(text, stdout);
            free(text);
        }
        /* describe prints the planning error inside its text; the exit status says it too */
        size_t peak;
        if (has_size && i3rt_model_plan(model, size, &peak) != I3RT_OK) rc = fail(ctx, "info");
        else rc = text ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    i3rt_model_free(model);
    i3rt_context_free(ctx);
    return rc;
}

/* ---- forward --------------------------------------------------------------------------------- */

/* Copies z slices [z0, z0 + dz) of src [c, d, h, w] into the corner of dst [c, pd, ph, pw] (zeroed
 * elsewhere), or back (to_src: dst's corner into src's slices), for padding inputs and cropping logits. */
static void copy_box(float *src, int64_t c, int64_t d, int64_t h, int64_t w, int64_t z0, int64_t dz, float *dst,
                     const int64_t padded[3], bool to_src) {
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t z = 0; z < dz; z++)
            for (int64_t y = 0; y < h; y++) {
                float *s = src + ((ch * d + z0 + z) * h + y) * w;
                float *p = dst + ((ch * padded[0] + z) * padded[1] + y) * padded[2];
                if (to_src) memcpy(s, p, (size_t)w * sizeof(float));
                else memcpy(p, s, (size_t)w * sizeof(float));
            }
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static bool has_nifti_suffix(const char *path) {
    size_t n = strlen(path);
    return (n > 4 && strcmp(path + n - 4, ".nii") == 0) || (n > 7 && strcmp(path + n - 7, ".nii.gz") == 0);
}

typedef struct {
    const char *model_path, *out_path;
    const char **inputs;
    int n_inputs;
    int64_t threads;
    bool argmax;
} forward_args;

/* Runs the network over the volume: the whole padded volume at once (3D) or slice by slice (2D). */
static i3rt_status run_network(i3rt_context *ctx, i3rt_model *model, const i3rt_model_info *info,
                               const i3_volume *vol, float *logits, size_t *peak) {
    const int64_t *stride = info->total_stride;
    int64_t slab = info->dims == 2 ? 1 : vol->d;
    int64_t padded[3] = {info->dims == 2 ? 1 : round_up(vol->d, stride[0]), round_up(vol->h, stride[1]),
                         round_up(vol->w, stride[2])};
    I3_TRY(i3rt_model_plan(model, padded, peak));
    size_t in_count = (size_t)(vol->channels * padded[0] * padded[1] * padded[2]);
    size_t out_count = (size_t)(info->num_classes * padded[0] * padded[1] * padded[2]);
    float *in = i3_calloc(ctx, in_count, sizeof(float), "the padded input");
    float *out = i3_malloc(ctx, out_count * sizeof(float), "the padded logits");
    i3rt_status st = in && out ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    printf("forward     input [%lld, %lld, %lld, %lld] padded to [%lld, %lld, %lld, %lld]%s, planned peak %.1f MiB\n",
           (long long)vol->channels, (long long)vol->d, (long long)vol->h, (long long)vol->w, (long long)vol->channels,
           (long long)padded[0], (long long)padded[1], (long long)padded[2], info->dims == 2 ? " per slice" : "",
           (double)*peak / (1024.0 * 1024.0));
    for (int64_t z0 = 0; z0 < vol->d && st == I3RT_OK; z0 += slab) {
        copy_box(vol->data, vol->channels, vol->d, vol->h, vol->w, z0, slab, in, padded, false);
        st = i3rt_model_forward(model, in, padded, out);
        if (st == I3RT_OK)
            copy_box(logits, info->num_classes, vol->d, vol->h, vol->w, z0, slab, out, padded, true);
    }
    free(in);
    free(out);
    return st;
}

static int forward_run(const forward_args *a) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, (int)a->threads, I3RT_BACKEND_CPU) != I3RT_OK) {
        fprintf(stderr, "i3rt forward: cannot create a context with %lld threads\n", (long long)a->threads);
        return EXIT_FAILURE;
    }
    i3rt_model *model = NULL;
    i3rt_model_info info;
    i3_volume vol = {0};
    float *logits = NULL;
    int32_t *labels = NULL;
    size_t peak = 0;
    double t0 = i3_now_seconds(), t_forward = 0;
    i3rt_status st = i3rt_model_load(ctx, a->model_path, &model);
    if (st == I3RT_OK) st = i3rt_model_get_info(model, &info);
    if (st == I3RT_OK) st = i3_volume_read_channels(ctx, a->inputs, a->n_inputs, &vol);
    if (st == I3RT_OK && vol.channels != info.in_channels)
        st = i3_fail(ctx, I3RT_ERR_SHAPE, "%s%s: %lld channel(s), but the network in %s takes %d", a->inputs[0],
                     a->n_inputs > 1 ? " ..." : "", (long long)vol.channels, a->model_path, info.in_channels);
    size_t voxels = (size_t)(vol.d * vol.h * vol.w);
    if (st == I3RT_OK) {
        logits = i3_malloc(ctx, (size_t)info.num_classes * voxels * sizeof(float), "the logits");
        st = logits ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
    }
    if (st == I3RT_OK) {
        double t1 = i3_now_seconds();
        st = run_network(ctx, model, &info, &vol, logits, &peak);
        t_forward = i3_now_seconds() - t1;
    }
    if (st == I3RT_OK && a->argmax) {
        labels = i3_malloc(ctx, voxels * sizeof(int32_t), "the label map");
        st = labels ? I3RT_OK : I3RT_ERR_OUT_OF_MEMORY;
        if (labels) {
            i3_cpu_softmax_uncertainty(logits, 1, info.num_classes, (int64_t)voxels, NULL, NULL, NULL, labels,
                                       (int)a->threads);
            st = i3_volume_write_labels(ctx, a->out_path, &vol.geometry, labels);
        }
    } else if (st == I3RT_OK) {
        st = i3_volume_write_f32(ctx, a->out_path, &vol.geometry, info.num_classes, logits);
    }
    int rc = EXIT_SUCCESS;
    if (st != I3RT_OK) {
        rc = fail(ctx, "forward");
    } else {
        printf("network     %s %dD, %d -> %d channels, %lld threads\n", info.network, info.dims, info.in_channels,
               info.num_classes, (long long)a->threads);
        printf("time        forward %.3f s, total %.3f s\n", t_forward, i3_now_seconds() - t0);
        printf("wrote       %s (%s)\n", a->out_path, a->argmax ? "label map" : "logits, float32");
    }
    free(labels);
    free(logits);
    i3_volume_free(&vol);
    i3rt_model_free(model);
    i3rt_context_free(ctx);
    return rc;
}

static int cmd_forward(int argc, char **argv) {
    forward_args a = {.threads = 1};
    const char **positional = calloc((size_t)argc + 1, sizeof *positional);
    int n_positional = 0;
    int rc = -1;
    for (int i = 0; i < argc && rc < 0; i++) {
        if (is_help(argv[i])) {
            fputs(FORWARD_HELP, stdout);
            rc = EXIT_SUCCESS;
        } else if (strcmp(argv[i], "--threads") == 0) {
            if (i + 1 >= argc || !parse_positive(argv[i + 1], 1024, &a.threads))
                rc = usage_error(FORWARD_HELP, "--threads needs a number of threads (1..1024), got '%s'",
                                 i + 1 < argc ? argv[i + 1] : "");
            i++;
        } else if (strcmp(argv[i], "--argmax") == 0) {
            a.argmax = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            rc = usage_error(FORWARD_HELP, "forward: unknown option %s", argv[i]);
        } else {
            positional[n_positional++] = argv[i];
        }
    }
    if (rc < 0 && n_positional < 3)
        rc = usage_error(FORWARD_HELP, "forward: %s", "needs MODEL, at least one input and an output");
    if (rc < 0 && !has_nifti_suffix(positional[n_positional - 1]))
        rc = usage_error(FORWARD_HELP, "forward: the output %s must end in .nii or .nii.gz",
                         positional[n_positional - 1]);
    if (rc < 0) {
        a.model_path = positional[0];
        a.inputs = positional + 1;
        a.n_inputs = n_positional - 2;
        a.out_path = positional[n_positional - 1];
        rc = forward_run(&a);
    }
    free(positional);
    return rc;
}

/* i3Deep's steps allocate and free volume-sized buffers (hundreds of MB) one after the other; glibc serves
 * each with a fresh mmap, whose pages the kernel zeroes again on first touch. Keeping freed memory in the
 * heap for the next step took the expert's waiting time on a 452 x 542 x 121 volume from 3.5 to 2.6 s
 * (2 CPU threads) for a peak RSS of 3.2 GB instead of 2.7 GB (docs/performance.md); a process-wide
 * choice, so the tool makes it, for this command only (a library leaves it to its caller). */
static void keep_freed_memory(void) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(MAIN_HELP, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (is_help(cmd) || strcmp(cmd, "help") == 0) {
        fputs(MAIN_HELP, stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("i3rt %s\n", I3RT_VERSION);
        return EXIT_SUCCESS;
    }
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(cmd, "forward") == 0) return cmd_forward(argc - 2, argv + 2);
    if (strcmp(cmd, "i3deep") == 0) {
        keep_freed_memory();
        return cli_i3deep(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "predict") == 0) return cli_predict(argc - 2, argv + 2);
    if (strcmp(cmd, "ensemble") == 0) return cli_ensemble(argc - 2, argv + 2);
    if (strcmp(cmd, "serve") == 0) return cli_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "snc") == 0) return cli_snc(argc - 2, argv + 2);
    fprintf(stderr, "i3rt: unknown command '%s'\n\n%s", cmd, MAIN_HELP);
    return EXIT_USAGE;
}
