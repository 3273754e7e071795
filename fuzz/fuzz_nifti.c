/* libFuzzer target for the NIfTI reading path (runtime/volume_io.c).
 *
 * Each input is read twice: from memory (i3_volume_from_memory: header parsing, validation, voxel
 * decoding, byte swapping, scaling) and as a file through an in-memory file descriptor
 * (i3_volume_read: the zlib path that reads .nii and .nii.gz, the offset seek, truncation checks; a
 * gzip-compressed input exercises decompression). A success must give a consistent volume; a failure
 * must leave an empty volume and a message naming the input. Writing is not fuzzed (no file system).
 * Build: CC=clang cmake -S . -B build-fuzz -DI3RT_FUZZ=ON && ninja -C build-fuzz fuzz_nifti
 * Run:   build-fuzz/fuzz/fuzz_nifti -dict=fuzz/fuzz_nifti.dict -max_total_time=60 CORPUS fuzz/corpus/nifti */
#define _GNU_SOURCE
#include "volume_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void check(i3rt_context *ctx, i3rt_status st, i3_volume *v, const char *label) {
    if (st != I3RT_OK) {
        if (v->data || (st != I3RT_ERR_OUT_OF_MEMORY && strncmp(i3rt_context_error(ctx), label, strlen(label)) != 0))
            abort();
        return;
    }
    if (v->channels < 1 || v->d < 1 || v->h < 1 || v->w < 1 || v->geometry.size[0] != v->w ||
        v->geometry.size[1] != v->h || v->geometry.size[2] != v->d)
        abort();
    volatile float sink = 0;
    int64_t n = v->channels * v->d * v->h * v->w;
    for (int64_t i = 0; i < n; i++) sink += v->data[i];  /* every voxel is readable and finite */
    (void)sink;
    if (i3_volume_geometry_check(ctx, &v->geometry, label, &v->geometry, label) != I3RT_OK) abort();
    i3_volume_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    i3rt_context *ctx = NULL;
    if (i3rt_context_create(&ctx, 1, I3RT_BACKEND_CPU) != I3RT_OK) abort();
    i3_volume v;
    check(ctx, i3_volume_from_memory(ctx, data, size, "fuzz", &v), &v, "fuzz");

    int fd = memfd_create("fuzz_nifti", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    check(ctx, i3_volume_read(ctx, path, &v), &v, path);
    close(fd);
    i3rt_context_free(ctx);
    return 0;
}
