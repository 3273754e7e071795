/* NIfTI volumes <-> float32 [C, D, H, W] arrays (see volume_io.h for axes, validation and the atomic
 * write). nifticlib supplies the header structs, byte swapping and the header -> qform/sform
 * conversion; the bytes themselves are read here (through zlib, which reads .nii and .nii.gz alike)
 * so that every length is checked against the header before it is trusted. */
#include "volume_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti2_io.h>
#include <zlib.h>

#define NIFTI1_HEADER_BYTES 348
#define NIFTI2_HEADER_BYTES 540
#define NIFTI_MAX_HEADER_BYTES 544  /* NIfTI-2 header + the 4-byte extension flag */
#define VOLUME_MAX_EXTENT 65535     /* per axis; larger is no medical volume */

/* What the header says about the data: where it is, how it is stored, and the geometry. */
typedef struct {
    int64_t dim[4];        /* x, y, z, channels */
    int datatype, nbyper;
    int swap;              /* the file's byte order differs from this machine's */
    int64_t vox_offset;
    size_t data_bytes;
    double scl_slope, scl_inter;
    i3_volume_geometry geometry;
} nifti_layout;

static int32_t swap32(int32_t v) { return (int32_t)__builtin_bswap32((uint32_t)v); }

static bool datatype_supported(int datatype) {
    switch (datatype) {
    case DT_UINT8: case DT_INT8: case DT_INT16: case DT_UINT16: case DT_INT32: case DT_UINT32:
    case DT_INT64: case DT_UINT64: case DT_FLOAT32: case DT_FLOAT64:
        return true;
    default:
        return false;
    }
}

static void geometry_from_nim(const nifti_image *nim, i3_volume_geometry *g) {
    memset(g, 0, sizeof *g);
    g->size[0] = nim->nx;
    g->size[1] = nim->ny;
    g->size[2] = nim->nz;
    g->spacing[0] = nim->dx;
    g->spacing[1] = nim->dy;
    g->spacing[2] = nim->dz;
    g->xyz_units = nim->xyz_units;
    g->qform_code = nim->qform_code;
    g->quatern[0] = nim->quatern_b;
    g->quatern[1] = nim->quatern_c;
    g->quatern[2] = nim->quatern_d;
    g->qoffset[0] = nim->qoffset_x;
    g->qoffset[1] = nim->qoffset_y;
    g->qoffset[2] = nim->qoffset_z;
    g->qfac = nim->qfac;
    g->sform_code = nim->sform_code;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) g->srow[r][c] = nim->sto_xyz.m[r][c];
    const nifti_dmat44 *a = nim->sform_code > 0 ? &nim->sto_xyz : &nim->qto_xyz;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) g->affine[r][c] = a->m[r][c];
}

/* Validates the raw header fields shared by NIfTI-1 and -2 (already in this machine's byte order). */
static i3rt_status check_header_fields(i3_ctx *ctx, const char *label, const int64_t dim[8], int datatype,
                                       double vox_offset, int64_t header_bytes, nifti_layout *out) {
    if (dim[0] < 1 || dim[0] > 7)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: NIfTI dim[0] = %lld (must be 1..7)", label, (long long)dim[0]);
    for (int i = 1; i <= dim[0]; i++)
        if (dim[i] < 1 || dim[i] > VOLUME_MAX_EXTENT)
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: NIfTI dim[%d] = %lld (must be 1..%d)", label, i,
                           (long long)dim[i], VOLUME_MAX_EXTENT);
    for (int i = 5; i <= dim[0]; i++)
        if (dim[i] != 1)
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                           "%s: NIfTI dim[%d] = %lld: only 3D volumes with an optional 4th channel "
                           "dimension are supported", label, i, (long long)dim[i]);
    for (int i = 0; i < 4; i++) out->dim[i] = i + 1 <= dim[0] ? dim[i + 1] : 1;
    int64_t voxels = out->dim[0] * out->dim[1] * out->dim[2] * out->dim[3];  /* <= 65535^4 < 2^64 */
    if (voxels > I3_VOLUME_MAX_VOXELS)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: %lld x %lld x %lld x %lld voxels is more than the limit of %lld",
                       label, (long long)out->dim[0], (long long)out->dim[1], (long long)out->dim[2],
                       (long long)out->dim[3], (long long)I3_VOLUME_MAX_VOXELS);
    if (!datatype_supported(datatype))
        return i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                       "%s: NIfTI datatype %d (%s) is not supported (integers and float32/64 are)", label,
                       datatype, nifti_datatype_string(datatype));
    int swapsize;
    out->datatype = datatype;
    nifti_datatype_sizes(datatype, &out->nbyper, &swapsize);
    if (!(vox_offset >= (double)header_bytes && vox_offset < 1e12) || vox_offset != floor(vox_offset))
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: NIfTI vox_offset %g is not a byte offset past the header",
                       label, vox_offset);
    out->vox_offset = (int64_t)vox_offset;
    out->data_bytes = (size_t)voxels * (size_t)out->nbyper;
    return I3RT_OK;
}

