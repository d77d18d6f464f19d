"""The engine's gemm (gru_cy._cpu.gemm) against NumPy float64 products.

Tolerance: |C - ref| <= (K + 2) * eps * max(|alpha| |op(A)| |op(B)| + |beta| |C0|),
a bound on a K-term dot product's rounding, justified in tolerances.py ("gemm").
"""
import itertools
import os

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy._cpu.gemm import gemm_info, gemm_isa, gemm_py, gemm_strided_py

from tolerances import tol

DTYPES = (np.float32, np.float64)
TRANS = list(itertools.product((False, True), repeat=2))


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _available_isas():
    """Kernel sets this CPU can run (the gemm clamps a request to the best)."""
    best = gemm_isa("auto")
    order = ("baseline", "avx2", "avx512")
    return order[: order.index(best) + 1]


@pytest.fixture
def isa_restore():
    yield
    gemm_isa("auto")


def _operands(rng, M, N, K, ta, tb, dtype, pad=(0, 0, 0)):
    """Storage arrays with row strides lda, ldb, ldc = row length + pad."""
    ra, ca = (K, M) if ta else (M, K)
    rb, cb = (N, K) if tb else (K, N)
    Ast = rng.standard_normal((ra, ca + pad[0])).astype(dtype)
    Bst = rng.standard_normal((rb, cb + pad[1])).astype(dtype)
    Cst = rng.standard_normal((M, N + pad[2])).astype(dtype)
    return Ast, Bst, Cst


def _reference(Ast, Bst, Cst, M, N, K, ta, tb, alpha, beta):
    """float64 result and the error scale of the tolerance (see module doc)."""
    ra, ca = (K, M) if ta else (M, K)
    rb, cb = (N, K) if tb else (K, N)
    A = Ast[:ra, :ca].astype(np.float64)
    B = Bst[:rb, :cb].astype(np.float64)
    opA = A.T if ta else A
    opB = B.T if tb else B
    C0 = Cst[:M, :N].astype(np.float64)
    ref = alpha * (opA @ opB)
    mag = abs(alpha) * (np.abs(opA) @ np.abs(opB))
    if beta != 0:
        ref += beta * C0
        mag += abs(beta) * np.abs(C0)
    return ref, mag


def _check(C, ref, mag, K, dtype):
    bound = tol(dtype, "gemm")                  # eps, scaled here in the dtype's arithmetic
    atol = (K + 2) * bound["atol"] * max(float(mag.max()) if mag.size else 0.0, 1.0)
    assert_allclose(C, ref, rtol=bound["rtol"], atol=atol)


def _run_case(rng, M, N, K, ta, tb, dtype, alpha, beta, pad, nthreads=1, use_blas=False):
    Ast, Bst, Cst = _operands(rng, M, N, K, ta, tb, dtype, pad)
    ref, mag = _reference(Ast, Bst, Cst, M, N, K, ta, tb, alpha, beta)
    keep = Cst.copy()
    if beta == 0:
        Cst[:, :N] = np.nan          # beta == 0 must not read C
    gemm_strided_py(Cst, Ast, Bst, M, N, K, Ast.shape[1], Bst.shape[1], Cst.shape[1],
                    ta, tb, alpha, beta, nthreads, use_blas)
    _check(Cst[:, :N], ref, mag, K, dtype)
    # the padding columns of C (beyond N) are untouched
    assert_allclose(Cst[:, N:], keep[:, N:], rtol=0, atol=0)


