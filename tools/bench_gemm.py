"""Benchmark the engine's native gemm against NumPy's BLAS (OpenBLAS).

Times the gemm shapes the GRU runs (forward input and recurrent projections,
backward dh, dx and weight gradients) for the benchmark configurations
(B, T, I, H) of gru_cy.bench.configs, at each thread count, and prints
GFLOP/s of both and their ratio (native / BLAS, > 1 means the native gemm is
faster).  The two are timed interleaved in alternating blocks and the medians
of the per-call times are compared, so a machine shared with other jobs slows
both alike.

Run from the repository root after an in-place build::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_gemm.py
    python tools/bench_gemm.py --configs C --threads 2 --dtype float64

(unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, if your environment pins them,
so that OpenBLAS runs the kernel it picks for this CPU; the header line shows
which one it runs.)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gru_cy._cpu.gemm import gemm_info, gemm_isa, gemm_strided_py, gemm_time  # noqa: E402
from gru_cy.bench.configs import CONFIGS  # noqa: E402  (name: (B, T, I, H))

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_info = threadpool_limits = None


def gru_shapes(B, T, I, H):
    """The GRU's gemms: (label, M, N, K, transA, transB, lda)."""
    return [
        ("xp=x@U.T     NT", T * B, 3 * H, I, False, True, I),
        ("hp=h@W.T     NT", B, 3 * H, H, False, True, H),
        ("dh=da@W      NN", B, H, 3 * H, False, False, 3 * H),
        ("dx=dau@U     NN", T * B, I, 3 * H, False, False, 3 * H),
        ("dU=dau.T@x   TN", 3 * H, I, T * B, True, False, 3 * H),
        ("dW=daw.T@h   TN", 3 * H, H, T * B, True, False, 3 * H),
        ("dWzr(lda=3H) TN", 2 * H, H, T * B, True, False, 3 * H),
    ]


ROUNDS = 7    # alternating blocks per side
PAUSE = 0.1   # seconds before each block (lets worker threads go idle)

STREAM_SHAPES = [  # batch-1 streaming steps
    ("stream 1x384x64  NT", 1, 384, 64, False, True, 64),
    ("stream 1x384x128 NT", 1, 384, 128, False, True, 128),
]


def make_operands(M, N, K, transA, transB, lda, dtype, rng):
    """Storage arrays and the NumPy views of op(A), op(B) (A may be strided)."""
    ra, ca = (K, M) if transA else (M, K)
    Ast = rng.standard_normal((ra, lda)).astype(dtype)
    A = Ast[:, :ca]
    Bst = rng.standard_normal((N, K) if transB else (K, N)).astype(dtype)
    opA = A.T if transA else A
    opB = Bst.T if transB else Bst
    return Ast, Bst, opA, opB