/* Parses and validates the first n bytes of a file (at least the whole header, if the file has one). */
static i3rt_status parse_header(i3_ctx *ctx, const char *label, const unsigned char *bytes, size_t n,
                                nifti_layout *out) {
    memset(out, 0, sizeof *out);
    int32_t sizeof_hdr = 0;
    if (n >= 4) memcpy(&sizeof_hdr, bytes, 4);
    int swap = sizeof_hdr == swap32(NIFTI1_HEADER_BYTES) || sizeof_hdr == swap32(NIFTI2_HEADER_BYTES);
    if (swap) sizeof_hdr = swap32(sizeof_hdr);
    if (sizeof_hdr != NIFTI1_HEADER_BYTES && sizeof_hdr != NIFTI2_HEADER_BYTES)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: not a NIfTI file (%zu bytes, no NIfTI-1/2 header size at the start)",
                       label, n);
    if (n < (size_t)sizeof_hdr)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated NIfTI header (%zu of %d bytes)", label, n, sizeof_hdr);
    out->swap = swap;

    nifti_image *nim = NULL;
    int64_t dim[8];
    if (sizeof_hdr == NIFTI1_HEADER_BYTES) {
        nifti_1_header h;
        memcpy(&h, bytes, sizeof h);
        if (swap) swap_nifti_header(&h, 1);
        if (memcmp(h.magic, "n+1", 4) != 0)
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED,
                           "%s: NIfTI-1 magic is not \"n+1\" (two-file .hdr/.img and ANALYZE are not supported)", label);
        for (int i = 0; i < 8; i++) dim[i] = h.dim[i];
        I3_TRY(check_header_fields(ctx, label, dim, h.datatype, h.vox_offset, NIFTI1_HEADER_BYTES, out));
        nim = nifti_convert_n1hdr2nim(h, label);
    } else {
        nifti_2_header h;
        memcpy(&h, bytes, sizeof h);
        if (swap) swap_nifti_header(&h, 2);
        if (memcmp(h.magic, "n+2", 4) != 0)
            return i3_fail(ctx, I3RT_ERR_UNSUPPORTED, "%s: NIfTI-2 magic is not \"n+2\" (two-file NIfTI is not supported)",
                           label);
        for (int i = 0; i < 8; i++) dim[i] = h.dim[i];
        I3_TRY(check_header_fields(ctx, label, dim, h.datatype, (double)h.vox_offset, NIFTI2_HEADER_BYTES, out));
        nim = nifti_convert_n2hdr2nim(h, label);
    }
    if (!nim) return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: nifticlib rejected the NIfTI header", label);
    out->scl_slope = nim->scl_slope;
    out->scl_inter = nim->scl_inter;
    geometry_from_nim(nim, &out->geometry);
    nifti_image_free(nim);
    for (int i = 0; i < 3; i++) out->geometry.size[i] = out->dim[i];  /* nifticlib leaves 0 past dim[0] */
    const i3_volume_geometry *g = &out->geometry;
    for (int i = 0; i < 3; i++)
        if (!isfinite(g->spacing[i]))
            return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: NIfTI pixdim[%d] is not finite", label, i + 1);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(g->affine[r][c]))
                return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: the NIfTI %s has NaN or Inf entries", label,
                               g->sform_code > 0 ? "sform" : "qform");
    return I3RT_OK;
}

