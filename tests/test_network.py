"""Connected layer, losses and Network: forward, true gradients, Darknet's update."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import GRU
from gru_cy._cpu import net as cnet
from gru_cy.kernels import ACTIVATIONS
from gru_cy.nn import Connected, Cost, Network, Softmax, mse, softmax, softmax_cross_entropy

from finite_differences import central_difference
from kernel_oracles import act as act_ref, act_grad as act_grad_ref
from tolerances import tol

FD = tol(np.float64, "finite_diff_net")      # central_difference, h = 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_kernels(dtype, act):
    code = ACTIVATIONS.index(act)
    rng = np.random.default_rng(code)
    v = np.concatenate([rng.uniform(-6, 6, 5000), [-800, -20, -1, 0, 1, 20, 800]]).astype(dtype)
    outs = []
    for nt in (1, 2):
        y = v.copy()
        cnet.py_activation_forward(y, y.size, code, nt)
        outs.append(y)
    assert_allclose(outs[0], outs[1], rtol=0, atol=0)       # thread count changes nothing
    y = outs[0]
    assert np.all(np.isfinite(y))
    assert_allclose(y, act_ref(v.astype(np.float64), code), **tol(dtype, "activation"))
    d = rng.standard_normal(v.size).astype(dtype)
    dd = d.copy()
    cnet.py_activation_backward(dd, y, dd.size, code, 2)
    assert_allclose(dd, d * act_grad_ref(y.astype(np.float64), code),
                    **tol(dtype, "activation"))


def test_kernel_wrappers_validate():
    y = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="act"):
        cnet.py_activation_forward(y, 4, 13, 1)
    with pytest.raises(ValueError, match="at least 5"):
        cnet.py_activation_forward(y, 5, 0, 1)
    with pytest.raises(TypeError, match="No matching signature"):
        cnet.py_activation_forward(np.zeros(4, np.int32), 4, 0, 1)
    with pytest.raises(ValueError, match="dtype mismatch"):
        cnet.py_activation_backward(y, np.zeros(4), 4, 0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_and_their_gradients(dtype):
    rng = np.random.default_rng(0)
    logits = (5 * rng.standard_normal((7, 5))).astype(dtype)
    labels = rng.integers(0, 5, 7)
    onehot = np.eye(5, dtype=dtype)[labels]
    p = softmax(logits)
    e = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    assert_allclose(p, e / e.sum(1, keepdims=True), **tol(dtype, "activation"))
    loss, d = softmax_cross_entropy(logits, labels)
    loss2, d2 = softmax_cross_entropy(logits, onehot)
    assert loss == loss2
    assert_allclose(d, d2, rtol=0, atol=0)
    assert_allclose(loss, -np.log(p[np.arange(7), labels].astype(np.float64)).sum(),
                    **tol(dtype, "loss"))
    assert_allclose(d, p - onehot, rtol=0, atol=0)
    y = rng.standard_normal((4, 3)).astype(dtype)
    t = rng.standard_normal((4, 3)).astype(dtype)
    loss, dy = mse(y, t)
    assert_allclose(loss, 0.5 * ((y.astype(np.float64) - t) ** 2).sum(), **tol(dtype, "loss"))
    assert_allclose(dy, y - t, rtol=0, atol=0)
    with pytest.raises(ValueError, match="targets: expected shape"):
        mse(y, t[:2])
    with pytest.raises(ValueError, match="class indices in"):
        softmax_cross_entropy(logits, labels + 5)


def test_softmax_cross_entropy_is_the_true_gradient():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4))
    t = rng.dirichlet(np.ones(4), 3)
    _, d = softmax_cross_entropy(logits, t)
    for idx in [(0, 0), (1, 2), (2, 3)]:
        fd = central_difference(lambda: softmax_cross_entropy(logits, t)[0], logits, idx)
        assert_allclose(d[idx], fd, **FD)


def _reference_connected(layer, x):
    v = x.astype(np.float64) @ layer.params["weights"].T.astype(np.float64)
    if layer.batch_normalize:
        v = (v - layer.params["rolling_mean"]) / (np.sqrt(layer.params["rolling_variance"])
                                                 + 1e-6)
        v = layer.params["scales"] * v
    return act_ref(v + layer.params["biases"], ACTIVATIONS.index(layer.activation))


@pytest.mark.parametrize("act", ["linear", "logistic", "tanh", "leaky", "elu"])
@pytest.mark.parametrize("bn", [False, True])
def test_connected_forward(act, bn):
    rng = np.random.default_rng(2)
    layer = Connected(5, 3, activation=act, batch_normalize=bn, dtype=np.float64, seed=1)
    if bn:
        layer.params["rolling_mean"] = rng.standard_normal(3)
        layer.params["rolling_variance"] = rng.uniform(0.5, 2, 3)
        layer.params["scales"] = rng.standard_normal(3)
    layer.params["biases"] = rng.standard_normal(3)
    x = rng.standard_normal((6, 5))
    assert_allclose(layer.forward(x), _reference_connected(layer, x),
                    **tol(np.float64, "connected"))


@pytest.mark.parametrize("act", ["linear", "logistic", "tanh", "elu", "loggy"])
@pytest.mark.parametrize("bn", [False, True])
def test_connected_backward_is_the_true_gradient(act, bn):
    rng = np.random.default_rng(3)
    R, I, O = 5, 4, 3
    layer = Connected(I, O, activation=act, batch_normalize=bn, dtype=np.float64, seed=2)
    layer.params["biases"] = rng.standard_normal(O)
    x = rng.standard_normal((R, I))
    c = rng.standard_normal((R, O))
    if bn:
        layer.params["scales"] = rng.standard_normal(O)
    rolling = {k: layer.params[k].copy() for k in layer.params if "rolling" in k}

    def loss():
        for k, v in rolling.items():
            layer.params[k] = v
        return float((layer.forward(x, train=True) * c).sum())

    loss()
    dx = layer.backward(c)
    for idx in [(0, 0), (2, 3), (4, 1)]:
        assert_allclose(dx[idx], central_difference(loss, x, idx), **FD)
    keys = ["weights", "biases"] + (["scales"] if bn else [])
    for k in keys:
        w = layer.params[k]
        for idx in [tuple(0 for _ in w.shape), tuple(s - 1 for s in w.shape)]:
            g = layer.grads[k][idx]
            assert_allclose(g, central_difference(loss, w, idx), **FD)


def test_connected_grads_accumulate_and_bn_needs_two_rows():
    layer = Connected(3, 2, dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    layer.forward(x, train=True)
    layer.backward(np.ones((4, 2)))
    once = layer.grads["weights"].copy()
    layer.backward(np.ones((4, 2)))
    assert_allclose(layer.grads["weights"], 2 * once, rtol=0, atol=0)
    bn = Connected(3, 2, batch_normalize=True)
    with pytest.raises(ValueError, match="at least 2 rows"):
        bn.forward(np.ones((1, 3), np.float32), train=True)
    with pytest.raises(ValueError, match=r"x: expected shape \(R, 3\)"):
        bn.forward(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="x: expected a floating-point array"):
        bn.forward(np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="backward: expected a preceding"):
        Connected(3, 2).backward(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"params\['weights'\]: expected shape"):
        layer.params["weights"] = np.zeros((3, 2))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_connected_update_follows_darknet(optimizer):
    rng = np.random.default_rng(4)
    layer = Connected(3, 2, optimizer=optimizer, dtype=np.float64, seed=0)
    w0, b0 = layer.params["weights"].copy(), layer.params["biases"].copy()
    g_w, g_b = rng.standard_normal((2, 3)), rng.standard_normal(2)
    lr, mom, decay, batch = 0.1, 0.9, 0.01, 4
    u_w, u_b = np.zeros_like(w0), np.zeros_like(b0)
    m = {"w": np.zeros_like(w0), "b": np.zeros_like(b0)}
    v = {"w": np.zeros_like(w0), "b": np.zeros_like(b0)}
    w, b = w0.copy(), b0.copy()
    for t in (1, 2):
        layer.grads["weights"][...] = g_w
        layer.grads["biases"][...] = g_b
        layer.update(learning_rate=lr, momentum=mom, decay=decay, batch=batch)
        if optimizer == "sgd":
            u_w = u_w - g_w - decay * batch * w
            w = w + lr / batch * u_w
            u_w *= mom
            u_b = u_b - g_b
            b = b + lr / batch * u_b
            u_b *= mom
        else:
            for key, p, g in (("w", w, g_w), ("b", b, g_b)):
                gd = g + decay * batch * p
                m[key] = 0.9 * m[key] + 0.1 * gd
                v[key] = 0.999 * v[key] + 0.001 * gd * gd
                p -= lr * (m[key] / (1 - 0.9 ** t)) / (np.sqrt(v[key] / (1 - 0.999 ** t)) + 1e-7)
        assert_allclose(layer.params["weights"], w, **tol(np.float64, "connected_update"))
        assert_allclose(layer.params["biases"], b, **tol(np.float64, "connected_update"))
        assert not layer.grads["weights"].any()
    with pytest.raises(ValueError, match="batch"):
        layer.update()


def _small_net(dtype=np.float64, subdivisions=1, seed=0):
    return Network([GRU(3, 5, activation="tanh", dtype=dtype, seed=seed),
                    Connected(5, 4, activation="tanh", dtype=dtype, seed=seed),
                    Connected(4, 4, dtype=dtype, seed=seed + 1), Softmax(4)],
                   3, batch=2, time_steps=3, subdivisions=subdivisions)


def test_network_backward_is_the_true_gradient():
    net = _small_net()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 3))
    labels = rng.integers(0, 4, (3, 2))

    def loss():
        net.reset_state()
        y = net.forward(x, train=True)
        return net.loss(y, labels)[0]

    net.reset_state()
    y = net.forward(x, train=True)
    _, d = net.loss(y, labels)
    dx = net.backward(d, start=2)
    for idx in [(0, 0, 0), (1, 1, 2), (2, 0, 1)]:
        assert_allclose(dx[idx], central_difference(loss, x, idx), **FD)
    for layer, key in ((net.layers[2], "weights"), (net.layers[1], "biases"),
                       (net.layers[0], "uh.weights"), (net.layers[0], "wz.weights")):
        w = layer.params[key]
        idx = tuple(s // 2 for s in w.shape)
        assert_allclose(layer.grads[key][idx], central_difference(loss, w, idx), **FD)


def test_softmax_layer_backward_is_its_jacobian():
    rng = np.random.default_rng(6)
    sm = Softmax(6, groups=2, temperature=0.5)
    x = rng.standard_normal((3, 6))
    c = rng.standard_normal((3, 6))
    sm.forward(x, train=True)
    dx = sm.backward(c)

    def loss():
        return float((sm.forward(x) * c).sum())

    for idx in [(0, 0), (1, 4), (2, 5)]:
        assert_allclose(dx[idx], central_difference(loss, x, idx), **FD)


def test_train_step_updates_every_subdivisions_and_counts_seen():
    net = _small_net(dtype=np.float32, subdivisions=2)
    assert net.update_batch == 2 * 2 * 3
    x = np.random.default_rng(7).standard_normal((3, 2, 3)).astype(np.float32)
    labels = np.zeros((3, 2), np.int64)
    w0 = net.layers[2].params["weights"].copy()
    net.train_step(x, labels)
    assert net.seen == 6
    assert_allclose(net.layers[2].params["weights"], w0, rtol=0, atol=0)
    assert net.layers[2].grads["weights"].any()
    net.train_step(x, labels)
    assert net.seen == 12
    assert not np.array_equal(net.layers[2].params["weights"], w0)
    assert not net.layers[2].grads["weights"].any()


def test_training_lowers_the_loss():
    net = Network([GRU(3, 8, dtype=np.float64, seed=0, optimizer="adam"),
                   Connected(8, 2, dtype=np.float64, optimizer="adam", seed=0), Cost(2)],
                  3, batch=4, time_steps=5, learning_rate=0.01, decay=0)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 4, 3))
    t = np.stack([x[..., 0], x[..., 1] * x[..., 2]], axis=-1)
    losses = []
    for _ in range(60):
        net.reset_state()
        losses.append(net.train_step(x, t))
    assert losses[-1] < 0.5 * losses[0]


def test_network_validation():
    with pytest.raises(ValueError, match=r"layers\[1\] \(connected\): expected 5 inputs"):
        Network([GRU(3, 5), Connected(4, 2)], 3)
    net = _small_net(dtype=np.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\)"):
        net.predict(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"flat \(6, 3\)"):
        net.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="backward: expected a preceding"):
        net.backward(np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="batch"):
        net.update()
    with pytest.raises(ValueError, match="cost_type"):
        Cost(3, cost_type="L1")
    with pytest.raises(ValueError, match="without \\[softmax\\] or \\[cost\\]"):
        Network([Connected(3, 2)], 3).loss(np.zeros((1, 1, 2), np.float32),
                                           np.zeros((1, 1, 2), np.float32))


def test_predict_accepts_darknets_flat_rows():
    net = _small_net()
    x = np.random.default_rng(10).standard_normal((3, 2, 3))
    y = net.predict(x)
    net.reset_state()
    assert_allclose(net.predict(x.reshape(6, 3)), y.reshape(6, 4), rtol=0, atol=0)


def test_predict_carries_state_like_one_long_call():
    net = _small_net()
    x = np.random.default_rng(9).standard_normal((6, 2, 3))
    whole = net.predict(x)
    net.reset_state()
    parts = np.concatenate([net.predict(x[:2]), net.predict(x[2:3]), net.predict(x[3:])])
    assert_allclose(parts, whole, **tol(np.float64, "net_split"))


def test_read_only_inputs_are_accepted():
    # e.g. np.load(..., mmap_mode="r"): the kernels only read their inputs
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 4))
    t = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    for a in (x, t, labels):
        a.setflags(write=False)
    layer = Connected(4, 3, batch_normalize=True, dtype=np.float64, seed=0)
    y = layer.forward(x, train=True)
    dy = np.ones_like(y)
    dy.setflags(write=False)
    assert layer.backward(dy).shape == x.shape
    assert_allclose(softmax(x).sum(axis=1), 1, **tol(np.float64, "activation"))
    assert softmax_cross_entropy(x, labels)[1].shape == x.shape
    assert mse(x, t)[1].shape == x.shape
