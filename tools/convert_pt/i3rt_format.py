"""The i3rt weight file format, shared by the converters (see docs/weights-format.md).

An i3rt weight file is a safetensors file whose `__metadata__` says what network the tensors belong to:
"format" = FORMAT, "network" = a JSON object {"class", "dims", "input_channels", "num_classes", ...}, plus
converter-specific keys. Tensor names are the PyTorch state-dict keys of the network, canonical only
(every tensor once, under the name its module registered first).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

FORMAT = "i3rt-weights-1"
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


class ConversionError(Exception):
    """A problem with the input that the user must fix; printed without a traceback."""


def require_file(path, what):
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: {what} not found")
    return path


def load_torch_checkpoint(path):
    """torch.load as nnU-Net and RITM do (their checkpoints hold numpy scalars and torch.device objects)."""
    require_file(path, "checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which one
        raise ConversionError(f"{path}: cannot load checkpoint: {e}") from e


def _same_storage(a, b):
    return (a.numel() > 0 and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset() and a.shape == b.shape and a.stride() == b.stride())


def _same_tensor(a, b):
    """Is `a` provably the same tensor as `b`: shared memory, or (for checkpoints re-saved without
    sharing) identical dtype, shape and values."""
    return a.dtype == b.dtype and a.shape == b.shape and (_same_storage(a, b) or torch.equal(a, b))


def drop_aliases(state_dict, alias_candidates, log=print):
    """Removes keys that are another key's tensor under a second name.

    alias_candidates(name, keys) gives, for a key that may be an alias, the canonical keys it may repeat
    ([] if the name is canonical). A candidate alias is dropped only after checking that it holds the
    same tensor (same storage, or equal values) as one of them; otherwise it is an error. Finally no two
    kept tensors may share memory (an alias pattern we do not know)."""
    keys = set(state_dict)
    kept, dropped = {}, 0
    for name, t in state_dict.items():
        candidates = [c for c in alias_candidates(name, keys) if c != name]
        if not candidates:
            kept[name] = t
            continue
        if not any(_same_tensor(t, state_dict[c]) for c in candidates):
            raise ConversionError(f"tensor {name} looks like an alias of {' or '.join(candidates)} but holds "
                                  f"different values")
        dropped += 1
    by_storage = {}
    for name, t in kept.items():
        if t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in by_storage:
            raise ConversionError(f"tensors {by_storage[key]} and {name} share memory: an alias the converter "
                                  f"does not know how to resolve")
        by_storage[key] = name
    log(f"  {len(state_dict)} state-dict entries, {dropped} aliases dropped, {len(kept)} kept")
    return kept


def write_weights(path, tensors, metadata, dtype="f32"):
    """Writes tensors (floating ones cast to dtype) and string metadata atomically: a temporary file in the
    same folder, then a rename, so a reader never sees half a file."""
    target = DTYPES[dtype]
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        out[name] = (t.to(target) if t.is_floating_point() else t).contiguous().clone()
    meta = {"format": FORMAT, **metadata}
    for k, v in meta.items():
        if not isinstance(v, str):
            raise TypeError(f"metadata {k} must be a string")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        save_file(out, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file private; a weight file is not a secret
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def network_json(cls, dims, input_channels, num_classes, **extra):
    return json.dumps({"class": cls, "dims": dims, "input_channels": input_channels, "num_classes": num_classes,
                       **extra})


def run_main(main):
    """Runs main(); a ConversionError becomes `error: ...` on stderr and exit status 1."""
    try:
        main()
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
