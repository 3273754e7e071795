"""ctypes binding of libi3rt.so's nnInteractive session (include/i3rt.h, i3rt_ni_*), for tests and evaluation
scripts that compare i3rt with nnInteractive in one Python process.

    from i3rt_ctypes import I3rt
    lib = I3rt("build/libi3rt.so")                 # or $I3RT_LIB
    s = lib.session("model_dir", n_threads=2)      # backend "cpu" | "cuda" | "emulated"; precision None
                                                   # (the backend's default) | "f32" | "tf32" | "f16" | "bf16"
    s.set_image(image3d_float32)                   # [n0, n1, n2]
    s.set_target_buffer(np.zeros(shape, np.uint8)) # kept alive by the session, written in place
    ran, changed = s.add_point((10, 20, 30), positive=True)
    # changed: [[lo, hi]] * 3 of the target region the call wrote, or None

Errors raise I3rtError with the context's message. Arrays are C order, last axis fastest, as i3rt takes them.
"""

import ctypes
import json
import os

import numpy as np

_STATUS_OK = 0
_BACKENDS = {"cpu": 0, "cuda": 1, "emulated": 2}
_PRECISIONS = {"f32": 0, "f16": 1, "bf16": 2, "tf32": 3}  # i3rt_precision


class I3rtError(RuntimeError):
    pass


class Box(ctypes.Structure):
    _fields_ = [("lo", ctypes.c_int64 * 3), ("hi", ctypes.c_int64 * 3)]

    @classmethod
    def of(cls, bbox):
        b = cls()
        for a, (lo, hi) in enumerate(bbox):
            b.lo[a], b.hi[a] = int(lo), int(hi)
        return b

    def as_list(self):
        """[[lo, hi]] * 3, or None for the empty box (lo == hi == 0)."""
        if all(self.lo[a] == 0 and self.hi[a] == 0 for a in range(3)):
            return None
        return [[int(self.lo[a]), int(self.hi[a])] for a in range(3)]


class Result(ctypes.Structure):
    _fields_ = [("ran_prediction", ctypes.c_int), ("changed", Box)]


class Timing(ctypes.Structure):
    _fields_ = [("encode", ctypes.c_double), ("network_input", ctypes.c_double), ("network", ctypes.c_double),
                ("paste", ctypes.c_double), ("total", ctypes.c_double), ("n_forwards", ctypes.c_int),
                ("zoom", ctypes.c_double)]


_P = ctypes.c_void_p
_I64_3 = ctypes.POINTER(ctypes.c_int64)
_U8 = ctypes.POINTER(ctypes.c_uint8)
_SIGNATURES = {
    "i3rt_context_create": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_int, ctypes.c_int]),
    "i3rt_context_free": (None, [_P]),
    "i3rt_context_set_precision": (ctypes.c_int, [_P, ctypes.c_int]),
    "i3rt_context_error": (ctypes.c_char_p, [_P]),
    "i3rt_ni_session_create": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_P)]),
    "i3rt_ni_session_free": (None, [_P]),
    "i3rt_ni_capabilities_json": (ctypes.c_char_p, [_P]),
    "i3rt_ni_set_image": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_float), _I64_3, ctypes.POINTER(ctypes.c_double)]),
    "i3rt_ni_set_target_buffer": (ctypes.c_int, [_P, _U8, _I64_3]),
    "i3rt_ni_set_do_autozoom": (ctypes.c_int, [_P, ctypes.c_int]),
    "i3rt_ni_reset_interactions": (ctypes.c_int, [_P]),
    "i3rt_ni_undo": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(Box)]),
    "i3rt_ni_add_point": (ctypes.c_int, [_P, _I64_3, ctypes.c_int, ctypes.c_int, ctypes.POINTER(Result)]),
    "i3rt_ni_add_box": (ctypes.c_int, [_P, ctypes.POINTER(Box), ctypes.c_int, ctypes.c_int, ctypes.POINTER(Result)]),
    "i3rt_ni_add_scribble": (ctypes.c_int, [_P, _U8, ctypes.POINTER(Box), ctypes.c_int, ctypes.c_int,
                                            ctypes.POINTER(Result)]),
    "i3rt_ni_add_lasso": (ctypes.c_int, [_P, _U8, ctypes.POINTER(Box), ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(Result)]),
    "i3rt_ni_add_initial_seg": (ctypes.c_int, [_P, _U8, ctypes.c_int, ctypes.POINTER(Result)]),
    "i3rt_ni_predict": (ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(Result)]),
    "i3rt_ni_get_timing": (ctypes.c_int, [_P, ctypes.POINTER(Timing)]),
}


