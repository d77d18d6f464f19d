"""Record, then compare bit for bit, what the engine computes over a grid of cases.

Proves that a change to the engine's code keeps every bit: run ``record`` with
the build before the change and with the build after it, then ``compare``::

    PYTHONPATH=/path/to/old/checkout python tools/bitcheck.py record old.json
    PYTHONPATH=/path/to/new/checkout python tools/bitcheck.py record new.json
    python tools/bitcheck.py compare old.json new.json

The grid: both variants x both activations x BN x float32/float64 x 1 and 2
threads x batch 1, 3, 16, 40 x a short sequence and one long enough for two
chunks of the input projection (CHUNK_ROWS), with the backward's candidate
recomputation forced on and off (reset_after without BN), and with and
without the adaptive team; then gemm="native" and "blas" x H 24, 40 and 64 x
batch 3 and 64 x 2 threads and num_threads=None (chunked sequences); then the
fused forward's unit slices (batch 5, 8, 12 x H 96, 256, 64 x 1 and 2 threads).  Per case: a training forward from a random h0,
a backward with dstate, an SGD update, a second training forward and backward
(gradients of the updated weights), an inference forward from the carried
state, then the same with Adam.  Every output, dx, dh0, gradient, updated
parameter and rolling statistic is recorded.  A small Darknet-style network
(GRU, connected with BN, softmax) trains two steps too (``net/...`` keys);
its connected layer and losses run the engine's kernels since 9987a11 (NumPy
expressions before), so these keys differ from older builds in the last bits.

``compare`` prints every key that differs (with the sums of both arrays) and
a count per group of keys (the GRU layer's cases; ``net``), and exits 1 if
any differs.
"""
import argparse
import hashlib
import importlib
import itertools
import json
import os
import sys
import zlib

import numpy as np

VARIANTS = ("darknet", "reset_after")
ACTIVATIONS = ("tanh", "logistic")
BATCHES = (1, 3, 16, 40)
I, H = 13, 64


def _steps(B, chunked):
    return 7 if not chunked else 1200 // B + 3      # > 512 rows: two or more chunks


def _recompute_hook():
    """c_recompute_threshold of whichever engine module has it (old or new layout)."""
    for mod in ("gru_cy._cpu.engine", "gru_cy._cpu.gru"):
        try:
            return importlib.import_module(mod).c_recompute_threshold
        except (ImportError, AttributeError):
            continue
    raise RuntimeError("no c_recompute_threshold in the engine")


def _case(out, key, variant, act, bn, dtype, threads, B, chunked, optimizer, H=H,
          gemm="native"):
    import gru_cy
    T = _steps(B, chunked)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    layer = gru_cy.GRU(I, H, variant=variant, activation=act, batch_normalize=bn,
                       optimizer=optimizer, dtype=dtype, seed=B * 7 + T, num_threads=threads,
                       gemm=gemm)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    ds = rng.standard_normal((B, H)).astype(dtype)
    train = not (bn and B == 1)
    if train:
        out[key + "/y1"] = layer.forward(x, train=True, h0=h0)
        out[key + "/dx1"] = layer.backward(dy, ds)
        out[key + "/dh01"] = layer.dh0
        for k, g in layer.grads.items():
            out[f"{key}/g1/{k}"] = g.copy()
        try:
            layer.update(learning_rate=0.05, clip=0.5 if optimizer == "adam" else None)
            out[key + "/y2"] = layer.forward(x[::-1].copy(), train=True)
            out[key + "/dx2"] = layer.backward(dy)
            for k, g in layer.grads.items():
                out[f"{key}/g2/{k}"] = g.copy()
            layer.update(learning_rate=0.05)
        except ValueError as e:
            # Since issue 15 a step to non-finite parameters is refused (BN at
            # B = 3 over long float32 sequences: gradients of 1e45 overflow);
            # older builds took it and recorded NaN parameters.
            if "non-finite" not in str(e):
                raise
            out[key + "/update_refused"] = np.array([1])
    out[key + "/yi"] = layer.forward(x)
    out[key + "/state"] = layer.state
    for k, p in layer.params.items():
        out[f"{key}/p/{k}"] = np.array(p)


def _network(out, dtype, threads):
    import gru_cy
    try:
        from gru_cy.nn import Connected, Network, Softmax
    except ImportError:                    # the layout before the restructure
        from gru_cy.network import Connected, Network, Softmax
    rng = np.random.default_rng(5)
    T, B, C = 9, 4, 6
    for optimizer in ("sgd", "adam"):
        gru = gru_cy.GRU(C, 16, batch_normalize=True, optimizer=optimizer, dtype=dtype,
                         seed=1, num_threads=threads)
        fc = Connected(16, C, activation="leaky", batch_normalize=True,
                       optimizer=optimizer, dtype=dtype, seed=2, num_threads=threads)
        net = Network([gru, fc, Softmax(C)], inputs=C, batch=B, time_steps=T,
                      learning_rate=0.1)
        key = f"net/{optimizer}/{np.dtype(dtype).name}/t{threads}"
        for it in range(2):
            x = rng.standard_normal((T, B, C)).astype(dtype)
            labels = rng.integers(0, C, (T, B))
            out[f"{key}/loss{it}"] = np.array(net.train_step(x, labels))
        out[key + "/predict"] = net.predict(rng.standard_normal((T, B, C)).astype(dtype))
        for i, layer in enumerate(net.layers):
            for k, p in getattr(layer, "params", {}).items():
                out[f"{key}/l{i}/{k}"] = np.array(p)