/* Converts the raw voxels (file order = [C, D, H, W] order, see volume_io.h) into v->data. */
static i3rt_status decode_voxels(i3_ctx *ctx, const char *label, const nifti_layout *L, void *raw, i3_volume *v) {
    int64_t count = L->dim[0] * L->dim[1] * L->dim[2] * L->dim[3];
    if (L->swap && L->nbyper > 1) nifti_swap_Nbytes(count, L->nbyper, raw);
    float *dst = i3_malloc(ctx, (size_t)count * sizeof(float), label);
    if (!dst) return I3RT_ERR_OUT_OF_MEMORY;
#define I3_DECODE(type)                                                           \
    for (int64_t i = 0; i < count; i++) {                                         \
        type value;                                                               \
        memcpy(&value, (const unsigned char *)raw + i * (int64_t)sizeof(type), sizeof value); \
        dst[i] = (float)value;                                                    \
    }                                                                             \
    break;
    switch (L->datatype) {
    case DT_UINT8: I3_DECODE(uint8_t)
    case DT_INT8: I3_DECODE(int8_t)
    case DT_INT16: I3_DECODE(int16_t)
    case DT_UINT16: I3_DECODE(uint16_t)
    case DT_INT32: I3_DECODE(int32_t)
    case DT_UINT32: I3_DECODE(uint32_t)
    case DT_INT64: I3_DECODE(int64_t)
    case DT_UINT64: I3_DECODE(uint64_t)
    case DT_FLOAT32: I3_DECODE(float)
    case DT_FLOAT64: I3_DECODE(double)
    }
#undef I3_DECODE
    /* NIfTI: scl_slope == 0 means "no scaling". */
    if (L->scl_slope != 0.0 && isfinite(L->scl_slope) && isfinite(L->scl_inter) &&
        !(L->scl_slope == 1.0 && L->scl_inter == 0.0))
        for (int64_t i = 0; i < count; i++) dst[i] = (float)(dst[i] * L->scl_slope + L->scl_inter);
    int64_t non_finite = 0, first = -1;
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(dst[i]) && non_finite++ == 0) first = i;
    if (non_finite > 0) {
        free(dst);
        int64_t x = first % L->dim[0], y = first / L->dim[0] % L->dim[1];
        int64_t z = first / (L->dim[0] * L->dim[1]) % L->dim[2], c = first / (L->dim[0] * L->dim[1] * L->dim[2]);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: %lld voxels are NaN or Inf (first at x=%lld y=%lld z=%lld channel %lld)",
                       label, (long long)non_finite, (long long)x, (long long)y, (long long)z, (long long)c);
    }
    v->channels = L->dim[3];
    v->d = L->dim[2];
    v->h = L->dim[1];
    v->w = L->dim[0];
    v->data = dst;
    v->geometry = L->geometry;
    return I3RT_OK;
}

i3rt_status i3_volume_from_memory(i3_ctx *ctx, const void *bytes, size_t len, const char *label, i3_volume *out) {
    memset(out, 0, sizeof *out);
    nifti_layout L;
    I3_TRY(parse_header(ctx, label, bytes, len, &L));
    if (len < (size_t)L.vox_offset || len - (size_t)L.vox_offset < L.data_bytes)
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated NIfTI data (%zu bytes, the header needs %lld + %zu)", label,
                       len, (long long)L.vox_offset, L.data_bytes);
    void *raw = i3_malloc(ctx, L.data_bytes, label);
    if (!raw) return I3RT_ERR_OUT_OF_MEMORY;
    memcpy(raw, (const unsigned char *)bytes + L.vox_offset, L.data_bytes);
    i3rt_status st = decode_voxels(ctx, label, &L, raw, out);
    free(raw);
    return st;
}

/* Reads up to n bytes; returns how many, or -1 on a zlib error (a corrupt or cut gzip stream). */
static int64_t gz_read_fully(gzFile f, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < (1u << 30) ? n - done : (1u << 30);
        int got = gzread(f, (unsigned char *)buf + done, (unsigned)chunk);
        if (got < 0) return -1;
        if (got == 0) break;
        done += (size_t)got;
    }
    return (int64_t)done;
}

static i3rt_status gz_error(i3_ctx *ctx, const char *path, gzFile f, const char *what) {
    int code = 0;
    const char *msg = gzerror(f, &code);
    return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: corrupt or truncated file while reading the %s (%s)", path, what,
                   code == Z_ERRNO ? strerror(errno) : msg);
}

/* Reads the voxel data: `have` bytes are already in `first`, the rest comes from f. The buffer grows
 * with the bytes that actually arrive, so a short file claiming huge dims never allocates for them. */
