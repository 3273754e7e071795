/* Reading and writing NIfTI volumes (.nii, .nii.gz; NIfTI-1 and NIfTI-2 single-file) as float32.
 *
 * Axes: NIfTI stores voxels with x fastest, then y, z and a 4th dimension. i3rt arrays are
 * [C, D, H, W] with W fastest, so the mapping is x -> W, y -> H, z -> D and the 4th NIfTI dimension
 * -> C (channels). Voxels keep their file order; nothing is reoriented or resampled. A 2D image is
 * D = 1.
 *
 * Reading: every datatype from uint8 to float64 is converted to float32 and scaled by scl_slope /
 * scl_inter (when scl_slope is non-zero). The header is validated before anything is allocated
 * (sizeof_hdr, magic, dims, datatype, vox_offset) and the data byte count is checked, so a truncated
 * or corrupt file gives I3RT_ERR_FORMAT naming the file and what is wrong, never a crash. A volume
 * with NaN or Inf voxels (after scaling) is rejected: the networks cannot use them and nnU-Net's
 * preprocessing would spread them over the whole image.
 *
 * Writing: float32 (logits, probabilities) or integer labels (uint8, or int16 above 255), NIfTI-1
 * with the geometry of the input (pixdim, qform, sform, units). The file appears atomically: it is
 * written to "<path>.tmp-XXXXXX" in the same directory, synced and renamed; on any failure the
 * temporary file is removed, so a half-written output never exists. A path ending in ".gz" is
 * gzip-compressed. */
#ifndef I3RT_VOLUME_IO_H
#define I3RT_VOLUME_IO_H

#include "core.h"

/* Largest voxel count (all channels) a volume may have: 2^31 floats = 8 GiB. */
#define I3_VOLUME_MAX_VOXELS ((int64_t)1 << 31)

/* Where the voxels are in the world, as the NIfTI header says. */
typedef struct {
    int64_t size[3];       /* x, y, z voxel counts (= W, H, D) */
    double spacing[3];     /* pixdim x, y, z */
    int xyz_units;         /* NIFTI_UNITS_* code */
    int qform_code;
    double quatern[3];     /* b, c, d */
    double qoffset[3];     /* x, y, z */
    double qfac;           /* -1 or 1 */
    int sform_code;
    double srow[3][4];     /* srow_x, srow_y, srow_z */
    double affine[4][4];   /* voxel (x, y, z) -> world: the sform if set, else the qform (or pixdim) */
} i3_volume_geometry;

typedef struct {
    int64_t channels, d, h, w;
    float *data;           /* [channels, d, h, w], w fastest; malloc'ed, owned */
    i3_volume_geometry geometry;
} i3_volume;

/* Reads a 3D or 4D (4th dim = channels) volume. On failure *out is zeroed and ctx names the file. */
i3rt_status i3_volume_read(i3_ctx *ctx, const char *path, i3_volume *out);

/* The same from an uncompressed NIfTI file already in memory (label names it in errors). */
i3rt_status i3_volume_from_memory(i3_ctx *ctx, const void *bytes, size_t len, const char *label, i3_volume *out);

/* Reads n files (nnU-Net's case_0000.nii.gz, case_0001.nii.gz, ...) into one volume whose channels
 * are theirs in order. Every file must have the same grid and geometry as the first (the error names
 * both files and what differs). n == 1 is i3_volume_read. */
i3rt_status i3_volume_read_channels(i3_ctx *ctx, const char *const *paths, int n, i3_volume *out);

void i3_volume_free(i3_volume *v);

/* Fails naming both labels if the two geometries differ (grid size, spacing, qform/sform codes and
 * affines beyond a tolerance of 1e-4 relative). */
i3rt_status i3_volume_geometry_check(i3_ctx *ctx, const i3_volume_geometry *a, const char *label_a,
                                     const i3_volume_geometry *b, const char *label_b);

/* Writes data [channels, d, h, w] (d, h, w from geometry->size) as float32 NIfTI. */
i3rt_status i3_volume_write_f32(i3_ctx *ctx, const char *path, const i3_volume_geometry *geometry,
                                int64_t channels, const float *data);

/* Writes a label map [d, h, w] as uint8 (all labels <= 255) or int16 (<= 32767). Negative labels
 * or labels above 32767 give I3RT_ERR_INVALID_ARGUMENT. */
i3rt_status i3_volume_write_labels(i3_ctx *ctx, const char *path, const i3_volume_geometry *geometry,
                                   const int32_t *labels);

#endif /* I3RT_VOLUME_IO_H */