def _shape(a):
    return (ctypes.c_int64 * 3)(*[int(s) for s in a.shape])


class I3rt:
    """The loaded library. path: libi3rt.so (default $I3RT_LIB)."""

    def __init__(self, path=None):
        path = path or os.environ.get("I3RT_LIB")
        if not path:
            raise I3rtError("no libi3rt.so given (pass its path or set I3RT_LIB)")
        self.lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    def session(self, model_dir, fold=-1, n_threads=1, backend="cpu", precision=None):
        return Session(self, model_dir, fold, n_threads, backend, precision)


class _OwnContext:
    """A context of its own (n_threads, backend, the convolutions' precision: None for the backend's default);
    errors raise I3rtError with its message."""

    def _open_context(self, i3rt, n_threads, backend, precision):
        self._lib = i3rt.lib
        _bind_snc(self._lib)
        self._ctx = _P()
        if self._lib.i3rt_context_create(ctypes.byref(self._ctx), int(n_threads), _BACKENDS[backend]) != _STATUS_OK:
            raise I3rtError(f"cannot create a {backend} context with {n_threads} threads")
        if precision is not None:
            self._check(self._lib.i3rt_context_set_precision(self._ctx, _PRECISIONS[precision]))

    def _check(self, status):
        if status != _STATUS_OK:
            raise I3rtError(self._lib.i3rt_context_error(self._ctx).decode(errors="replace"))

    def _close_context(self):
        if self._ctx:
            self._lib.i3rt_context_free(self._ctx)
            self._ctx = _P()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Session(_OwnContext):
    """One i3rt_ni_session on its own context."""

    def __init__(self, i3rt, model_dir, fold=-1, n_threads=1, backend="cpu", precision=None):
        self._s = _P()
        self._target = None
        self._open_context(i3rt, n_threads, backend, precision)
        self._check(self._lib.i3rt_ni_session_create(self._ctx, os.fsencode(model_dir), int(fold),
                                                     ctypes.byref(self._s)))

    def close(self):
        if getattr(self, "_s", None):
            self._lib.i3rt_ni_session_free(self._s)
            self._s = _P()
        if getattr(self, "_ctx", None):
            self._close_context()
        self._target = None

    @property
    def capabilities(self):
        return json.loads(self._lib.i3rt_ni_capabilities_json(self._s).decode())

    def set_image(self, image, spacing=None):
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise I3rtError(f"set_image takes a 3D image, got shape {image.shape}")
        sp = (ctypes.c_double * 3)(*spacing) if spacing is not None else None
        self._check(self._lib.i3rt_ni_set_image(self._s, image.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                                _shape(image), sp))

    def set_target_buffer(self, target):
        """target: a C-contiguous uint8 array of the image's shape, written in place by every prediction."""
        if target.dtype != np.uint8 or not target.flags.c_contiguous:
            raise I3rtError("the target buffer must be a C-contiguous uint8 array")
        self._check(self._lib.i3rt_ni_set_target_buffer(self._s, target.ctypes.data_as(_U8), _shape(target)))
        self._target = target  # the session writes into it: keep it alive

    def set_do_autozoom(self, on):
        self._check(self._lib.i3rt_ni_set_do_autozoom(self._s, int(bool(on))))

    def reset_interactions(self):
        self._check(self._lib.i3rt_ni_reset_interactions(self._s))

    def undo(self):
        """(undone, changed box or None)."""
        undone, box = ctypes.c_int(0), Box()
        self._check(self._lib.i3rt_ni_undo(self._s, ctypes.byref(undone), ctypes.byref(box)))
        return bool(undone.value), box.as_list()

    @staticmethod
    def _result(r):
        return bool(r.ran_prediction), r.changed.as_list() if r.ran_prediction else None

    def add_point(self, coords, positive=True, run_prediction=True):
        r = Result()
        c = (ctypes.c_int64 * 3)(*[int(v) for v in coords])
        self._check(self._lib.i3rt_ni_add_point(self._s, c, int(positive), int(run_prediction), ctypes.byref(r)))
        return self._result(r)

    def add_box(self, bbox, positive=True, run_prediction=True):
        r = Result()
        self._check(self._lib.i3rt_ni_add_box(self._s, ctypes.byref(Box.of(bbox)), int(positive), int(run_prediction),
                                              ctypes.byref(r)))
        return self._result(r)

    def _add_mask(self, fn, mask, region, positive, run_prediction):
        r = Result()
        mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)
        reg = ctypes.byref(Box.of(region)) if region is not None else None
        self._check(fn(self._s, mask.ctypes.data_as(_U8), reg, int(positive), int(run_prediction), ctypes.byref(r)))
        return self._result(r)

    def add_scribble(self, mask, region=None, positive=True, run_prediction=True):
        return self._add_mask(self._lib.i3rt_ni_add_scribble, mask, region, positive, run_prediction)

    def add_lasso(self, mask, region=None, positive=True, run_prediction=True):
        return self._add_mask(self._lib.i3rt_ni_add_lasso, mask, region, positive, run_prediction)

    def add_initial_seg(self, mask, run_prediction=False):
        r = Result()
        mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)
        self._check(self._lib.i3rt_ni_add_initial_seg(self._s, mask.ctypes.data_as(_U8), int(run_prediction),
                                                      ctypes.byref(r)))
        return self._result(r)

    def predict(self, force_full_refine=False):
        r = Result()
        self._check(self._lib.i3rt_ni_predict(self._s, int(force_full_refine), ctypes.byref(r)))
        return self._result(r)

    def timing(self):
        t = Timing()
        self._check(self._lib.i3rt_ni_get_timing(self._s, ctypes.byref(t)))
        return {k: getattr(t, k) for k, _ in Timing._fields_}