def record(path):
    hook = _recompute_hook()
    out = {}
    grid = itertools.product(VARIANTS, ACTIVATIONS, (False, True), (np.float32, np.float64),
                             (1, 2), BATCHES, (False, True))
    for variant, act, bn, dtype, threads, B, chunked in grid:
        for optimizer in ("sgd", "adam"):
            recompute = (True, False) if variant == "reset_after" and not bn else (False,)
            for rc in recompute:
                for adaptive in ("1", "0"):
                    os.environ["GRU_CY_ADAPTIVE"] = adaptive
                    key = (f"{variant}/{act}/bn{int(bn)}/{np.dtype(dtype).name}/t{threads}"
                           f"/B{B}/{'long' if chunked else 'short'}/{optimizer}"
                           f"/rc{int(rc)}/ad{adaptive}")
                    old = hook(0 if rc else 1 << 62)
                    try:
                        _case(out, key, variant, act, bn, dtype, threads, B, chunked,
                              optimizer)
                    finally:
                        hook(old)
    # Paths the main grid does not reach: SciPy's BLAS; H below one 32-unit
    # granule and H not a multiple of it; full 16-row batch chunks (B = 64 on
    # two threads); OpenMP's own thread count (num_threads=None).
    os.environ["GRU_CY_ADAPTIVE"] = "1"
    extras = [(h, B, threads, gemm) for gemm in ("native", "blas") for h in (24, 40, 64)
              for B in (3, 64) for threads in (2, None)]
    for (h, B, threads, gemm), variant, bn, dtype in itertools.product(
            extras, VARIANTS, (False, True), (np.float32, np.float64)):
        key = (f"extra/{variant}/bn{int(bn)}/{np.dtype(dtype).name}/t{threads}/B{B}/H{h}"
               f"/{gemm}")
        _case(out, key, variant, "tanh", bn, dtype, threads, B, True, "sgd", H=h, gemm=gemm)
    # The fused forward's unit slices (batches of 4 to 15 rows, H a multiple of
    # the 32-unit granule; each thread's gate blocks packed as one operand):
    # the main grid's H = 13/64 and batches run other paths.
    slices = itertools.product(VARIANTS, (False, True), (np.float32, np.float64), (1, 2),
                               ((5, 96), (8, 256), (12, 64)))
    for variant, bn, dtype, threads, (B, h) in slices:
        key = f"slices/{variant}/bn{int(bn)}/{np.dtype(dtype).name}/t{threads}/B{B}/H{h}"
        _case(out, key, variant, "tanh", bn, dtype, threads, B, True, "sgd", H=h)
    for dtype in (np.float32, np.float64):
        for threads in (1, 2):
            _network(out, dtype, threads)
    # Each array is kept as the SHA-256 of its bytes (with dtype and shape), its
    # element count and its sum: the recording stays small (the arrays are 1.9 GB).
    table = {k: [_digest(a), int(np.asarray(a).size), float(np.sum(a, dtype=np.float64))]
             for k, a in out.items()}
    with open(path, "w") as f:
        json.dump(table, f, indent=0, sort_keys=True)
    print(f"recorded {len(out)} arrays, {sum(v[1] for v in table.values())} elements "
          f"to {path}")


def _digest(a):
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def compare(old_path, new_path):
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    def group(k):
        first = k.split("/", 1)[0]
        return first if first in ("net", "extra", "slices") else "gru"
    # a group one recording lacks entirely: the grid has grown since (not a difference)
    missing = {g for g in {group(k) for k in set(old) | set(new)}
               if not any(group(k) == g for k in old) or not any(group(k) == g for k in new)}
    bad = 0
    for k in sorted(set(old) | set(new)):
        if group(k) in missing:
            continue
        if k not in old or k not in new:
            print(f"only in {'new' if k not in old else 'old'}: {k}")
            bad += 1
        elif old[k][0] != new[k][0]:
            print(f"differs: {k} (sum {old[k][2]!r} -> {new[k][2]!r})")
            bad += 1
    groups = {}
    for k in old:
        if group(k) in missing:
            continue
        g = groups.setdefault(group(k), [0, 0, 0])
        g[0] += 1
        g[1] += old[k][1]
        g[2] += k in new and old[k][0] != new[k][0]
    for name, (arrays, elements, differ) in sorted(groups.items()):
        print(f"{name}: {arrays} arrays, {elements} elements: "
              f"{'all bit-identical' if not differ else f'{differ} differ'}")
    for name in sorted(missing):
        print(f"{name}: in one recording only (a grid grown since): not compared")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run the grid and save a digest of every result (JSON)")
    r.add_argument("path")
    c = sub.add_parser("compare", help="compare two recordings bit for bit")
    c.add_argument("old")
    c.add_argument("new")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.path)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
