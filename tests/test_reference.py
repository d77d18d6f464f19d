"""The NumPy reference against central finite differences and hand-computed numbers.

The reference (``gru_cy.reference``) is the oracle every engine is tested
against, so here it is checked against mathematics alone: its backward against
central differences of its own forward, and its update rules against numbers
worked out by hand.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import reference as ref

from finite_differences import gradient
from tolerances import tol

T, B, I, H = 3, 3, 4, 5

# Central differences in float64, h = 1e-6 (tolerances.py: "finite_diff").
FD = tol(np.float64, "finite_diff")
LAST_BIT = tol(np.float64, "last_bit")


def _setup(variant, activation, bn, seed=0):
    """Parameters, input, h0 and loss weights; everything non-degenerate.

    Biases, scales and rolling statistics are random (not Darknet's 0/1) so
    that every term of the backward is exercised; h0 is random with distinct
    rows (SPEC section 6: with equal rows the w* sublayers' batch variance at
    step 0 is 0 and BN's gradient is scaled by 1/1e-6).
    """
    rng = np.random.default_rng(seed)
    p = ref.init_params(I, H, batch_normalize=bn, seed=seed, nondegenerate=True)
    x = rng.normal(0.0, 1.0, (T, B, I))
    h0 = rng.uniform(-0.9, 0.9, (B, H))
    w = rng.normal(0.0, 1.0, (T, B, H))
    v = rng.normal(0.0, 1.0, (B, H))
    return p, x, h0, w, v


def _check_gradients(variant, activation, bn, train, backward=ref.backward):
    p, x, h0, w, v = _setup(variant, activation, bn)
    kw = dict(variant=variant, activation=activation, batch_normalize=bn, train=train)

    def loss():
        # every evaluation passes h0 explicitly; the reference never mutates
        # params, so rolling statistics are the same for every evaluation
        y, h_last, _ = ref.forward(p, x, h0, **kw)
        return np.sum(w * y) + np.sum(v * h_last)

    _, _, cache = ref.forward(p, x, h0, **kw)
    dx, dh0, grads = backward(p, cache, w, v)
    assert sorted(grads) == sorted(ref.trainable_names(bn))
    assert_allclose(dx, gradient(loss, x), **FD, err_msg="dx")
    assert_allclose(dh0, gradient(loss, h0), **FD, err_msg="dh0")
    for name, g in grads.items():
        assert_allclose(g, gradient(loss, p[name]), **FD, err_msg=name)


@pytest.mark.parametrize("variant", ref.VARIANTS)
@pytest.mark.parametrize("activation", ref.ACTIVATIONS)
@pytest.mark.parametrize("bn, train", [(False, False), (True, True), (True, False)],
                         ids=["nobn", "bn-train", "bn-infer"])
def test_backward_matches_finite_differences(variant, activation, bn, train):
    _check_gradients(variant, activation, bn, train)


def test_gradient_check_catches_a_wrong_backward():
    # A backward that uses the wrong activation derivative (logistic for a
    # tanh forward) must be caught by the same comparison.
    def wrong_backward(params, cache, dy, dstate):
        return ref.backward(params, dict(cache, activation="logistic"), dy, dstate)

    with pytest.raises(AssertionError):
        _check_gradients("darknet", "tanh", False, False, backward=wrong_backward)


def test_backward_without_dstate_equals_zero_dstate():
    p, x, h0, w, _ = _setup("reset_after", "tanh", True)
    _, _, cache = ref.forward(p, x, h0, variant="reset_after", batch_normalize=True,
                              train=True)
    a = ref.backward(p, cache, w)
    b = ref.backward(p, cache, w, np.zeros((B, H)))
    for u, e in zip(a[:2], b[:2]):
        assert_allclose(u, e, rtol=0, atol=0)
    for name in a[2]:
        assert_allclose(a[2][name], b[2][name], rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize("variant", ref.VARIANTS)
def test_forward_basics(variant):
    p, x, h0, _, _ = _setup(variant, "tanh", False)
    y, h_last, cache = ref.forward(p, x, h0, variant=variant)
    assert y.shape == (T, B, H) and h_last.shape == (B, H) and y.dtype == np.float64
    assert_allclose(y[-1], h_last, rtol=0, atol=0)
    # h0=None means zeros
    y0, _, _ = ref.forward(p, x, None, variant=variant)
    y1, _, _ = ref.forward(p, x, np.zeros((B, H)), variant=variant)
    assert_allclose(y0, y1, rtol=0, atol=0)
    # state carries: two calls equal one call over the concatenated input
    ya, ha, _ = ref.forward(p, x[:1], h0, variant=variant)
    yb, hb, _ = ref.forward(p, x[1:], ha, variant=variant)
    assert_allclose(np.concatenate([ya, yb]), y, **LAST_BIT)


def test_forward_one_step_by_hand():
    # T = B = I = H = 1, darknet variant, tanh: every quantity by hand.
    p = {f"{s}.weights": np.array([[w]]) for s, w in
         zip(ref.SUBLAYERS, (0.5, -0.3, 0.8, 0.2, 0.4, -0.6))}
    p.update({f"{s}.biases": np.array([b]) for s, b in
              zip(ref.SUBLAYERS, (0.1, 0.0, -0.2, 0.05, 0.0, 0.3))})
    x, h = 1.5, 0.4

    def sig(a):
        return 1.0 / (1.0 + np.exp(-a))

    z = sig(0.5 * x + 0.1 + 0.2 * h + 0.05)
    r = sig(-0.3 * x + 0.0 + 0.4 * h + 0.0)
    c_darknet = np.tanh(0.8 * x - 0.2 + (-0.6) * (r * h) + 0.3)
    c_after = np.tanh(0.8 * x - 0.2 + r * ((-0.6) * h + 0.3))
    for variant, c in (("darknet", c_darknet), ("reset_after", c_after)):
        y, _, cache = ref.forward(p, [[[x]]], [[h]], variant=variant)
        assert_allclose(cache["z"][0, 0, 0], z, **LAST_BIT)
        assert_allclose(cache["r"][0, 0, 0], r, **LAST_BIT)
        assert_allclose(cache["c"][0, 0, 0], c, **LAST_BIT)
        assert_allclose(y[0, 0, 0], z * h + (1 - z) * c, **LAST_BIT)


def test_batch_norm_train_statistics_and_rolling_copy():
    p, x, h0, _, _ = _setup("darknet", "logistic", True)
    before = {k: v.copy() for k, v in p.items()}
    _, _, cache = ref.forward(p, x, h0, activation="logistic", batch_normalize=True,
                              train=True)
    for k in p:
        assert_allclose(p[k], before[k], rtol=0, atol=0, err_msg=f"{k} mutated")
    # uz reads x directly: its rolling statistics are recomputable from x alone
    rm, rv = before["uz.rolling_mean"], before["uz.rolling_variance"]
    for t in range(T):
        a = x[t] @ p["uz.weights"].T
        rm = 0.99 * rm + 0.01 * a.mean(axis=0)
        rv = 0.99 * rv + 0.01 * a.var(axis=0, ddof=1)
    rolling = tol(np.float64, "rolling_reference")
    assert_allclose(cache["rolling"]["uz.rolling_mean"], rm, **rolling)
    assert_allclose(cache["rolling"]["uz.rolling_variance"], rv, **rolling)
    assert sorted(cache["rolling"]) == sorted(
        f"{s}.{k}" for s in ref.SUBLAYERS for k in ("rolling_mean", "rolling_variance"))
    # the normalised uz product at step 0 has mean 0 and (unbiased) std sd/(sd + 1e-6)
    a = x[0] @ p["uz.weights"].T
    vhat = (cache["out"]["uz"][0] - p["uz.biases"]) / p["uz.scales"]
    sd = a.std(axis=0, ddof=1)
    assert_allclose(vhat, (a - a.mean(axis=0)) / (sd + 1e-6),
                    **tol(np.float64, "bn_normalised"))
    with pytest.raises(ValueError, match="x"):
        ref.forward(p, x[:, :1], h0[:1], batch_normalize=True, train=True)


@pytest.mark.parametrize("activation", ref.ACTIVATIONS)
def test_forward_is_finite_for_huge_inputs(activation):
    # Darknet's CPU tanh returns NaN above ~355; the reference must not.
    p, x, h0, _, _ = _setup("darknet", activation, False)
    with np.errstate(over="raise", invalid="raise"):
        y, _, _ = ref.forward(p, 1e6 * x, h0, activation=activation)
        y2, _, _ = ref.forward(p, -1e6 * x, h0, activation=activation)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(y2))
    assert_allclose(ref.logistic(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0],
                    rtol=0, atol=0)


def test_bad_variant_and_activation():
    p, x, h0, _, _ = _setup("darknet", "tanh", False)
    with pytest.raises(ValueError, match="variant"):
        ref.forward(p, x, h0, variant="cudnn")
    with pytest.raises(ValueError, match="activation"):
        ref.forward(p, x, h0, activation="relu")


def test_init_params():
    p = ref.init_params(3, 4, batch_normalize=True, seed=1)
    assert sorted(p) == sorted(ref.param_names(True))
    for sub in ref.SUBLAYERS:
        fan_in = 3 if sub[0] == "u" else 4
        assert p[f"{sub}.weights"].shape == (4, fan_in)
        assert np.all(np.abs(p[f"{sub}.weights"]) <= np.sqrt(2.0 / fan_in))
        assert_allclose(p[f"{sub}.biases"], 0.0, atol=0)
        assert_allclose(p[f"{sub}.scales"], 1.0, atol=0)
        assert_allclose(p[f"{sub}.rolling_mean"], 0.0, atol=0)
        assert_allclose(p[f"{sub}.rolling_variance"], 1.0, atol=0)
    q = ref.init_params(3, 4, batch_normalize=True, seed=1)
    for k in p:
        assert_allclose(p[k], q[k], rtol=0, atol=0)


# Update rules: every expected number below was worked out by hand from SPEC's
# formulas (held to LAST_BIT: the last-bit rounding of the arithmetic).

def test_sgd_update_weight():
    # u = [.5, 0] - [.2, -.4] = [.3, .4]; u -= .01*4*[1, -2] -> [.26, .48]
    # w += (.1/4)*u -> [1.0065, -1.988]; u *= .9 -> [.234, .432]
    w, u = ref.sgd_update([1.0, -2.0], [0.5, 0.0], [0.2, -0.4], lr=0.1, momentum=0.9,
                          decay=0.01, batch=4, is_weight=True)
    assert_allclose(w, [1.0065, -1.988], **LAST_BIT)
    assert_allclose(u, [0.234, 0.432], **LAST_BIT)


def test_sgd_update_bias_gets_no_decay():
    # u = [.3, .4]; w += .025*u -> [1.0075, -1.99]; u *= .9 -> [.27, .36]
    w, u = ref.sgd_update([1.0, -2.0], [0.5, 0.0], [0.2, -0.4], lr=0.1, momentum=0.9,
                          decay=0.01, batch=4, is_weight=False)
    assert_allclose(w, [1.0075, -1.99], **LAST_BIT)
    assert_allclose(u, [0.27, 0.36], **LAST_BIT)


def test_sgd_update_clip_and_purity():
    # g clipped to [.2, -.3]: u = [.3, .3]; w = [1.0075, -1.9925]; u = [.27, .27]
    w0, u0, g0 = np.array([1.0, -2.0]), np.array([0.5, 0.0]), np.array([0.2, -0.4])
    w, u = ref.sgd_update(w0, u0, g0, lr=0.1, momentum=0.9, decay=0.01, batch=4,
                          is_weight=False, clip=0.3)
    assert_allclose(w, [1.0075, -1.9925], **LAST_BIT)
    assert_allclose(u, [0.27, 0.27], **LAST_BIT)
    assert_allclose(w0, [1.0, -2.0], atol=0)
    assert_allclose(u0, [0.5, 0.0], atol=0)
    assert_allclose(g0, [0.2, -0.4], atol=0)


def test_adam_update_first_step():
    # g' = .5 + .1*2*1 = .7; m = .07; v = .001*.49 = .00049
    # m/(1-.9) = .7; v/(1-.999) = .49, sqrt = .7; w = 1 - .01*.7/(.7 + 1e-7)
    w, m, v = ref.adam_update([1.0], [0.0], [0.0], [0.5], lr=0.01, b1=0.9, b2=0.999,
                              eps=1e-7, decay=0.1, batch=2, t=1)
    assert_allclose(m, [0.07], **LAST_BIT)
    assert_allclose(v, [0.00049], **LAST_BIT)
    assert_allclose(w, [1.0 - 0.01 * 0.7 / (0.7 + 1e-7)], **LAST_BIT)


def test_adam_update_third_step_with_clip():
    # g clipped to -.5, no decay; m = .9*.1 - .1*.5 = .04;
    # v = .999*.04 + .001*.25 = .04021; 1-.9^3 = .271; 1-.999^3 = .002997001
    w, m, v = ref.adam_update([-2.0], [0.1], [0.04], [-1.0], lr=0.001, b1=0.9,
                              b2=0.999, eps=1e-7, decay=0.0, batch=8, t=3, clip=0.5)
    assert_allclose(m, [0.04], **LAST_BIT)
    assert_allclose(v, [0.04021], **LAST_BIT)
    expected = -2.0 - 0.001 * (0.04 / 0.271) / (np.sqrt(0.04021 / 0.002997001) + 1e-7)
    assert_allclose(w, [expected], **LAST_BIT)