# ---- Slice-and-Conquer session (i3rt_snc_*) and a bare model forward (i3rt_model_*), for bench/snc_vs_torch.py

class SncParams(ctypes.Structure):
    _fields_ = [("tau", ctypes.c_double), ("skip", ctypes.c_int), ("gamma", ctypes.c_double),
                ("postprocess", ctypes.c_int), ("zoom_in", ctypes.c_int), ("with_flip", ctypes.c_int),
                ("start_3d", ctypes.c_int)]


SNC_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
SNC_STAGES = ("open", "load", "click", "guided-3d", "recommend", "postprocess", "export")
_F32 = ctypes.POINTER(ctypes.c_float)
_SNC_SIGNATURES = {
    "i3rt_snc_params_default": (None, [ctypes.POINTER(SncParams)]),
    "i3rt_snc_open": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(SncParams), ctypes.POINTER(_P)]),
    "i3rt_snc_free": (None, [_P]),
    "i3rt_snc_get_shape": (ctypes.c_int, [_P, _I64_3]),
    "i3rt_snc_load_2d": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "i3rt_snc_load_3d": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "i3rt_snc_click": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int64, ctypes.c_double, ctypes.c_double,
                                      ctypes.c_int, _U8, ctypes.c_int64]),
    "i3rt_snc_finish_slice": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int64, ctypes.c_int]),
    "i3rt_snc_propagate": (ctypes.c_int, [_P]),
    "i3rt_snc_get_mask": (ctypes.c_int, [_P, _U8, ctypes.c_int64]),
    "i3rt_snc_stage_seconds": (ctypes.c_double, [_P, ctypes.c_int]),
    "i3rt_model_load": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(_P)]),
    "i3rt_model_free": (None, [_P]),
    "i3rt_model_plan": (ctypes.c_int, [_P, _I64_3, ctypes.POINTER(ctypes.c_size_t)]),
    "i3rt_model_forward": (ctypes.c_int, [_P, _F32, _I64_3, _F32]),
}


