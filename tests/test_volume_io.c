/* Tests of NIfTI reading and writing (runtime/volume_io.c).
 *
 * Against nibabel: tests/gen_volume_io.py writes files with every integer/float datatype and
 * scl_slope/scl_inter, big-endian, NIfTI-2, 4D channels and oblique qform/sform, plus what nibabel
 * itself reads from them; the C reader must give the same voxels (rel. error <= 1e-6) in [C, D, H, W]
 * order and the same grid, spacing and affine (abs. error <= 1e-5).
 * Round trip: read -> write -> read keeps the voxels exactly and the geometry to float precision.
 * Bad input: truncated (.nii and .nii.gz), not NIfTI, missing, NaN voxels, dims <= 0 or absurd, channel
 * files on different grids; each must fail with a message naming the file, and a failed write leaves no
 * file behind. */
#include "volume_io.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fixtures.h"

static i3_ctx *ctx;
static char fixtures[512];
static char tmpdir[256];

static void setup(void) {
    cr_assert_eq(i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU), I3RT_OK);
    const char *root = getenv("I3RT_FIXTURES");
    cr_assert(root, "I3RT_FIXTURES is not set (run through ctest)");
    snprintf(fixtures, sizeof fixtures, "%s/volume_io", root);
    fx_temp_dir(tmpdir, sizeof tmpdir, "volume_io");
}

static void teardown(void) {
    fx_remove_dir(tmpdir);
    i3rt_context_free(ctx);
}

TestSuite(volume_io, .init = setup, .fini = teardown);

static const char *fixture(const char *name) { return fx_path(fixtures, name); }

static const char *temp(const char *name) { return fx_path(tmpdir, name); }

static int files_in_tmpdir(void) {
    int n = 0;
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* What nibabel saw in a fixture (gen_volume_io.py's NAME.txt and NAME.f32). */
typedef struct {
    int64_t size[4];
    double spacing[3];
    int qform_code, sform_code;
    double affine[12], qform[12];
    float *data;
} expected;

static expected load_expected(const char *name) {
    expected e = {0};
    char p[640];
    snprintf(p, sizeof p, "%s/%s.txt", fixtures, name);
    FILE *f = fopen(p, "r");
    cr_assert(f, "missing fixture %s", p);
    long long s[4];
    cr_assert_eq(fscanf(f, "size %lld %lld %lld %lld\n", &s[0], &s[1], &s[2], &s[3]), 4);
    for (int i = 0; i < 4; i++) e.size[i] = s[i];
    cr_assert_eq(fscanf(f, "spacing %lf %lf %lf\n", &e.spacing[0], &e.spacing[1], &e.spacing[2]), 3);
    cr_assert_eq(fscanf(f, "codes %d %d\n", &e.qform_code, &e.sform_code), 2);
    cr_assert_eq(fscanf(f, "affine"), 0);
    for (int i = 0; i < 12; i++) cr_assert_eq(fscanf(f, "%lf", &e.affine[i]), 1);
    cr_assert_eq(fscanf(f, " qform"), 0);
    for (int i = 0; i < 12; i++) cr_assert_eq(fscanf(f, "%lf", &e.qform[i]), 1);
    fclose(f);
    size_t n = (size_t)(e.size[0] * e.size[1] * e.size[2] * e.size[3]);
    e.data = malloc(n * sizeof(float));
    snprintf(p, sizeof p, "%s/%s.f32", fixtures, name);
    f = fopen(p, "rb");
    cr_assert(f, "missing fixture %s", p);
    cr_assert_eq(fread(e.data, sizeof(float), n, f), n);
    fclose(f);
    return e;
}

/* Compares a volume read by i3rt with nibabel's reading; prints the errors. */
static void check_against_nibabel(const char *name, const char *file) {
    expected e = load_expected(name);
    i3_volume v;
    i3rt_status st = i3_volume_read(ctx, fixture(file), &v);
    cr_assert_eq(st, I3RT_OK, "%s: %s", file, i3rt_context_error(ctx));
    cr_assert(v.w == e.size[0] && v.h == e.size[1] && v.d == e.size[2] && v.channels == e.size[3],
              "%s: [%lld, %lld, %lld, %lld] vs nibabel x y z c = %lld %lld %lld %lld", file, (long long)v.channels,
              (long long)v.d, (long long)v.h, (long long)v.w, (long long)e.size[0], (long long)e.size[1],
              (long long)e.size[2], (long long)e.size[3]);
    double max_abs = 0, max_rel = 0;
    size_t n = (size_t)(v.channels * v.d * v.h * v.w);
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)v.data[i] - e.data[i]);
        max_abs = fmax(max_abs, err);
        max_rel = fmax(max_rel, err / fmax(1e-6, fabs(e.data[i])));
    }
    printf("volume_io %-14s %zu voxels: max abs err %.3g, max rel err %.3g vs nibabel\n", name, n, max_abs, max_rel);
    cr_assert(max_rel <= 1e-6, "%s: voxels differ from nibabel (max rel err %g)", name, max_rel);
    const i3_volume_geometry *g = &v.geometry;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(g->size[i], e.size[i]);
        cr_assert_float_eq(g->spacing[i], e.spacing[i], 1e-5, "%s spacing %d", name, i);
    }
    cr_assert_eq(g->qform_code, e.qform_code);
    cr_assert_eq(g->sform_code, e.sform_code);
    for (int i = 0; i < 12; i++)
        cr_assert_float_eq(g->affine[i / 4][i % 4], e.affine[i], 1e-5, "%s affine[%d][%d]: %g vs %g", name, i / 4,
                           i % 4, g->affine[i / 4][i % 4], e.affine[i]);
    free(e.data);
    i3_volume_free(&v);
}