# Sizes: 1, primes, exact micro-tile multiples (8 x 32 floats, 8 x 16
# doubles on AVX-512) and sizes just above the blockings: K blocks of 512,
# 4096-row tiles of packed A, 512-column chunks of the direct (M <= 3) path.
SHAPES = [
    (1, 1, 1), (1, 7, 3), (2, 13, 5), (3, 31, 17), (4, 5, 6), (7, 1, 11),
    (1, 384, 64), (1, 384, 128), (5, 97, 1), (8, 48, 16), (13, 53, 29),
    (31, 7, 67), (64, 101, 37), (97, 113, 131), (200, 61, 523), (17, 300, 71),
    (1, 1100, 3), (3, 515, 20), (4100, 9, 7),
    # one panel's rows or fewer, wide: A read in place (the batch mode's chunks)
    (8, 768, 256), (6, 200, 70), (4, 130, 600), (5, 97, 33),
]
ALPHA_BETA = [(1.0, 0.0), (1.0, 1.0), (-0.5, 2.5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_matches_numpy(dtype, ta, tb):
    rng = np.random.default_rng(1)
    for (M, N, K), (alpha, beta) in itertools.product(SHAPES, ALPHA_BETA):
        _run_case(rng, M, N, K, ta, tb, dtype, alpha, beta, (0, 0, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_strided(dtype, ta, tb):
    # lda/ldb/ldc wider than the operands' rows (column blocks of a wider
    # array, as the GRU's gate blocks [z|r|h] are).
    rng = np.random.default_rng(2)
    for (M, N, K), pad in itertools.product(
            [(1, 29, 19), (3, 70, 41), (23, 37, 41), (61, 130, 530)],
            [(3, 5, 7), (64, 1, 0), (0, 96, 33)]):
        _run_case(rng, M, N, K, ta, tb, dtype, 1.0, 1.0, pad)
        _run_case(rng, M, N, K, ta, tb, dtype, 0.75, 0.0, pad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_every_kernel_set(dtype, isa_restore):
    # The AVX-512, AVX2+FMA and baseline kernels (those this CPU can run).
    rng = np.random.default_rng(3)
    for isa in _available_isas():
        assert gemm_isa(isa) == isa
        for (M, N, K), (ta, tb) in itertools.product(
                [(1, 45, 33), (3, 100, 7), (9, 50, 70), (37, 101, 600), (250, 77, 40)],
                TRANS):
            _run_case(rng, M, N, K, ta, tb, dtype, 1.0, 0.0, (1, 2, 3))
            _run_case(rng, M, N, K, ta, tb, dtype, -1.5, 0.5, (0, 0, 0))


def test_dispatch_uses_best_isa():
    flags = _cpu_flags()
    isa = gemm_isa()
    assert isa in ("baseline", "avx2", "avx512")
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    if "avx512f" in flags and "fma" in flags:
        expected = "avx512"
    elif "avx2" in flags and "fma" in flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert isa == expected
    assert gemm_info(64, 64, 64)["isa"] == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_sizes(dtype):
    rng = np.random.default_rng(4)
    # K == 0: C = beta * C; beta == 0 then writes zeros over NaN.
    C = rng.standard_normal((3, 4)).astype(dtype)
    C0 = C.copy()
    A = np.zeros((3, 0), dtype)
    B = np.zeros((0, 4), dtype)
    gemm_py(C, A, B, False, False, 1.0, 2.0)
    assert_allclose(C, 2 * C0, rtol=0, atol=0)
    C[:] = np.nan
    gemm_py(C, A, B, False, False, 1.0, 0.0)
    assert_allclose(C, 0, rtol=0, atol=0)
    # alpha == 0: op(A) op(B) is not needed; beta == 0 gives zeros over NaN.
    A = rng.standard_normal((3, 5)).astype(dtype)
    B = rng.standard_normal((5, 4)).astype(dtype)
    C[:] = np.nan
    gemm_py(C, A, B, False, False, 0.0, 0.0)
    assert_allclose(C, 0, rtol=0, atol=0)
    C = C0.copy()
    gemm_py(C, A, B, False, False, 0.0, -1.0)
    assert_allclose(C, -C0, rtol=0, atol=0)
    # M == 0 or N == 0: nothing happens.
    gemm_py(np.zeros((0, 4), dtype), np.zeros((0, 5), dtype), B)
    gemm_py(np.zeros((3, 0), dtype), A, np.zeros((5, 0), dtype))


# Shapes that go parallel at 2 and 3 threads on every path: blocked with the
# tiles split along M (M >= N; K in two blocks), blocked split along N, and
# the direct small-M path (M <= 3; A^T B^T takes the blocked path).
PARALLEL_SHAPES = [(400, 150, 700), (40, 1000, 300), (1, 3000, 200), (3, 1999, 131)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_bit_identical_across_threads(dtype, ta, tb):
    rng = np.random.default_rng(5)
    for M, N, K in PARALLEL_SHAPES:
        for nt in (2, 3):
            assert gemm_info(M, N, K, ta, tb, np.dtype(dtype).name, nt)["nthreads"] == nt
        Ast, Bst, Cst = _operands(rng, M, N, K, ta, tb, dtype, (3, 0, 5))
        for alpha, beta in [(1.0, 0.0), (0.3, 1.0), (1.0, -0.7)]:
            outs = []
            for nt in (1, 2, 3):
                C = Cst.copy()
                gemm_strided_py(C, Ast, Bst, M, N, K, Ast.shape[1], Bst.shape[1],
                                C.shape[1], ta, tb, alpha, beta, nt)
                outs.append(C)
            # exact equality: same bits whatever the thread count
            assert_allclose(outs[1], outs[0], rtol=0, atol=0)
            assert_allclose(outs[2], outs[0], rtol=0, atol=0)
            ref, mag = _reference(Ast, Bst, Cst, M, N, K, ta, tb, alpha, beta)
            _check(outs[0][:, :N], ref, mag, K, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_threads_every_kernel_set(dtype, isa_restore):
    rng = np.random.default_rng(8)
    for isa in _available_isas():
        gemm_isa(isa)
        for (M, N, K), (ta, tb) in itertools.product([(300, 70, 600), (20, 500, 90)],
                                                     [(False, True), (True, False)]):
            Ast, Bst, Cst = _operands(rng, M, N, K, ta, tb, dtype)
            outs = []
            for nt in (1, 2, 3):
                C = Cst.copy()
                gemm_py(C, Ast, Bst, ta, tb, 1.0, 1.0, nt)
                outs.append(C)
            assert_allclose(outs[1], outs[0], rtol=0, atol=0)
            assert_allclose(outs[2], outs[0], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_rows_bits_do_not_depend_on_the_rows_beside_it(dtype, isa_restore):
    # A padded batch's steps run any number of rows: a micro-tile of m rows
    # (every height up to the kernel's) gives each row the bits it gets in a
    # full tile (the engine's results must not depend on the rows running
    # beside a sequence, nor on the thread count's row chunks).  From 4 rows:
    # below, the direct path rounds in its own order.
    rng = np.random.default_rng(9)
    for isa in _available_isas():
        gemm_isa(isa)
        for (N, K), (ta, tb) in itertools.product([(96, 70), (200, 257)],
                                                  [(False, True), (False, False)]):
            Ast, Bst, _ = _operands(rng, 24, N, K, ta, tb, dtype)
            full = np.zeros((24, N), dtype)
            gemm_py(full, Ast, Bst, ta, tb, 1.0, 0.0, 1)
            for m in range(4, 24):
                C = np.zeros((m, N), dtype)
                gemm_py(C, Ast[:m], Bst, ta, tb, 1.0, 0.0, 1)
                assert_allclose(C, full[:m], rtol=0, atol=0, err_msg=f"{isa} m={m}")


def test_small_products_run_serially():
    # batch-1 streaming gemms stay out of OpenMP (a region costs microseconds)
    for M, N, K in [(1, 384, 64), (1, 384, 128), (4, 96, 64)]:
        info = gemm_info(M, N, K, False, True, "float32", 8)
        assert info["nthreads"] == 1
    assert gemm_info(1, 384, 64, False, True)["path"] == "direct"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_blas_path_matches_numpy(dtype, ta, tb):
    rng = np.random.default_rng(6)
    for (M, N, K), (alpha, beta) in itertools.product(
            [(1, 1, 1), (3, 31, 17), (97, 113, 131), (1, 384, 64)], ALPHA_BETA):
        _run_case(rng, M, N, K, ta, tb, dtype, alpha, beta, (0, 0, 0), use_blas=True)
    _run_case(rng, 23, 37, 41, ta, tb, dtype, 1.0, 1.0, (3, 5, 7), use_blas=True)


def test_wrapper_rejects_mismatched_shapes():
    A = np.zeros((3, 4), np.float32)
    B = np.zeros((5, 6), np.float32)
    with pytest.raises(ValueError, match="B"):
        gemm_py(np.zeros((3, 6), np.float32), A, B)
    with pytest.raises(ValueError, match="A"):
        gemm_py(np.zeros((2, 6), np.float32), A, np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        gemm_strided_py(np.zeros((3, 6), np.float32), A, np.zeros((4, 6), np.float32),
                        3, 6, 4, 4, 6, 5)
    with pytest.raises(ValueError, match="level"):
        gemm_isa("sse9")


@pytest.mark.skipif(os.environ.get("GRU_CY_SLOW_TESTS") != "1",
                    reason="large shapes: set GRU_CY_SLOW_TESTS=1")
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gru_sized_shapes(ta, tb):
    rng = np.random.default_rng(7)
    for M, N, K in [(6400, 3072, 64), (64, 3072, 1024), (3072, 512, 1100)]:
        _run_case(rng, M, N, K, ta, tb, np.float32, 1.0, 1.0, (0, 0, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transA", [False, True])
@pytest.mark.parametrize("transB", [False, True])
def test_prepacked_b_gives_the_same_bits(dtype, transA, transB):
    """op(B) packed once in advance (the GRU's recurrent weights) must give
    exactly gemm's result: same panels, same arithmetic."""
    from gru_cy._cpu.gemm import gemm_prepacked_py
    rng = np.random.default_rng(7)
    for M, N, K in [(5, 37, 13), (64, 300, 530), (32, 768, 256), (2, 50, 40)]:
        A = rng.standard_normal((K, M) if transA else (M, K)).astype(dtype)
        B = rng.standard_normal((N, K) if transB else (K, N)).astype(dtype)
        C0 = rng.standard_normal((M, N)).astype(dtype)
        for beta in (0.0, 1.0, 0.5):
            C1, C2 = C0.copy(), C0.copy()
            gemm_py(C1, A, B, transA, transB, 1.3, beta, 2)
            gemm_prepacked_py(C2, A, B, transA, transB, 1.3, beta, 2)
            np.testing.assert_array_equal(C2, C1)
        # packed in parts (as threads share it), more parts than panels too
        for nparts in (2, 3, 7, 40):
            C2 = C0.copy()
            gemm_prepacked_py(C2, A, B, transA, transB, 1.3, 0.5, 2, nparts)
            np.testing.assert_array_equal(C2, C1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_with_bias_is_gemm_then_bias(dtype):
    """The fused forward's batch-1..3 products (gemv_bias: no plan, bias added
    in the kernel) give exactly gemm's result plus a separate bias pass, for
    every ISA the CPU has (column counts around the vector width and the
    512-column chunks; K with and without a tail)."""
    from gru_cy._cpu.gemm import gemv_bias_py
    rng = np.random.default_rng(11)
    for isa in _available_isas():
        gemm_isa(isa)
        try:
            for M, N, K in [(1, 384, 128), (1, 64, 128), (2, 67, 33), (3, 1100, 20),
                            (1, 5, 1), (3, 17, 600)]:
                A = rng.standard_normal((M, K)).astype(dtype)
                B = rng.standard_normal((N, K)).astype(dtype)
                bias = rng.standard_normal(N).astype(dtype)
                want = np.empty((M, N), dtype)
                gemm_py(want, A, B, False, True, 1.0, 0.0, 1)
                want += bias
                got = np.full((M, N), np.nan, dtype)
                gemv_bias_py(got, A, B, bias)
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} {M, N, K}")
        finally:
            gemm_isa("auto")



@pytest.mark.parametrize("isa", ("baseline", "avx2", "avx512"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_in_the_gemm_is_a_separate_pass_bit_for_bit(dtype, isa, isa_restore):
    # gemm_pre_bias adds the bias to each tile of C as its last K block ends
    # (the fused forward's products): the bits of the gemm and a separate
    # pass C += bias, for partial tiles, several K blocks (K > 512), the
    # direct path (M <= 3), both transposes of B and 1 or 2 threads.
    from gru_cy._cpu.gemm import gemm_bias_py
    if isa not in _available_isas():
        pytest.skip(f"this CPU has no {isa} kernels")
    gemm_isa(isa)
    rng = np.random.default_rng(7)
    for M, N, K in ((1, 40, 30), (3, 96, 64), (8, 32, 16), (13, 70, 600), (64, 200, 129),
                    (37, 5, 1030)):
        for tb in (False, True):
            A = rng.standard_normal((M, K)).astype(dtype)
            B = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
            bias = rng.standard_normal(N).astype(dtype)
            want = np.empty((M, N), dtype)
            gemm_py(want, A, B, False, tb, 1.0, 0.0, 1)
            want = want + bias          # one rounding per element, as bias_forward
            for nt in (1, 2):
                got = np.full((M, N), np.nan, dtype)
                gemm_bias_py(got, A, B, bias, False, tb, nt)
                np.testing.assert_array_equal(got, want, err_msg=f"{M}x{N}x{K} tb={tb} nt={nt}")


def test_gemm_bias_py_checks_shapes():
    from gru_cy._cpu.gemm import gemm_bias_py
    C = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="bias 4"):
        gemm_bias_py(C, np.zeros((2, 5), np.float32), np.zeros((5, 3), np.float32),
                     np.zeros(4, np.float32))
