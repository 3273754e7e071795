"""The real nnInteractive client drives `i3rt serve` (CTest test serve_client, fixture fx_nninteractive).

    serve_client.py --i3rt BUILD/i3rt --lib BUILD/libi3rt.so --fixtures FIXTURES/nninteractive

1. nnInteractiveRemoteInferenceSession (nninteractive-client) runs a whole session on loopback (claim,
   capabilities, set_image, target buffer, prompts of every kind from the fixture's steps.json, predict,
   undo, reset, release); after every step its target buffer must equal the one of an in-process i3rt
   session (tools/i3rt_ctypes.py) given the same calls, and the changed box and undo result must match.
   Agreement with nnInteractive's own session (the fixture's targets) is printed, not asserted here
   (tests/test_nninteractive.c asserts it).
2. /capabilities equals what nnInteractive's server would answer for the same model folder.
3. Bad requests on a second lease (no image yet, malformed / truncated / wrong-shape arrays, wrong dtypes,
   prompts outside the image, missing fields, bad JSON, unknown lease, no auth, unknown routes) get the
   expected 4xx; after each the server still answers, and the first client's session is untouched.
4. A third claim gets 503 with Retry-After; release is idempotent; a released lease is 410.
5. Two clients at once (threads, different images and target dtypes) each get their own in-process result.
6. A second server with short time-outs: a silent lease is reaped as dead and its slot is free again; a
   prediction longer than the liveness time-out keeps its lease; a lease kept alive only by heartbeats is
   reaped as idle.
Sanitizer builds pass --no-reference: their libi3rt.so cannot be loaded into Python next to torch, so
the comparisons with the in-process session are skipped there and the server itself runs under ASan
(leaks are reported when it exits, which fails the test).
The fixture's no-AutoZoom sequence is replayed (the first step of each kind), then its AutoZoom sequence up
to the first zoom-out with AutoZoom switched on through /set_do_autozoom: this test is about the protocol;
tests/test_nninteractive.c covers the session.
"""

import argparse
import atexit
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
from nnInteractive.inference.remote.remote_session import (ServerAtCapacityError, SessionExpiredError,
                                                           nnInteractiveRemoteInferenceSession)
from nnInteractive.inference.remote.serialization import pack_array, unpack_array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from i3rt_ctypes import I3rt  # noqa: E402

API_KEY = "test-key-7f3a"
READ_TIMEOUT = 900  # seconds per request: an AutoZoom prompt under ASan takes minutes
THREADS = 1
failures = []
servers = []  # started servers, stopped on the way out whatever happens


@atexit.register
def _kill_servers():
    for proc in servers:
        if proc.poll() is None:
            proc.kill()


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL  {what}", flush=True)
    return cond


class NoReference:
    """Stands in for the in-process session where libi3rt.so cannot be loaded (--no-reference)."""

    def __getattr__(self, name):
        return lambda *a, **k: (False, None)


def new_reference(lib, fx):
    return lib.session(os.path.join(fx, "model"), n_threads=THREADS) if lib else NoReference()