Test(volume_io, datatypes_with_scaling_match_nibabel) {
    const char *names[] = {"u8", "i8", "i16", "u16", "i32", "f32", "f64"};
    for (int i = 0; i < 7; i++) {
        char name[32], file[48];
        snprintf(name, sizeof name, "dtype_%s", names[i]);
        snprintf(file, sizeof file, "dtype_%s.nii.gz", names[i]);
        check_against_nibabel(name, file);
    }
}

Test(volume_io, big_endian_nifti2_and_4d_match_nibabel) {
    check_against_nibabel("big_endian", "big_endian.nii");
    check_against_nibabel("nifti2", "nifti2.nii.gz");
    check_against_nibabel("channels4d", "channels4d.nii.gz");
}

static void check_same_geometry(const i3_volume_geometry *a, const i3_volume_geometry *b) {
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(a->size[i], b->size[i]);
        cr_assert_float_eq(a->spacing[i], b->spacing[i], 1e-6);
        cr_assert_float_eq(a->quatern[i], b->quatern[i], 1e-6);
        cr_assert_float_eq(a->qoffset[i], b->qoffset[i], 1e-5);
    }
    cr_assert_eq(a->qform_code, b->qform_code);
    cr_assert_eq(a->sform_code, b->sform_code);
    cr_assert_eq(a->qfac, b->qfac);
    cr_assert_eq(a->xyz_units, b->xyz_units);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            cr_assert_float_eq(a->srow[r][c], b->srow[r][c], 1e-5);
            cr_assert_float_eq(a->affine[r][c], b->affine[r][c], 1e-5);
        }
}

Test(volume_io, round_trip_keeps_voxels_and_geometry) {
    const char *inputs[] = {"dtype_i16.nii.gz", "channels4d.nii.gz", "nifti2.nii.gz"};
    const char *outputs[] = {"a.nii.gz", "b.nii", "c.nii.gz"};
    for (int k = 0; k < 3; k++) {
        i3_volume a, b;
        cr_assert_eq(i3_volume_read(ctx, fixture(inputs[k]), &a), I3RT_OK, "%s", i3rt_context_error(ctx));
        const char *out = temp(outputs[k]);
        cr_assert_eq(i3_volume_write_f32(ctx, out, &a.geometry, a.channels, a.data), I3RT_OK, "%s",
                     i3rt_context_error(ctx));
        cr_assert_eq(i3_volume_read(ctx, out, &b), I3RT_OK, "%s", i3rt_context_error(ctx));
        cr_assert(a.channels == b.channels && a.d == b.d && a.h == b.h && a.w == b.w);
        cr_assert_eq(memcmp(a.data, b.data, (size_t)(a.channels * a.d * a.h * a.w) * sizeof(float)), 0,
                     "%s: voxels changed in the round trip", inputs[k]);
        check_same_geometry(&a.geometry, &b.geometry);
        i3_volume_free(&a);
        i3_volume_free(&b);
    }
    cr_assert_eq(files_in_tmpdir(), 3, "temporary files were left behind");
}