def _bind_snc(lib):
    for name, (restype, argtypes) in _SNC_SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


class SncSession(_OwnContext):
    """One i3rt_snc_session on a NIfTI image, on its own context. params: SncParams field overrides
    (e.g. {"zoom_in": 0}); the rest are i3rt_snc_params_default's."""

    def __init__(self, i3rt, image_path, n_threads=1, backend="cpu", precision=None, **params):
        self._s = _P()
        self._open_context(i3rt, n_threads, backend, precision)
        p = SncParams()
        self._lib.i3rt_snc_params_default(ctypes.byref(p))
        for k, v in params.items():
            setattr(p, k, v)
        self._check(self._lib.i3rt_snc_open(self._ctx, os.fsencode(image_path), ctypes.byref(p), ctypes.byref(self._s)))
        shape = (ctypes.c_int64 * 3)()
        self._check(self._lib.i3rt_snc_get_shape(self._s, shape))
        self.shape = tuple(int(v) for v in shape)

    def close(self):
        if getattr(self, "_s", None):
            self._lib.i3rt_snc_free(self._s)
            self._s = _P()
        if getattr(self, "_ctx", None):
            self._close_context()

    def load_2d(self, path):
        self._check(self._lib.i3rt_snc_load_2d(self._s, os.fsencode(path)))

    def load_3d(self, path):
        self._check(self._lib.i3rt_snc_load_3d(self._s, os.fsencode(path)))

    def plane_shape(self, axis):
        d, h, w = self.shape
        return {"axial": (h, w), "coronal": (d, w), "sagittal": (d, h)}[axis]

    def click(self, axis, index, y, x, positive=True):
        """The slice's new 2D mask [rows, cols] uint8."""
        mask = np.zeros(self.plane_shape(axis), np.uint8)
        self._check(self._lib.i3rt_snc_click(self._s, SNC_AXES[axis], int(index), float(y), float(x), int(positive),
                                             mask.ctypes.data_as(_U8), mask.size))
        return mask

    def finish_slice(self, axis, index, accurate=True):
        self._check(self._lib.i3rt_snc_finish_slice(self._s, SNC_AXES[axis], int(index), int(bool(accurate))))

    def propagate(self):
        self._check(self._lib.i3rt_snc_propagate(self._s))

    def mask(self):
        m = np.zeros(self.shape, np.uint8)
        self._check(self._lib.i3rt_snc_get_mask(self._s, m.ctypes.data_as(_U8), m.size))
        return m

    def stage_seconds(self):
        """{stage name: wall seconds summed over the session's calls}."""
        return {name: self._lib.i3rt_snc_stage_seconds(self._s, i) for i, name in enumerate(SNC_STAGES)}


class Model(_OwnContext):
    """i3rt_model_load + i3rt_model_forward on its own context: the network alone, input [in_channels, d, h, w]."""

    def __init__(self, i3rt, path, n_threads=1, backend="cpu", precision=None):
        self._m = _P()
        self._open_context(i3rt, n_threads, backend, precision)
        self._check(self._lib.i3rt_model_load(self._ctx, os.fsencode(path), ctypes.byref(self._m)))

    def close(self):
        if getattr(self, "_m", None):
            self._lib.i3rt_model_free(self._m)
            self._m = _P()
        if getattr(self, "_ctx", None):
            self._close_context()

    def plan_bytes(self, spatial):
        peak = ctypes.c_size_t(0)
        self._check(self._lib.i3rt_model_plan(self._m, (ctypes.c_int64 * 3)(*spatial), ctypes.byref(peak)))
        return int(peak.value)

    def forward(self, x, out):
        """x: float32 C-contiguous [in_channels, d, h, w]; out: float32 [num_classes, d, h, w], written in place."""
        spatial = (ctypes.c_int64 * 3)(*x.shape[1:])
        self._check(self._lib.i3rt_model_forward(self._m, x.ctypes.data_as(_F32), spatial, out.ctypes.data_as(_F32)))
        return out