static i3rt_status read_data(i3_ctx *ctx, const char *path, gzFile f, const unsigned char *first, size_t have,
                             size_t needed, unsigned char **out) {
    size_t cap = needed < ((size_t)1 << 24) ? needed : ((size_t)1 << 24);
    unsigned char *raw = i3_malloc(ctx, cap ? cap : 1, path);
    if (!raw) return I3RT_ERR_OUT_OF_MEMORY;
    memcpy(raw, first, have);
    size_t done = have;
    while (done < needed) {
        if (done == cap) {
            cap = cap * 2 < needed ? cap * 2 : needed;
            unsigned char *grown = realloc(raw, cap);
            if (!grown) {
                free(raw);
                return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: out of memory reading %zu bytes of voxels", path,
                               needed);
            }
            raw = grown;
        }
        int64_t got = gz_read_fully(f, raw + done, cap - done);
        if (got < 0) {
            free(raw);
            return gz_error(ctx, path, f, "voxel data");
        }
        if (got == 0) break;
        done += (size_t)got;
    }
    if (done < needed) {
        free(raw);
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated NIfTI data: %zu of %zu bytes", path, done, needed);
    }
    *out = raw;
    return I3RT_OK;
}

static i3rt_status read_layout_and_data(i3_ctx *ctx, const char *path, gzFile f, i3_volume *out) {
    unsigned char header[NIFTI_MAX_HEADER_BYTES];
    int64_t got = gz_read_fully(f, header, sizeof header);
    if (got < 0) return gz_error(ctx, path, f, "header");
    nifti_layout L;
    I3_TRY(parse_header(ctx, path, header, (size_t)got, &L));
    /* The data may start inside the bytes already read (no extensions) or after them. */
    size_t have = 0;
    if (L.vox_offset < got) {
        have = (size_t)(got - L.vox_offset) < L.data_bytes ? (size_t)(got - L.vox_offset) : L.data_bytes;
    } else if (gzseek(f, (z_off_t)L.vox_offset, SEEK_SET) != (z_off_t)L.vox_offset) {
        return i3_fail(ctx, I3RT_ERR_FORMAT, "%s: truncated NIfTI file: the data should start at byte %lld", path,
                       (long long)L.vox_offset);
    }
    unsigned char *raw = NULL;
    I3_TRY(read_data(ctx, path, f, header + (have ? L.vox_offset : 0), have, L.data_bytes, &raw));
    i3rt_status st = decode_voxels(ctx, path, &L, raw, out);
    free(raw);
    return st;
}