Test(volume_io, labels_are_written_as_uint8_or_int16) {
    i3_volume src;
    cr_assert_eq(i3_volume_read(ctx, fixture("dtype_u8.nii.gz"), &src), I3RT_OK);
    size_t n = (size_t)(src.d * src.h * src.w);
    int32_t *labels = malloc(n * sizeof *labels);
    const int32_t max_labels[2] = {3, 1000};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < n; i++) labels[i] = (int32_t)(i * 7 % (size_t)(max_labels[k] + 1));
        const char *out = temp(k == 0 ? "labels_u8.nii.gz" : "labels_i16.nii.gz");
        cr_assert_eq(i3_volume_write_labels(ctx, out, &src.geometry, labels), I3RT_OK, "%s", i3rt_context_error(ctx));
        i3_volume back;
        cr_assert_eq(i3_volume_read(ctx, out, &back), I3RT_OK, "%s", i3rt_context_error(ctx));
        for (size_t i = 0; i < n; i++) cr_assert_eq(back.data[i], (float)labels[i]);
        check_same_geometry(&src.geometry, &back.geometry);
        i3_volume_free(&back);
    }
    labels[0] = -1;
    const char *bad = temp("labels_bad.nii.gz");
    cr_assert_eq(i3_volume_write_labels(ctx, bad, &src.geometry, labels), I3RT_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(i3rt_context_error(ctx), bad));
    cr_assert_eq(files_in_tmpdir(), 2, "a failed write left a file behind");
    free(labels);
    i3_volume_free(&src);
}

Test(volume_io, write_into_missing_directory_fails_cleanly) {
    i3_volume src;
    cr_assert_eq(i3_volume_read(ctx, fixture("dtype_f32.nii.gz"), &src), I3RT_OK);
    const char *out = temp("no/such/dir/out.nii.gz");
    cr_assert_eq(i3_volume_write_f32(ctx, out, &src.geometry, 1, src.data), I3RT_ERR_IO);
    cr_assert(strstr(i3rt_context_error(ctx), out), "%s", i3rt_context_error(ctx));
    i3_volume_free(&src);
}

Test(volume_io, channel_files_are_stacked_in_order) {
    const char *paths[2] = {"chan_0000.nii.gz", "chan_0001.nii.gz"};
    char full[2][640];
    const char *ptrs[2];
    for (int i = 0; i < 2; i++) {
        snprintf(full[i], sizeof full[i], "%s", fixture(paths[i]));
        ptrs[i] = full[i];
    }
    i3_volume v, a, b;
    cr_assert_eq(i3_volume_read_channels(ctx, ptrs, 2, &v), I3RT_OK, "%s", i3rt_context_error(ctx));
    cr_assert_eq(i3_volume_read(ctx, ptrs[0], &a), I3RT_OK);
    cr_assert_eq(i3_volume_read(ctx, ptrs[1], &b), I3RT_OK);
    size_t n = (size_t)(a.d * a.h * a.w);
    cr_assert_eq(v.channels, 2);
    cr_assert_eq(memcmp(v.data, a.data, n * sizeof(float)), 0);
    cr_assert_eq(memcmp(v.data + n, b.data, n * sizeof(float)), 0);
    i3_volume_free(&v);
    i3_volume_free(&a);
    i3_volume_free(&b);
}

Test(volume_io, channel_files_on_different_grids_fail_naming_both) {
    char p0[640], p1[640];
    snprintf(p0, sizeof p0, "%s", fixture("chan_0000.nii.gz"));
    snprintf(p1, sizeof p1, "%s", fixture("shifted_0001.nii.gz"));
    const char *ptrs[2] = {p0, p1};
    i3_volume v;
    cr_assert_eq(i3_volume_read_channels(ctx, ptrs, 2, &v), I3RT_ERR_SHAPE);
    const char *msg = i3rt_context_error(ctx);
    cr_assert(strstr(msg, p0) && strstr(msg, p1) && strstr(msg, "affine"), "%s", msg);
    cr_assert_null(v.data);
}

/* Copies the first `keep` bytes of a file to dst. */
static void truncate_copy(const char *src, const char *dst, long keep) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    cr_assert(in && out);
    for (long i = 0; i < keep; i++) {
        int c = fgetc(in);
        if (c == EOF) break;
        fputc(c, out);
    }
    fclose(in);
    fclose(out);
}