def bench_one(M, N, K, transA, transB, lda, dtype, nthreads, min_time, rng):
    Ast, Bst, opA, opB = make_operands(M, N, K, transA, transB, lda, dtype, rng)
    C = np.zeros((M, N), dtype)
    C2 = np.zeros((M, N), dtype)
    ldb = Bst.shape[1]

    def native():
        gemm_strided_py(C, Ast, Bst, M, N, K, lda, ldb, N, transA, transB,
                        1.0, 0.0, nthreads)

    def blas():
        np.matmul(opA, opB, out=C2)

    native()
    blas()
    # Interleaved in alternating blocks (native, BLAS, native, ...), ROUNDS
    # per side, every call timed.  Before each block the other library's
    # worker threads get PAUSE seconds to stop spinning (OpenBLAS's spin for
    # a long while after a call), and the block's first call is untimed: with
    # few cores, spinning threads of one library would slow the other.
    t0 = time.perf_counter()
    native()
    blas()
    per = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(max(3, min_time / per / ROUNDS), 1000))
    tn, tb = [], []
    for _ in range(ROUNDS):
        for fn, out in ((native, tn), (blas, tb)):
            time.sleep(PAUSE)
            fn()
            for _ in range(calls):
                t1 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t1)
    reps = ROUNDS * calls
    scale = 1e-3 if np.dtype(dtype) == np.float32 else 1e-9
    err = np.max(np.abs(C.astype(np.float64) - C2)) / max(np.max(np.abs(C2)), 1e-30)
    if err > 1e3 * scale:
        raise AssertionError(f"native and BLAS disagree: relative error {err:.2e}")
    return float(np.median(tn)), float(np.median(tb)), reps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="A,B,C,D",
                    help="comma-separated config names (%s)" % ",".join(CONFIGS))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--min-time", type=float, default=0.3,
                    help="seconds of timing per shape and side (default 0.3)")
    ap.add_argument("--isa", default=None,
                    help="force a kernel set: baseline, avx2, avx512 (default: detect)")
    ap.add_argument("--no-stream", action="store_true", help="skip batch-1 shapes")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    if args.isa:
        gemm_isa(args.isa)
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)

    print(f"native kernels: {gemm_isa()}   dtype: {dtype.name}   cpus: {os.cpu_count()}")
    if threadpool_info is not None:
        for lib in threadpool_info():
            if lib.get("internal_api") in ("openblas", "mkl", "blis"):
                print(f"numpy BLAS: {lib['internal_api']} {lib.get('version')} "
                      f"kernel={lib.get('architecture')} threading={lib.get('threading_layer')}"
                      f" ({os.path.basename(lib.get('filepath', ''))})")
    else:
        print("numpy BLAS: threadpoolctl not installed; thread count not pinned")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"):
        if var in os.environ:
            print(f"note: {var}={os.environ[var]}")

    shapes = []
    for name in args.configs.split(","):
        B, T, I, H = CONFIGS[name]
        shapes += [(f"{name}(B{B},T{T},I{I},H{H})", *s) for s in gru_shapes(B, T, I, H)]
    if not args.no_stream:
        shapes += [("stream", *s) for s in STREAM_SHAPES]

    hdr = (f"{'config':22s} {'gemm':20s} {'M':>5s} {'N':>5s} {'K':>5s} {'thr':>3s} "
           f"{'path':>7s} {'native':>8s} {'blas':>8s} {'ratio':>6s} {'us/call':>9s}")
    print(hdr)
    print("-" * len(hdr))
    ratios = {}
    for nt in threads:
        for cfg, label, M, N, K, ta, tb, lda in shapes:
            info = gemm_info(M, N, K, ta, tb, dtype.name, nt)
            if threadpool_limits is not None:
                with threadpool_limits(limits=nt, user_api="blas"):
                    tn, tbl, _ = bench_one(M, N, K, ta, tb, lda, dtype, nt, args.min_time, rng)
            else:
                tn, tbl, _ = bench_one(M, N, K, ta, tb, lda, dtype, nt, args.min_time, rng)
            fl = 2.0 * M * N * K
            r = tbl / tn
            ratios.setdefault(nt, []).append(r)
            print(f"{cfg:22s} {label:20s} {M:5d} {N:5d} {K:5d} {nt:3d} "
                  f"{info['path'] + ('' if info['nthreads'] > 1 else '/1'):>7s} "
                  f"{fl / tn / 1e9:8.1f} {fl / tbl / 1e9:8.1f} {r:6.2f} {tn * 1e6:9.1f}",
                  flush=True)
    if not args.no_stream:
        # The engine calls sgemm from C: its per-call cost without Python.
        for label, M, N, K, ta, tb, lda in STREAM_SHAPES:
            Ast, Bst, _, _ = make_operands(M, N, K, ta, tb, lda, dtype, rng)
            C = np.zeros((M, N), dtype)
            t = min(gemm_time(C, Ast, Bst, ta, tb, 1.0, 0.0, 1, 2000) for _ in range(5))
            print(f"{label}: native {t * 1e6:.2f} us per call timed in C "
                  f"(no Python call overhead), {2.0 * M * N * K / t / 1e9:.1f} GFLOP/s")
    for nt, rs in ratios.items():
        g = float(np.exp(np.mean(np.log(rs))))
        print(f"threads={nt}: geometric-mean ratio native/BLAS {g:.2f}, "
              f"min {min(rs):.2f}, max {max(rs):.2f}")
    print("GFLOP/s are 2*M*N*K / median time; ratio = BLAS time / native time; "
          "path '/1' = serial (no OpenMP region).")


if __name__ == "__main__":
    main()