i3rt_status i3_volume_read(i3_ctx *ctx, const char *path, i3_volume *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return i3_fail(ctx, I3RT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st_buf;
    if (fstat(fd, &st_buf) != 0 || !S_ISREG(st_buf.st_mode)) {
        close(fd);
        return i3_fail(ctx, I3RT_ERR_IO, "%s: not a regular file", path);
    }
    gzFile f = gzdopen(fd, "rb");  /* reads plain files transparently */
    if (!f) {
        close(fd);
        return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: cannot start reading", path);
    }
    i3rt_status st = read_layout_and_data(ctx, path, f, out);
    gzclose(f);
    return st;
}

void i3_volume_free(i3_volume *v) {
    if (!v) return;
    free(v->data);
    memset(v, 0, sizeof *v);
}

static bool close_enough(double a, double b) { return fabs(a - b) <= 1e-4 * (1.0 + fmax(fabs(a), fabs(b))); }

i3rt_status i3_volume_geometry_check(i3_ctx *ctx, const i3_volume_geometry *a, const char *label_a,
                                     const i3_volume_geometry *b, const char *label_b) {
    for (int i = 0; i < 3; i++)
        if (a->size[i] != b->size[i])
            return i3_fail(ctx, I3RT_ERR_SHAPE, "%s and %s: different grids (%lld x %lld x %lld vs %lld x %lld x %lld)",
                           label_a, label_b, (long long)a->size[0], (long long)a->size[1], (long long)a->size[2],
                           (long long)b->size[0], (long long)b->size[1], (long long)b->size[2]);
    for (int i = 0; i < 3; i++)
        if (!close_enough(a->spacing[i], b->spacing[i]))
            return i3_fail(ctx, I3RT_ERR_SHAPE, "%s and %s: different spacing on axis %c (%g vs %g)", label_a, label_b,
                           "xyz"[i], a->spacing[i], b->spacing[i]);
    if (a->qform_code != b->qform_code || a->sform_code != b->sform_code)
        return i3_fail(ctx, I3RT_ERR_SHAPE, "%s and %s: different qform/sform codes (%d/%d vs %d/%d)", label_a, label_b,
                       a->qform_code, a->sform_code, b->qform_code, b->sform_code);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            if (!close_enough(a->affine[r][c], b->affine[r][c]))
                return i3_fail(ctx, I3RT_ERR_SHAPE, "%s and %s: different voxel-to-world affines (row %d col %d: %g vs %g)",
                               label_a, label_b, r, c, a->affine[r][c], b->affine[r][c]);
    return I3RT_OK;
}

i3rt_status i3_volume_read_channels(i3_ctx *ctx, const char *const *paths, int n, i3_volume *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "no input files");
    if (n == 1) return i3_volume_read(ctx, paths[0], out);
    i3_volume *parts = i3_calloc(ctx, (size_t)n, sizeof *parts, "input volumes");
    if (!parts) return I3RT_ERR_OUT_OF_MEMORY;
    i3rt_status st = I3RT_OK;
    int64_t channels = 0;
    for (int i = 0; i < n && st == I3RT_OK; i++) {
        st = i3_volume_read(ctx, paths[i], &parts[i]);
        if (st == I3RT_OK && i > 0)
            st = i3_volume_geometry_check(ctx, &parts[0].geometry, paths[0], &parts[i].geometry, paths[i]);
        channels += parts[i].channels;
    }
    if (st == I3RT_OK) {
        size_t per_channel = (size_t)(parts[0].d * parts[0].h * parts[0].w);
        if (channels * (int64_t)per_channel > I3_VOLUME_MAX_VOXELS)
            st = i3_fail(ctx, I3RT_ERR_FORMAT, "%s ...: %lld channels together exceed %lld voxels", paths[0],
                         (long long)channels, (long long)I3_VOLUME_MAX_VOXELS);
        float *data = st == I3RT_OK ? i3_malloc(ctx, (size_t)channels * per_channel * sizeof(float), "input channels")
                                    : NULL;
        if (data) {
            size_t at = 0;
            for (int i = 0; i < n; i++) {
                size_t count = (size_t)parts[i].channels * per_channel;
                memcpy(data + at, parts[i].data, count * sizeof(float));
                at += count;
            }
            *out = parts[0];
            free(out->data);
            out->data = data;
            out->channels = channels;
            parts[0].data = NULL;
        } else if (st == I3RT_OK) {
            st = I3RT_ERR_OUT_OF_MEMORY;
        }
    }
    for (int i = 0; i < n; i++) i3_volume_free(&parts[i]);
    free(parts);
    return st;
}

/* ---- writing --------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Builds the NIfTI-1 header for x * y * z * channels voxels of the given datatype and geometry. */
static i3rt_status make_header(i3_ctx *ctx, const char *path, const i3_volume_geometry *g, int64_t channels,
                               int datatype, nifti_1_header *out) {
    for (int i = 0; i < 3; i++)
        if (g->size[i] < 1 || g->size[i] > 32767)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: axis %c size %lld does not fit a NIfTI-1 header", path,
                           "xyz"[i], (long long)g->size[i]);
    if (channels < 1 || channels > 32767)
        return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: %lld channels do not fit a NIfTI-1 header", path,
                       (long long)channels);
    int64_t dims[8] = {channels > 1 ? 4 : 3, g->size[0], g->size[1], g->size[2], channels, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 0);
    if (!nim) return i3_fail(ctx, I3RT_ERR_OUT_OF_MEMORY, "%s: cannot make a NIfTI header", path);
    nim->dx = nim->pixdim[1] = g->spacing[0];
    nim->dy = nim->pixdim[2] = g->spacing[1];
    nim->dz = nim->pixdim[3] = g->spacing[2];
    nim->xyz_units = g->xyz_units;
    nim->qform_code = g->qform_code;
    nim->quatern_b = g->quatern[0];
    nim->quatern_c = g->quatern[1];
    nim->quatern_d = g->quatern[2];
    nim->qoffset_x = g->qoffset[0];
    nim->qoffset_y = g->qoffset[1];
    nim->qoffset_z = g->qoffset[2];
    nim->qfac = g->qfac < 0 ? -1.0 : 1.0;
    nim->sform_code = g->sform_code;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) nim->sto_xyz.m[r][c] = g->srow[r][c];
    nim->scl_slope = 1.0;
    nim->scl_inter = 0.0;
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    nim->iname_offset = NIFTI1_HEADER_BYTES + 4;
    int rc = nifti_convert_nim2n1hdr(nim, out);
    nifti_image_free(nim);
    if (rc != 0) return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: cannot express the geometry as NIfTI-1", path);
    return I3RT_OK;
}