def start_server(args, *extra):
    cmd = [args.i3rt, "serve", "--model", os.path.join(args.fixtures, "model"), "--port", "0", "--threads",
           str(THREADS), *extra]
    log = open(os.path.join(args.workdir, f"serve_{len(os.listdir(args.workdir))}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    servers.append(proc)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    m = re.search(r"http://[^:]+:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"i3rt serve did not start: {line!r} (log {log.name})")
    return proc, f"http://127.0.0.1:{m.group(1)}", log.name


def stop_server(proc, name, log):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    if not check(rc == 0, f"{name}: exits 0 on SIGTERM (got {rc})"):
        with open(log) as f:
            print("".join(f.readlines()[-40:]))


def load_fixture(fx):
    with open(os.path.join(fx, "steps.json")) as f:
        steps = json.load(f)
    shape = tuple(steps["shape"])
    image = np.fromfile(os.path.join(fx, "image.f32"), np.float32).reshape(shape)
    return steps, image


def mask_of(fx, step, shape):
    region = step.get("region")
    mshape = [hi - lo for lo, hi in region] if region else shape
    return np.fromfile(os.path.join(fx, step["mask"]), np.uint8).reshape(mshape), region


def pick_steps(steps):
    """The no-AutoZoom sequence: the first step of every kind, plus every undo and reset, in order."""
    seq = next(s for s in steps["sequences"] if not s["do_autozoom"])
    seen, picked = set(), []
    for i, st in enumerate(seq["steps"]):
        if st["kind"] not in seen or st["kind"] in ("undo", "reset"):
            picked.append((i, st))
            seen.add(st["kind"])
    return seq["name"], picked


def run_step(fx, shape, st, client, ref):
    """One step on the remote client and the in-process session, concurrently. Returns (remote, local) results:
    the changed box (or the undo flag)."""
    kind, pos, rp = st["kind"], bool(st.get("positive", True)), bool(st.get("run_prediction", True))
    out = {}

    def remote():
        try:
            remote_call()
        except Exception as e:  # reported by the caller
            out["error"] = e

    def remote_call():
        if kind == "point":
            out["r"] = client.add_point_interaction(st["coords"], include_interaction=pos, run_prediction=rp)
        elif kind == "box":
            out["r"] = client.add_bbox_interaction(st["box"], include_interaction=pos, run_prediction=rp)
        elif kind in ("scribble", "lasso"):
            mask, region = mask_of(fx, st, shape)
            fn = client.add_scribble_interaction if kind == "scribble" else client.add_lasso_interaction
            out["r"] = fn(mask, include_interaction=pos, run_prediction=rp, interaction_bbox=region)
        elif kind == "initial_seg":
            out["r"] = client.add_initial_seg_interaction(mask_of(fx, st, shape)[0], run_prediction=rp)
        elif kind == "predict":
            out["r"] = client._predict()
        elif kind == "undo":
            out["r"] = client.undo()
        elif kind == "reset":
            client.reset_interactions()
            out["r"] = None

    t = threading.Thread(target=remote)
    t.start()
    if kind == "point":
        local = ref.add_point(st["coords"], pos, rp)[1]
    elif kind == "box":
        local = ref.add_box(st["box"], pos, rp)[1]
    elif kind in ("scribble", "lasso"):
        mask, region = mask_of(fx, st, shape)
        local = (ref.add_scribble if kind == "scribble" else ref.add_lasso)(mask, region, pos, rp)[1]
    elif kind == "initial_seg":
        local = ref.add_initial_seg(mask_of(fx, st, shape)[0], rp)[1]
    elif kind == "predict":
        local = ref.predict()[1]
    elif kind == "undo":
        local = ref.undo()[0]
    else:
        ref.reset_interactions()
        local = None
    t.join()
    check("error" not in out, f"{kind}: the client raised {out.get('error')!r}")
    if kind in ("point", "box", "scribble", "lasso", "initial_seg") and not rp:
        local = None  # the server reports no region when the prompt does not predict
    return out.get("r"), local


def clip(box, shape):
    if box is None:
        return None
    c = [[max(0, lo), min(hi, s)] for (lo, hi), s in zip(box, shape)]
    return None if any(hi <= lo for lo, hi in c) else c


def fresh_image(client, ref, image, autozoom):
    """set_image and a new target buffer on both sessions (this resets them), AutoZoom through the protocol."""
    shape = image.shape
    client.set_image(image[None], {"spacing": [1.0, 1.0, 1.0]})
    check(client.original_image_shape == (1, *shape), f"original_image_shape {client.original_image_shape}")
    target = np.zeros(shape, np.uint8)
    client.set_target_buffer(target)
    client.set_do_autozoom(autozoom)
    ref.set_image(image, (1.0, 1.0, 1.0))
    ref_target = np.zeros(shape, np.uint8)
    ref.set_target_buffer(ref_target)
    ref.set_do_autozoom(autozoom)
    return target, ref_target


def replay(fx, lib, name, picked, client, ref, target, ref_target):
    """The picked steps on both sessions; after each the target buffers must be equal. Returns the kinds."""
    shape = target.shape
    kinds = set()
    prefix = True  # nnInteractive's targets in the fixture follow the whole sequence: comparable until a skip
    for k, (i, st) in enumerate(picked):
        prefix = prefix and i == k
        t0 = time.time()
        remote, local = run_step(fx, shape, st, client, ref)
        kinds.add(st["kind"])
        equal = np.array_equal(target, ref_target) if lib else "(no reference)"
        py = np.fromfile(os.path.join(fx, st["target"]), np.uint8).reshape(shape) if prefix and st.get("target") else None
        py_agree = f"{100 * np.mean(py == target):.3f} %" if py is not None else "-"
        zoom = ref.timing()["zoom"] if lib and st["kind"] not in ("undo", "reset") else "-"
        print(f"{name} step {i:2d} {st['kind']:<11} remote {remote} in-process {clip(local, shape) if st['kind'] != 'undo' else local}"
              f" zoom {zoom} fg {int(target.sum())} remote == in-process: {equal}; vs nnInteractive {py_agree}"
              f" ({time.time() - t0:.1f} s)", flush=True)
        if not lib:
            continue
        check(equal, f"{name} step {i} ({st['kind']}): the remote target buffer equals the in-process one")
        if st["kind"] == "undo":
            check(remote == local, f"{name} step {i}: undo reports {remote}, in-process {local}")
        elif st["kind"] != "reset":
            check(remote == clip(local, shape), f"{name} step {i}: changed box {remote} vs {clip(local, shape)}")
    return kinds


def whole_session(args, url, lib, steps, image):
    """Section 1: the real client through a whole session against the in-process session."""
    fx = args.fixtures
    client = nnInteractiveRemoteInferenceSession(url, api_key=API_KEY, read_timeout=READ_TIMEOUT)
    check(client.ping(), "ping")
    ref = new_reference(lib, fx)
    name, picked = pick_steps(steps)
    target, ref_target = fresh_image(client, ref, image, False)
    kinds = replay(fx, lib, name, picked, client, ref, target, ref_target)
    check(kinds >= {"point", "box", "scribble", "lasso", "initial_seg", "predict", "undo", "reset"},
          f"every kind of step ran ({sorted(kinds)})")
    # AutoZoom switched on through the protocol: the AutoZoom sequence's steps up to its first zoom-out
    seq = next(s for s in steps["sequences"] if s["do_autozoom"])
    last = next((i for i, st in enumerate(seq["steps"]) if (st.get("zoom") or 1) > 1), 0)
    target, ref_target = fresh_image(client, ref, image, True)
    replay(fx, lib, seq["name"], list(enumerate(seq["steps"][:last + 1])), client, ref, target, ref_target)
    return client, ref, target, ref_target


def expected_capabilities(fx):
    """What nnInteractive's own server answers for this model (app.py _build_capability_snapshot)."""
    import torch
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
    from nnInteractive.inference.server.app import _build_capability_snapshot

    s = nnInteractiveInferenceSession(device=torch.device("cpu"), use_torch_compile=False, verbose=False,
                                      torch_n_threads=1, do_autozoom=True)
    s.initialize_from_trained_model_folder(os.path.join(fx, "model_src"), 0, "checkpoint_final.pth")
    return json.loads(json.dumps(_build_capability_snapshot(s)))


def bad_requests(url, shape):
    """Section 3. Returns the number of requests checked."""
    http = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {API_KEY}"})
    lease = http.post("/claim").json()["lease_token"]
    lh = {"X-Lease-Token": lease}
    n = 0
    small = (12, 14, 10)
    img = (np.random.default_rng(1).random((1, *small)) * 100).astype(np.float32)
    packed_img = pack_array(img)

    def expect(status, method, path, what, **kw):
        nonlocal n
        headers = {**lh, **kw.pop("headers", {})}
        r = http.request(method, path, headers=headers, **kw)
        ok = check(r.status_code == status, f"{what}: {method} {path} -> {r.status_code}, expected {status} ({r.text[:200]})")
        if ok and status >= 400 and r.headers.get("content-type", "").startswith("application/json"):
            check(isinstance(r.json().get("detail"), str), f"{what}: a detail message")
        check(http.get("/healthz").status_code == 200, f"the server answers after: {what}")
        n += 1
        return r

    def meta(d):
        return {"X-Meta": json.dumps(d), "Content-Type": "application/octet-stream"}

    point = {"coordinates": [5, 6, 4], "include_interaction": True}
    expect(200, "POST", "/set_do_autozoom", "AutoZoom off", json={"do_autozoom": False})
    # before set_image
    expect(400, "POST", "/predict", "predict before set_image", json={})
    expect(400, "POST", "/add_point_interaction", "a point before set_image", json=point)
    expect(400, "POST", "/set_target_buffer", "a target buffer before set_image", json={"shape": list(small), "dtype": "uint8"})
    r = expect(200, "POST", "/undo", "undo before set_image", json={})
    check(json.loads(r.headers["X-Meta"]) == {"ran_prediction": False, "bbox": None}, f"undo meta {r.headers.get('X-Meta')}")
    # set_image with bad arrays
    expect(400, "POST", "/set_image", "an empty body", content=b"", headers=meta({}))
    expect(400, "POST", "/set_image", "a truncated array", content=packed_img[:-7], headers=meta({}))
    expect(400, "POST", "/set_image", "a bad magic", content=b"XNIA" + packed_img[4:], headers=meta({}))
    corrupt = bytearray(packed_img)
    corrupt[len(corrupt) // 2 + 20] ^= 0xFF
    corrupt[len(corrupt) // 2 + 21] ^= 0xFF
    r = http.post("/set_image", content=bytes(corrupt), headers={**lh, **meta({})})
    check(r.status_code in (200, 400), f"a corrupted payload: {r.status_code}")  # no checksum: may decode
    n += 1
    expect(400, "POST", "/set_image", "a 3-d image", content=pack_array(img[0]), headers=meta({}))
    expect(400, "POST", "/set_image", "a 2-channel image", content=pack_array(np.concatenate([img, img])), headers=meta({}))
    expect(400, "POST", "/set_image", "a complex image", content=pack_array(img.astype(np.complex64)), headers=meta({}))
    expect(400, "POST", "/set_image", "bad X-Meta", content=packed_img,
           headers={"X-Meta": "{not json", "Content-Type": "application/octet-stream"})
    r = expect(200, "POST", "/set_image", "a good image", content=packed_img, headers=meta({"image_properties": {}}))
    check(r.json() == {"original_image_shape": [1, *small]}, f"set_image answer {r.text}")
    # target buffer
    expect(400, "POST", "/set_target_buffer", "no shape", json={"dtype": "uint8"})
    expect(400, "POST", "/set_target_buffer", "no dtype", json={"shape": list(small)})
    expect(400, "POST", "/set_target_buffer", "a 2-d shape", json={"shape": [12, 14], "dtype": "uint8"})
    expect(400, "POST", "/set_target_buffer", "a zero dimension", json={"shape": [12, 0, 10], "dtype": "uint8"})
    expect(400, "POST", "/set_target_buffer", "a float dtype", json={"shape": list(small), "dtype": "float32"})
    expect(400, "POST", "/set_target_buffer", "an unknown dtype", json={"shape": list(small), "dtype": "uint7"})
    expect(400, "POST", "/set_target_buffer", "another shape than the image", json={"shape": [12, 14, 11], "dtype": "uint8"})
    expect(413, "POST", "/set_target_buffer", "a huge buffer", json={"shape": [100000, 100000, 100000], "dtype": "int64"})
    expect(422, "POST", "/set_target_buffer", "a body that is not JSON", content=b"{shape",
           headers={"Content-Type": "application/json"})
    expect(400, "POST", "/add_point_interaction", "a point before set_target_buffer", json=point)
    expect(200, "POST", "/set_target_buffer", "a good target buffer", json={"shape": list(small), "dtype": "int16"})
    # prompts
    expect(400, "POST", "/add_point_interaction", "no include_interaction", json={"coordinates": [5, 6, 4]})
    expect(400, "POST", "/add_point_interaction", "2 coordinates", json={"coordinates": [5, 6], "include_interaction": True})
    expect(400, "POST", "/add_point_interaction", "a point outside the image",
           json={"coordinates": [500, 6, 4], "include_interaction": True})
    expect(400, "POST", "/add_point_interaction", "a string override_capability_checks",
           json={"coordinates": [5, 6, 4], "include_interaction": True, "override_capability_checks": "yes"})
    expect(400, "POST", "/add_bbox_interaction", "a box of size zero",
           json={"bbox_coords": [[2, 2], [3, 9], [1, 8]], "include_interaction": True})
    expect(400, "POST", "/add_bbox_interaction", "a 3-d box (bbox3d unsupported)",
           json={"bbox_coords": [[2, 5], [3, 9], [1, 8]], "include_interaction": True})
    expect(400, "POST", "/add_bbox_interaction", "a malformed box",
           json={"bbox_coords": [[2, 5], [3]], "include_interaction": True})
    mask = np.zeros(small, np.uint8)
    mask[5, 4:9, 3:6] = 1
    good = {"include_interaction": True, "run_prediction": False, "interaction_bbox": None}
    expect(400, "POST", "/add_scribble_interaction", "a scribble of another shape",
           content=pack_array(mask[:, :, :5]), headers=meta(good))
    expect(400, "POST", "/add_scribble_interaction", "a scribble region outside the image",
           content=pack_array(mask[:2, :2, :2]), headers=meta({**good, "interaction_bbox": [[11, 13], [0, 2], [0, 2]]}))
    expect(400, "POST", "/add_lasso_interaction", "a truncated lasso", content=pack_array(mask)[:30], headers=meta(good))
    expect(400, "POST", "/add_lasso_interaction", "no include_interaction",
           content=pack_array(mask), headers=meta({"run_prediction": False}))
    expect(400, "POST", "/add_lasso_interaction", "a list override_capability_checks",
           content=pack_array(mask), headers=meta({**good, "override_capability_checks": [1]}))
    expect(400, "POST", "/add_initial_seg_interaction", "an initial seg of another shape",
           content=pack_array(mask[:, :, :5]), headers=meta({"run_prediction": False}))
    expect(400, "POST", "/set_do_autozoom", "no do_autozoom", json={})
    # routes, auth, leases
    expect(404, "GET", "/nothing", "an unknown path")
    expect(405, "GET", "/claim", "a wrong method")
    expect(410, "POST", "/predict", "an unknown lease", json={}, headers={"X-Lease-Token": "0" * 32})
    r = http.post("/predict", json={}, headers={"X-Lease-Token": ""})
    check(r.status_code == 410, f"an empty lease token -> {r.status_code}")
    r = httpx.post(url + "/predict", json={}, headers=lh)
    check(r.status_code == 401, f"no bearer token on a lease endpoint -> {r.status_code}")
    r = httpx.post(url + "/predict", json={}, headers={**lh, "Authorization": "Bearer wrong"})
    check(r.status_code == 401, f"a wrong bearer token -> {r.status_code}")
    n += 4
    # and the lease still works: a scribble that predicts, answered as app.py answers
    r = expect(200, "POST", "/add_scribble_interaction", "a good scribble",
               content=pack_array(mask), headers=meta({**good, "run_prediction": True}))
    m = json.loads(r.headers["X-Meta"])
    check(m["ran_prediction"] is True and r.headers["content-type"] == "application/octet-stream", f"meta {m}")
    if m.get("bbox") is not None:
        sub = unpack_array(r.content)
        check(m["dtype"] == "int16" and sub.dtype == np.int16 and list(sub.shape) == m["shape"]
              and m["shape"] == [hi - lo for lo, hi in m["bbox"]], f"the region {sub.dtype} {sub.shape} vs meta {m}")
    http.close()
    return lease, n


def capacity_and_leases(url, lease):
    """Section 4: the server is full (2 leases), a third claim is refused; release and 410."""
    http = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"})
    r = http.post("/claim")
    check(r.status_code == 503 and r.headers.get("retry-after") == "10", f"a third claim -> {r.status_code} {r.headers}")
    try:
        nnInteractiveRemoteInferenceSession(url, api_key=API_KEY, read_timeout=READ_TIMEOUT)
        check(False, "the client raises ServerAtCapacityError")
    except ServerAtCapacityError:
        pass
    r = http.get("/lease_status", headers={"X-Lease-Token": lease})
    check(r.status_code == 200 and 0 < r.json()["remaining_seconds"] <= 600, f"lease_status {r.text}")
    r = http.post("/heartbeat", headers={"X-Lease-Token": lease})
    check(r.status_code == 200 and "remaining_seconds" in r.json(), f"heartbeat {r.text}")
    for k in range(2):
        r = http.post("/release", headers={"X-Lease-Token": lease})
        check(r.status_code == 200 and r.json() == {"released": True}, f"release #{k + 1}: {r.status_code} {r.text}")
    r = http.post("/heartbeat", headers={"X-Lease-Token": lease})
    check(r.status_code == 410, f"a released lease -> {r.status_code}")
    http.close()


def two_clients(args, url, lib, image):
    """Section 5: two clients at once, different images and target dtypes."""
    fx, shape = args.fixtures, image.shape
    c = [int(s) // 2 for s in shape]
    images = [image, np.ascontiguousarray(image[:, ::-1, :])]
    dtypes = [np.bool_, np.int32]
    results = [None, None]

    def prompts(i):
        return [("point", (c[0], c[1] + 4 * (1 - 2 * i), c[2])),
                ("box", [[c[0], c[0] + 1], [c[1] - 8, c[1] + 6], [c[2] - 5, c[2] + 9]]),
                ("undo", None)]

    def run_remote(i):
        try:
            client = nnInteractiveRemoteInferenceSession(url, api_key=API_KEY, read_timeout=READ_TIMEOUT)
            client.set_image(images[i][None])
            tb = np.zeros(shape, dtypes[i])
            client.set_target_buffer(tb)
            client.set_do_autozoom(False)
            snaps = []
            for kind, arg in prompts(i):
                if kind == "point":
                    client.add_point_interaction(arg, include_interaction=True)
                elif kind == "box":
                    client.add_bbox_interaction(arg, include_interaction=i == 0)
                else:
                    client.undo()
                snaps.append(tb.astype(np.uint8).copy())
            client.close()
            results[i] = snaps
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run_remote, args=(i,)) for i in range(2)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"two clients at once: {time.time() - t0:.1f} s", flush=True)
    for i in range(2):
        if not check(isinstance(results[i], list), f"client {i}: {results[i]!r}") or not lib:
            continue
        ref = new_reference(lib, fx)
        ref.set_image(images[i])
        rt = np.zeros(shape, np.uint8)
        ref.set_target_buffer(rt)
        ref.set_do_autozoom(False)
        for k, (kind, arg) in enumerate(prompts(i)):
            if kind == "point":
                ref.add_point(arg, True)
            elif kind == "box":
                ref.add_box(arg, i == 0)
            else:
                ref.undo()
            same = np.array_equal(results[i][k], rt)
            print(f"client {i} ({np.dtype(dtypes[i]).name} target) step {k} {kind}: fg {int(rt.sum())}, "
                  f"equals its in-process session: {same}", flush=True)
            check(same, f"client {i} step {k}: its own result")
        ref.close()
    check(not np.array_equal(results[0][0], results[1][0]) if all(isinstance(r, list) for r in results) else True,
          "the two clients' images give different masks")


def timeouts(args, image):
    """Section 6: reaping on a server with short time-outs (no auth: the env var is unset)."""
    proc, url, log = start_server(args, "--max-sessions", "1", "--liveness-timeout-seconds", "0.5",
                                  "--idle-timeout-seconds", "2.5", "--sweep-interval-seconds", "0.1")
    http = httpx.Client(base_url=url, timeout=120)
    lease = http.post("/claim").json()["lease_token"]
    r = http.post("/claim")
    check(r.status_code == 503 and r.headers.get("retry-after") == "10", f"max-sessions 1: second claim {r.status_code}")
    time.sleep(1.0)
    r = http.post("/heartbeat", headers={"X-Lease-Token": lease})
    check(r.status_code == 410, f"a silent lease is reaped as dead: {r.status_code}")
    r = http.post("/claim")
    check(r.status_code == 200, f"the reaped slot is free again: {r.status_code}")
    lh = {"X-Lease-Token": r.json()["lease_token"]}
    # a prediction longer than the liveness time-out does not get its own lease reaped
    http.post("/set_image", content=pack_array(image[None]), headers={**lh, "X-Meta": "{}"})
    http.post("/set_target_buffer", json={"shape": list(image.shape), "dtype": "uint8"}, headers=lh)
    http.post("/set_do_autozoom", json={"do_autozoom": False}, headers=lh)
    t0 = time.time()
    r = http.post("/add_point_interaction", json={"coordinates": [s // 2 for s in image.shape],
                                                  "include_interaction": True}, headers=lh)
    took = time.time() - t0
    check(r.status_code == 200, f"a point on the short time-out server: {r.status_code} {r.text[:200]}")
    r = http.post("/heartbeat", headers=lh)
    if took > 0.7:  # the reaper ran (every 0.1 s) while the request was older than the liveness time-out
        check(r.status_code == 200, f"a lease whose {took:.1f} s prediction outlasted the 0.5 s liveness time-out "
                                    f"is still there: {r.status_code}")
    else:
        print(f"the prediction took {took:.1f} s, not longer than the liveness time-out: not exercised", flush=True)
    # heartbeats keep it alive but do not postpone the idle time-out (counted from the end of the action)
    t0, last = time.time(), None
    while time.time() - t0 < 4.0:
        last = http.post("/heartbeat", headers=lh).status_code
        if last == 410:
            break
        time.sleep(0.1)
    idle = time.time() - t0
    check(last == 410 and 2.2 < idle < 3.5, f"a lease kept alive by heartbeats only is reaped as idle ({last} after {idle:.1f} s)")
    http.close()
    stop_server(proc, "the time-out server", log)
    with open(log) as f:
        text = f.read()
    check("reaped dead" in text and "reaped idle" in text, "the server logs both reapings")
    print(f"time-outs: a silent lease reaped as dead; a {took:.1f} s prediction kept its lease (liveness 0.5 s); "
          f"a heartbeat-only lease reaped as idle after {idle:.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--i3rt", required=True)
    ap.add_argument("--lib", help="libi3rt.so for the in-process reference session")
    ap.add_argument("--no-reference", action="store_true", help="no in-process comparison (sanitizer builds)")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    args.workdir = args.workdir or os.path.join(os.path.dirname(os.path.abspath(args.i3rt)), "serve_client_logs")
    os.makedirs(args.workdir, exist_ok=True)
    os.environ.pop("NN_INTERACTIVE_API_KEY", None)
    steps, image = load_fixture(args.fixtures)
    lib = None if args.no_reference else I3rt(args.lib)
    t_start = time.time()

    proc, url, log = start_server(args, "--api-key", API_KEY, "--max-sessions", "2")
    print(f"i3rt serve at {url} (log {log})", flush=True)
    r = httpx.get(url + "/healthz")
    check(r.status_code == 200 and r.json() == {"ok": True}, f"healthz without auth: {r.status_code} {r.text}")
    check(httpx.get(url + "/capabilities").status_code == 401, "capabilities without a bearer token: 401")
    check(httpx.post(url + "/claim", headers={"Authorization": "Bearer nope"}).status_code == 401, "a wrong key: 401")
    caps = httpx.get(url + "/capabilities", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    want = expected_capabilities(args.fixtures)
    diff = {k: (caps.get(k), v) for k, v in want.items() if caps.get(k) != v}
    check(not diff, f"/capabilities as nnInteractive's server answers: differences {diff}")

    client, ref, target, ref_target = whole_session(args, url, lib, steps, image)
    lease, n_bad = bad_requests(url, image.shape)
    print(f"bad requests: {n_bad} checked, the server answered after each", flush=True)
    # the first client's session was not touched by the other lease's requests
    c = [int(s) // 2 for s in image.shape]
    client.add_point_interaction(c, include_interaction=True)
    ref.add_point(c, True)
    if lib:
        check(np.array_equal(target, ref_target), "the first client's session is intact after the bad requests")
    capacity_and_leases(url, lease)
    token = client._lease_token
    client.close()
    r = httpx.post(url + "/predict", json={}, headers={"Authorization": f"Bearer {API_KEY}", "X-Lease-Token": token})
    check(r.status_code == 410, f"the closed client's lease: {r.status_code}")
    try:
        expired = nnInteractiveRemoteInferenceSession.__new__(nnInteractiveRemoteInferenceSession)
        expired._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}", "X-Lease-Token": token})
        expired._get_json("/lease_status")
        check(False, "the client raises SessionExpiredError on a released lease")
    except SessionExpiredError:
        pass
    ref.close()

    two_clients(args, url, lib, image)
    stop_server(proc, "the main server", log)
    timeouts(args, image)

    print(f"serve_client: {time.time() - t_start:.0f} s, {len(failures)} failure(s)")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
