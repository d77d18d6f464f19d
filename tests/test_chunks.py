"""Long sequences and big batches: the engine processes time in chunks of
about 512 rows (steps x batch); results must not depend on the chunking."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy
from gru_cy import reference

from tolerances import tol


# float64 engine vs float64 reference through 200 steps (tolerances.py:
# "reference", atol scaled by each tensor's largest magnitude).
def close(actual, desired, err_msg=""):
    scale = max(1.0, float(np.abs(desired).max()))
    assert_allclose(actual, desired, **tol(np.float64, "reference", scale), err_msg=err_msg)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
@pytest.mark.parametrize("T, B", [(200, 3), (3, 600), (7, 100)])
def test_chunked_forward_backward_match_reference(variant, bn, T, B):
    rng = np.random.default_rng(T * B)
    I, H = 3, 4
    layer = gru_cy.GRU(I, H, variant=variant, batch_normalize=bn, dtype=np.float64, seed=1)
    p = {k: np.array(v) for k, v in layer.params.items()}
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    y = layer.forward(x, train=True, h0=h0)
    dx = layer.backward(dy)
    yr, hr, cache = reference.forward(p, x, h0, variant=variant, activation="tanh",
                                      batch_normalize=bn, train=True)
    dxr, dh0r, gr = reference.backward(p, cache, dy)
    close(y, yr)
    close(dx, dxr)
    close(layer.dh0, dh0r)
    for k in gr:
        close(layer.grads[k], gr[k], err_msg=k)
    if bn:
        for k, v in cache["rolling"].items():
            close(layer.params[k], v, err_msg=k)


def test_chunked_results_identical_across_threads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5, 6)).astype(np.float32)
    dy = rng.standard_normal((300, 5, 9)).astype(np.float32)
    out = []
    for n in (1, 2):
        layer = gru_cy.GRU(6, 9, seed=2, num_threads=n)
        y = layer.forward(x, train=True)
        dx = layer.backward(dy)
        out.append((y, dx, {k: v.copy() for k, v in layer.grads.items()}))
    assert_array_equal(out[0][0], out[1][0])
    assert_array_equal(out[0][1], out[1][1])
    for k in out[0][2]:
        assert_array_equal(out[0][2][k], out[1][2][k])