static bool gz_write_fully(gzFile f, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < (1u << 30) ? n - done : (1u << 30);
        int put = gzwrite(f, (const unsigned char *)buf + done, (unsigned)chunk);
        if (put <= 0) return false;
        done += (size_t)put;
    }
    return true;
}

/* Writes header + voxels to a temporary file beside path, then renames it over path. */
static i3rt_status write_atomically(i3_ctx *ctx, const char *path, const nifti_1_header *hdr, const void *voxels,
                                    size_t nbytes) {
    size_t len = strlen(path);
    char *tmp = i3_malloc(ctx, len + 16, path);
    if (!tmp) return I3RT_ERR_OUT_OF_MEMORY;
    snprintf(tmp, len + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        i3rt_status st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot create a file in its directory: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    fchmod(fd, 0644);  /* mkstemp makes 0600; an output is an ordinary file */
    int sync_fd = dup(fd);  /* gzclose closes fd; the file is synced through this one afterwards */
    /* Floats barely compress: level 1 costs little time; labels compress well at the default. */
    const char *mode = !ends_with(path, ".gz") ? "wbT" : hdr->datatype == DT_FLOAT32 ? "wb1" : "wb6";
    static const unsigned char no_extension[4] = {0, 0, 0, 0};
    int err = 0;
    errno = 0;
    gzFile f = sync_fd >= 0 ? gzdopen(fd, mode) : NULL;
    if (!f) {
        err = errno ? errno : ENOMEM;
        close(fd);
    } else {
        if (!(gz_write_fully(f, hdr, sizeof *hdr) && gz_write_fully(f, no_extension, 4) &&
              gz_write_fully(f, voxels, nbytes)))
            err = errno ? errno : EIO;
        if (gzclose(f) != Z_OK && !err) err = errno ? errno : EIO;
    }
    if (!err && fsync(sync_fd) != 0) err = errno;
    if (sync_fd >= 0) close(sync_fd);
    if (!err && rename(tmp, path) != 0) err = errno;
    i3rt_status st = I3RT_OK;
    if (err) {
        st = i3_fail(ctx, I3RT_ERR_IO, "%s: cannot write: %s", path, strerror(err));
        unlink(tmp);
    }
    free(tmp);
    return st;
}

i3rt_status i3_volume_write_f32(i3_ctx *ctx, const char *path, const i3_volume_geometry *geometry,
                                int64_t channels, const float *data) {
    nifti_1_header hdr;
    I3_TRY(make_header(ctx, path, geometry, channels, DT_FLOAT32, &hdr));
    size_t count = (size_t)(geometry->size[0] * geometry->size[1] * geometry->size[2] * channels);
    return write_atomically(ctx, path, &hdr, data, count * sizeof(float));
}

i3rt_status i3_volume_write_labels(i3_ctx *ctx, const char *path, const i3_volume_geometry *geometry,
                                   const int32_t *labels) {
    size_t count = (size_t)(geometry->size[0] * geometry->size[1] * geometry->size[2]);
    int32_t max_label = 0;
    for (size_t i = 0; i < count; i++) {
        if (labels[i] < 0 || labels[i] > INT16_MAX)
            return i3_fail(ctx, I3RT_ERR_INVALID_ARGUMENT, "%s: label %d at voxel %zu is outside 0..32767", path,
                           labels[i], i);
        if (labels[i] > max_label) max_label = labels[i];
    }
    int datatype = max_label <= UINT8_MAX ? DT_UINT8 : DT_INT16;
    nifti_1_header hdr;
    I3_TRY(make_header(ctx, path, geometry, 1, datatype, &hdr));
    size_t elem = datatype == DT_UINT8 ? 1 : 2;
    unsigned char *packed = i3_malloc(ctx, count * elem, path);
    if (!packed) return I3RT_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < count; i++) {
        if (datatype == DT_UINT8) {
            packed[i] = (unsigned char)labels[i];
        } else {
            int16_t v = (int16_t)labels[i];
            memcpy(packed + 2 * i, &v, 2);
        }
    }
    i3rt_status st = write_atomically(ctx, path, &hdr, packed, count * elem);
    free(packed);
    return st;
}
