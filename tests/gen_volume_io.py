"""Fixtures for tests/test_volume_io.c: NIfTI files written by nibabel (an independent writer) and what
nibabel reads back from them, so the C reader is checked against another implementation.

For every case NAME it writes into --out:
  NAME.nii[.gz]   the file: a datatype with scl_slope/scl_inter, big-endian, NIfTI-2, 4D channels,
                  qform only / sform only
  NAME.f32        nibabel's scaled data as float32, C order [channel, z, y, x] (= i3rt's [C, D, H, W])
  NAME.txt        "size x y z c", "spacing dx dy dz", "codes qform sform", "affine" + 12 numbers (the
                  3x4 voxel->world matrix: sform if sform_code > 0 else qform), "qform" + 12 numbers
"""
import argparse
import gzip
import os

import nibabel as nib
import numpy as np


def header_for(cls, shape, dtype, endianness="<"):
    hdr = cls.header_class(endianness=endianness)
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_xyzt_units("mm")
    hdr["vox_offset"] = len(hdr.binaryblock) + 4  # header + the 4-byte "no extensions" flag
    return hdr


def write_case(out, name, hdr, raw, gz=True):
    """Writes header + raw voxels (Fortran order, x fastest) byte by byte, so nibabel's own
    choice of scaling on save cannot change what the file holds."""
    offset = int(hdr["vox_offset"])
    block = hdr.binaryblock
    body = block + b"\0" * (offset - len(block)) + np.asarray(raw, dtype=hdr.get_data_dtype()).tobytes(order="F")
    path = os.path.join(out, name + (".nii.gz" if gz else ".nii"))
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(body)
    else:
        with open(path, "wb") as f:
            f.write(body)

    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float64), dtype=np.float32)
    if data.ndim == 3:
        data = data[..., None]
    # [x, y, z, c] -> [c, z, y, x]
    np.ascontiguousarray(data.transpose(3, 2, 1, 0)).tofile(os.path.join(out, name + ".f32"))
    h = img.header
    qcode, scode = int(h["qform_code"]), int(h["sform_code"])
    affine = h.get_sform() if scode > 0 else h.get_qform()
    zooms = h.get_zooms()
    with open(os.path.join(out, name + ".txt"), "w") as f:
        f.write("size %d %d %d %d\n" % data.shape)
        f.write("spacing %.9g %.9g %.9g\n" % tuple(zooms[:3]))
        f.write("codes %d %d\n" % (qcode, scode))
        f.write("affine " + " ".join("%.9g" % v for v in affine[:3].ravel()) + "\n")
        f.write("qform " + " ".join("%.9g" % v for v in h.get_qform()[:3].ravel()) + "\n")


def oblique_affine(spacing, offset):
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = offset
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(4)
    shape = (7, 5, 3)  # x, y, z: every axis a different size catches a swapped axis

    cases = [("u8", np.uint8, 0, 250), ("i8", np.int8, -120, 120), ("i16", np.int16, -3000, 3000),
             ("u16", np.uint16, 0, 60000), ("i32", np.int32, -100000, 100000), ("f32", np.float32, -5, 5),
             ("f64", np.float64, -5, 5)]
    for name, dtype, lo, hi in cases:
        hdr = header_for(nib.Nifti1Image, shape, dtype)
        aff = oblique_affine([0.8, 1.1, 2.5], [-10.0, 20.0, 3.5])
        hdr.set_qform(aff, code=1)
        hdr.set_sform(aff, code=2)
        hdr["scl_slope"], hdr["scl_inter"] = 0.5, -3.0
        raw = rng.uniform(lo, hi, size=shape).astype(dtype)
        write_case(args.out, "dtype_" + name, hdr, raw)

    # big-endian int16, uncompressed
    hdr = header_for(nib.Nifti1Image, shape, np.int16, endianness=">")
    hdr.set_qform(np.diag([1.5, 1.5, 3.0, 1.0]), code=1)
    write_case(args.out, "big_endian", hdr, rng.integers(-500, 500, size=shape), gz=False)

    # NIfTI-2 float32, sform only
    hdr = header_for(nib.Nifti2Image, shape, np.float32)
    hdr.set_sform(oblique_affine([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), code=4)
    write_case(args.out, "nifti2", hdr, rng.standard_normal(shape))

    # 4D: 2 channels, qform with a flip (qfac = -1)
    hdr = header_for(nib.Nifti1Image, shape + (2,), np.float32)
    hdr.set_qform(np.diag([-1.0, 0.9, 1.7, 1.0]) @ np.eye(4), code=1)
    write_case(args.out, "channels4d", hdr, rng.standard_normal(shape + (2,)))

    # two single-channel files on the same grid, and one on a shifted grid
    for name, offset in [("chan_0000", 0.0), ("chan_0001", 0.0), ("shifted_0001", 5.0)]:
        hdr = header_for(nib.Nifti1Image, shape, np.float32)
        aff = oblique_affine([1.0, 1.0, 2.0], [offset, 0.0, 0.0])
        hdr.set_qform(aff, code=1)
        hdr.set_sform(aff, code=1)
        write_case(args.out, name, hdr, rng.standard_normal(shape))

    # a NaN voxel
    hdr = header_for(nib.Nifti1Image, shape, np.float32)
    raw = rng.standard_normal(shape).astype(np.float32)
    raw[2, 1, 0] = np.nan
    with open(os.path.join(args.out, "nan.nii"), "wb") as f:
        f.write(hdr.binaryblock + b"\0" * 4 + raw.tobytes(order="F"))  # nibabel refuses to read it back
    print("gen_volume_io: wrote fixtures to", args.out)


if __name__ == "__main__":
    main()