static void expect_read_error(const char *path, i3rt_status status, const char *fragment) {
    i3_volume v;
    i3rt_status st = i3_volume_read(ctx, path, &v);
    const char *msg = i3rt_context_error(ctx);
    cr_assert_eq(st, status, "%s: status %s, expected %s (%s)", path, i3rt_status_name(st), i3rt_status_name(status), msg);
    cr_assert(strstr(msg, path), "message does not name the file: %s", msg);
    cr_assert(strstr(msg, fragment), "message lacks \"%s\": %s", fragment, msg);
    cr_assert_null(v.data);
}

Test(volume_io, truncated_files_fail) {
    struct stat sb;
    /* uncompressed: cut inside the data, and inside the header */
    cr_assert_eq(stat(fixture("big_endian.nii"), &sb), 0);
    const char *cut = temp("cut.nii");
    truncate_copy(fixture("big_endian.nii"), cut, (long)sb.st_size - 10);
    expect_read_error(cut, I3RT_ERR_FORMAT, "truncated");
    truncate_copy(fixture("big_endian.nii"), cut, 200);
    expect_read_error(cut, I3RT_ERR_FORMAT, "truncated NIfTI header");
    /* gzip: every cut point of the compressed stream must fail, never crash */
    const char *gz = fixture("dtype_f64.nii.gz");
    cr_assert_eq(stat(gz, &sb), 0);
    const char *cutgz = temp("cut.nii.gz");
    for (long keep = 0; keep < (long)sb.st_size; keep += 1 + keep / 8) {
        truncate_copy(gz, cutgz, keep);
        i3_volume v;
        cr_assert_neq(i3_volume_read(ctx, cutgz, &v), I3RT_OK, "a cut at %ld of %ld bytes was accepted", keep,
                      (long)sb.st_size);
        cr_assert(strstr(i3rt_context_error(ctx), cutgz), "%s", i3rt_context_error(ctx));
    }
}

Test(volume_io, missing_and_foreign_files_fail) {
    expect_read_error(temp("absent.nii.gz"), I3RT_ERR_IO, "cannot open");
    const char *text = temp("text.nii");
    FILE *f = fopen(text, "w");
    fputs("this is not a NIfTI file, it is text long enough to fill a header or two..........\n", f);
    fclose(f);
    expect_read_error(text, I3RT_ERR_FORMAT, "not a NIfTI file");
    expect_read_error(tmpdir, I3RT_ERR_IO, "not a regular file");
}

Test(volume_io, nan_voxels_are_rejected) {
    expect_read_error(fixture("nan.nii"), I3RT_ERR_FORMAT, "x=2 y=1 z=0");
}

/* Overwrites the big-endian int16 at `offset` of a copy of the big-endian fixture. */
static void write_patched_dims(const char *dst, const int16_t dims[4]) {
    truncate_copy(fixture("big_endian.nii"), dst, 1 << 20);
    FILE *f = fopen(dst, "r+b");
    cr_assert(f);
    fseek(f, 40, SEEK_SET); /* dim[0..3] */
    for (int i = 0; i < 4; i++) {
        unsigned char be[2] = {(unsigned char)((uint16_t)dims[i] >> 8), (unsigned char)dims[i]};
        fwrite(be, 1, 2, f);
    }
    fclose(f);
}

Test(volume_io, bad_dims_fail) {
    const char *p = temp("dims.nii");
    write_patched_dims(p, (int16_t[4]){3, 0, 5, 3});
    expect_read_error(p, I3RT_ERR_FORMAT, "dim[1] = 0");
    write_patched_dims(p, (int16_t[4]){3, 7, -5, 3});
    expect_read_error(p, I3RT_ERR_FORMAT, "dim[2] = -5");
    write_patched_dims(p, (int16_t[4]){9, 7, 5, 3});
    expect_read_error(p, I3RT_ERR_FORMAT, "dim[0] = 9");
    write_patched_dims(p, (int16_t[4]){3, 32000, 32000, 32000});
    expect_read_error(p, I3RT_ERR_FORMAT, "more than the limit");
    write_patched_dims(p, (int16_t[4]){3, 700, 500, 300}); /* plausible dims, far more than the file holds */
    expect_read_error(p, I3RT_ERR_FORMAT, "truncated NIfTI data");
}
