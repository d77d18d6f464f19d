"""update(): Darknet's SGD and Adam exactly as SPEC writes them, over several steps."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy

from tolerances import tol

UPDATE = tol(np.float64, "update")      # float64 engine vs the formulas in NumPy


def _train_step(layer, rng, T=3, B=4):
    x = rng.standard_normal((T, B, layer.inputs))
    h0 = rng.standard_normal((B, layer.outputs))
    layer.forward(x, train=True, h0=h0)
    layer.backward(rng.standard_normal((T, B, layer.outputs)))
    return {k: np.array(v) for k, v in layer.grads.items()}


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_sgd_three_steps(bn, clip):
    rng = np.random.default_rng(1)
    layer = gru_cy.GRU(3, 5, batch_normalize=bn, dtype=np.float64, seed=2)
    w = {k: np.array(v) for k, v in layer.params.items() if k in layer.grads}
    u = {k: np.zeros_like(v) for k, v in w.items()}
    lr, mom, decay = 0.1, 0.9, 0.01
    for step in range(3):
        g = _train_step(layer, rng)
        batch = 3 * 4                                  # rows seen: T * B
        layer.update(learning_rate=lr, momentum=mom, decay=decay, clip=clip)
        for k in w:
            gk = g[k] if clip is None else np.clip(g[k], -clip, clip)
            u[k] = u[k] - gk
            if k.endswith(".weights"):
                u[k] = u[k] - decay * batch * w[k]
            w[k] = w[k] + (lr / batch) * u[k]
            u[k] = mom * u[k]
            assert_allclose(layer.params[k], w[k], **UPDATE, err_msg=k)
            assert_array_equal(layer.grads[k], 0)


@pytest.mark.parametrize("bn", [False, True])
def test_adam_three_steps_with_bias_correction(bn):
    rng = np.random.default_rng(3)
    layer = gru_cy.GRU(3, 5, batch_normalize=bn, optimizer="adam", dtype=np.float64, seed=4)
    w = {k: np.array(v) for k, v in layer.params.items() if k in layer.grads}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    lr, b1, b2, eps, decay, batch = 0.01, 0.8, 0.95, 1e-7, 0.001, 7.0
    for t in range(1, 4):
        g = _train_step(layer, rng)
        layer.update(learning_rate=lr, decay=decay, batch=batch, b1=b1, b2=b2, eps=eps)
        for k in w:
            gp = g[k] + decay * batch * w[k]             # Darknet decays every tensor
            m[k] = b1 * m[k] + (1 - b1) * gp
            v2[k] = b2 * v2[k] + (1 - b2) * gp ** 2
            mhat = m[k] / (1 - b1 ** t)
            vhat = v2[k] / (1 - b2 ** t)
            w[k] = w[k] - lr * mhat / (np.sqrt(vhat) + eps)
            assert_allclose(layer.params[k], w[k], **UPDATE, err_msg=k)


def test_batch_counts_rows_and_resets():
    rng = np.random.default_rng(0)
    a = gru_cy.GRU(2, 3, dtype=np.float64, seed=0)
    b = gru_cy.GRU(2, 3, dtype=np.float64, seed=0)
    for layer in (a, b):
        x = rng.standard_normal((4, 2, 2))
        dy = rng.standard_normal((4, 2, 3))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 2, 2))
        dy = rng.standard_normal((4, 2, 3))
        layer.forward(x, train=True, h0=np.zeros((2, 3)))
        layer.backward(dy)
        layer.backward(dy)                      # 2 * T * B = 16 rows
    a.update(learning_rate=0.5)
    b.update(learning_rate=0.5, batch=16)
    for k in a.params:
        assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(ValueError, match="batch"):
        a.update()                              # no rows since the last update
    a.forward(x, train=True, h0=np.zeros((2, 3)))
    a.backward(dy)
    a.zero_grad()
    with pytest.raises(ValueError, match="batch"):
        a.update()


def test_float32_update_matches_float64():
    rng = np.random.default_rng(5)
    l32 = gru_cy.GRU(3, 4, dtype=np.float32, seed=1, optimizer="adam")
    l64 = gru_cy.GRU(3, 4, dtype=np.float64, seed=1, optimizer="adam")
    x = rng.standard_normal((3, 2, 3))
    dy = rng.standard_normal((3, 2, 4))
    for layer in (l32, l64):
        for _ in range(3):
            layer.forward(x, train=True, h0=np.zeros((2, 4)))
            layer.backward(dy)
            layer.update(learning_rate=0.01)
    for k in l64.params:
        assert_allclose(l32.params[k], l64.params[k], **tol(np.float32, "float64_twin"),
                        err_msg=k)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_sgd_kernels_over_a_team_give_one_thread_bits(dtype):
    # SGD's step and check run over ranges of the parameter vector (parts of
    # update_kernels.h's loops per thread from 0.5 M elements on); the weight
    # decay's end and the parts' ends fall inside parts here.  Same bits as one
    # thread, equal to the rule in float64 within rounding, clip included.
    from gru_cy._cpu import update as U
    rng = np.random.default_rng(3)
    n, n_decay = 600_001, 300_007
    w0, u0 = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    g0 = (3 * rng.standard_normal(n)).astype(dtype)
    lr, mom, decay, batch, clip = 0.1, 0.9, 1e-3, 6.0, 2.0
    out = {}
    for nt in (1, 2):
        w, u, g = w0.copy(), u0.copy(), g0.copy()
        flag = np.zeros(1, dtype)
        U.py_sgd_check(flag, w, u, g, n, n_decay, lr, mom, decay, batch, clip, nt)
        assert flag[0] == 0
        U.py_sgd_update(w, u, g, n, n_decay, lr, mom, decay, batch, clip, nt)
        assert not g.any()
        out[nt] = (w, u)
    assert_array_equal(out[1][0], out[2][0])
    assert_array_equal(out[1][1], out[2][1])
    w, u, g = (a.astype(np.float64) for a in (w0, u0, g0))
    ui = u - np.clip(g, -clip, clip)
    ui[:n_decay] -= decay * batch * w[:n_decay]
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    assert_allclose(out[2][0], w + lr / batch * ui, rtol=rtol, atol=rtol)
    assert_allclose(out[2][1], mom * ui, rtol=rtol, atol=rtol)
    for where in (5, n_decay + 5, n - 1):      # one non-finite step, in either range
        for nt in (1, 2):
            g = g0.copy()
            g[where] = np.inf
            flag = np.zeros(1, dtype)
            U.py_sgd_check(flag, w0, u0, g, n, n_decay, lr, mom, decay, batch, 0.0, nt)
            assert flag[0] == 1, (where, nt)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_adam_kernels_over_a_team_give_one_thread_bits(dtype):
    # Adam's step and check over parts of the parameter vector: one thread's
    # bits on a team, the rule in float64 within rounding (clip, decay).
    from gru_cy._cpu import update as U
    rng = np.random.default_rng(4)
    n = 100_003
    w0, m0 = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    v0 = rng.random(n).astype(dtype)
    g0 = (3 * rng.standard_normal(n)).astype(dtype)
    lr, b1, b2, eps, decay, batch, t, clip = 0.01, 0.9, 0.999, 1e-7, 1e-3, 6.0, 3, 2.0
    out = {}
    for nt in (1, 2):
        w, m, v, g = w0.copy(), m0.copy(), v0.copy(), g0.copy()
        flag = np.zeros(1, dtype)
        U.py_adam_check(flag, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip, nt)
        assert flag[0] == 0
        U.py_adam_update(w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip, nt)
        assert not g.any()
        out[nt] = (w, m, v)
    for a, b in zip(out[1], out[2]):
        assert_array_equal(a, b)
    w, m, v, g = (a.astype(np.float64) for a in (w0, m0, v0, g0))
    gi = np.clip(g, -clip, clip) + decay * batch * w
    m = b1 * m + (1 - b1) * gi
    v = b2 * v + (1 - b2) * gi * gi
    w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    for a, ref in zip(out[2], (w, m, v)):
        assert_allclose(a, ref, rtol=rtol, atol=rtol)
    for where in (0, n // 2, n - 1):
        for nt in (1, 2):
            m = m0.copy()
            m[where] = np.nan
            flag = np.zeros(1, dtype)
            U.py_adam_check(flag, w0, m, v0, g0, n, lr, b1, b2, eps, decay, batch, t, 0.0, nt)
            assert flag[0] == 1, (where, nt)
