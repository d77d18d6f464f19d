"""PyTorch nn.GRU state dicts in and out (SPEC section 4).

The mapping tests run without torch (NumPy state dicts); the equivalence tests
compare against torch.nn.GRU itself and are skipped when torch is missing.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import GRU
from gru_cy import torch_compat

from tolerances import tol


def _numpy_sd(I, H, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"weight_ih_l0": rng.standard_normal((3 * H, I)).astype(dtype),
            "weight_hh_l0": rng.standard_normal((3 * H, H)).astype(dtype),
            "bias_ih_l0": rng.standard_normal(3 * H).astype(dtype),
            "bias_hh_l0": rng.standard_normal(3 * H).astype(dtype)}


def test_mapping_by_gate_name():
    I, H = 3, 4
    sd = _numpy_sd(I, H)
    layer = GRU(I, H, variant="reset_after")
    torch_compat.load_torch_state_dict(layer, sd)
    for k, gate in enumerate(("r", "z", "h")):
        rows = slice(k * H, (k + 1) * H)
        assert_allclose(layer.params[f"u{gate}.weights"], sd["weight_ih_l0"][rows], rtol=0, atol=0)
        assert_allclose(layer.params[f"w{gate}.weights"], sd["weight_hh_l0"][rows], rtol=0, atol=0)
        assert_allclose(layer.params[f"u{gate}.biases"], sd["bias_ih_l0"][rows], rtol=0, atol=0)
        assert_allclose(layer.params[f"w{gate}.biases"], sd["bias_hh_l0"][rows], rtol=0, atol=0)
    back = torch_compat.torch_state_dict(layer)
    assert list(back) == list(torch_compat.TORCH_KEYS)
    for k in sd:
        assert back[k].dtype == np.float32
        assert_allclose(back[k], sd[k], rtol=0, atol=0)


def test_prefix_and_missing_biases():
    I, H = 2, 3
    sd = _numpy_sd(I, H)
    layer = GRU(I, H, variant="reset_after")
    torch_compat.load_torch_state_dict(
        layer, {"rnn.weight_ih_l0": sd["weight_ih_l0"], "rnn.weight_hh_l0": sd["weight_hh_l0"]})
    assert_allclose(layer.params["uz.weights"], sd["weight_ih_l0"][H:2 * H], rtol=0, atol=0)
    assert_allclose(layer.params["wh.biases"], np.zeros(H), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "darknet"}, "variant.*reset_after"),
    ({"variant": "reset_after", "activation": "logistic"}, "activation.*tanh"),
    ({"variant": "reset_after", "batch_normalize": True}, "batch_normalize"),
])
def test_layers_torch_cannot_represent(kwargs, match):
    layer = GRU(2, 3, **kwargs)
    with pytest.raises(ValueError, match=match):
        torch_compat.load_torch_state_dict(layer, _numpy_sd(2, 3))
    with pytest.raises(ValueError, match=match):
        torch_compat.torch_state_dict(layer)


@pytest.mark.parametrize("extra,match", [
    ({"weight_ih_l1": np.zeros((9, 3))}, "multi-layer"),
    ({"weight_ih_l0_reverse": np.zeros((9, 2))}, "bidirectional"),
    ({"weight_hr_l0": np.zeros((3, 3))}, "proj_size"),
    ({"something": np.zeros(1)}, "unknown key"),
])
def test_unsupported_keys(extra, match):
    layer = GRU(2, 3, variant="reset_after")
    before = layer.params["uz.weights"].copy()
    with pytest.raises(ValueError, match=match):
        torch_compat.load_torch_state_dict(layer, {**_numpy_sd(2, 3), **extra})
    assert_allclose(layer.params["uz.weights"], before, rtol=0, atol=0)


def test_wrong_shape_and_missing_weight():
    layer = GRU(2, 3, variant="reset_after")
    sd = _numpy_sd(2, 3)
    sd["weight_hh_l0"] = np.zeros((9, 4), np.float32)
    with pytest.raises(ValueError, match=r"weight_hh_l0.*\(9, 3\).*\(9, 4\)"):
        torch_compat.load_torch_state_dict(layer, sd)
    with pytest.raises(ValueError, match="missing 'weight_hh_l0'"):
        torch_compat.load_torch_state_dict(layer, {"weight_ih_l0": np.zeros((9, 2))})


def test_layer_methods_delegate():
    layer = GRU(2, 3, variant="reset_after")
    sd = _numpy_sd(2, 3, seed=4)
    layer.load_torch_state_dict(sd)
    assert_allclose(layer.torch_state_dict()["bias_hh_l0"], sd["bias_hh_l0"], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,I,H", [(5, 3, 4, 6), (1, 1, 3, 2), (7, 2, 5, 9)])
def test_matches_torch_outputs_and_gradients(dtype, T, B, I, H):
    torch = pytest.importorskip("torch")
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(T * 100 + H)
    module = torch.nn.GRU(I, H).to(tdt)
    layer = GRU(I, H, variant="reset_after", dtype=dtype)
    layer.load_torch_state_dict(module.state_dict())       # torch tensors, no import here
    rng = np.random.default_rng(T + B + I + H)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstate = rng.standard_normal((B, H)).astype(dtype)

    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0[None], requires_grad=True)
    out, hn = module(xt, ht)
    ((out * torch.tensor(dy)).sum() + (hn[0] * torch.tensor(dstate)).sum()).backward()

    y = layer.forward(x, train=True, h0=h0)
    dx = layer.backward(dy, dstate)
    close = tol(dtype, "torch")
    assert_allclose(y, out.detach().numpy(), **close)
    assert_allclose(layer.state, hn.detach().numpy()[0], **close)
    assert_allclose(dx, xt.grad.numpy(), **close)
    assert_allclose(layer.dh0, ht.grad.numpy()[0], **close)
    # Weight gradients too, mapped back through the same table.
    g = {f"{side}{gate}": layer.grads[f"{side}{gate}.weights"]
         for side in "uw" for gate in "rzh"}
    assert_allclose(np.concatenate([g["ur"], g["uz"], g["uh"]]),
                    module.weight_ih_l0.grad.numpy(), **tol(dtype, "torch_weight_grad"))
    assert_allclose(np.concatenate([g["wr"], g["wz"], g["wh"]]),
                    module.weight_hh_l0.grad.numpy(), **tol(dtype, "torch_weight_grad"))
    # And back out unchanged.
    back = layer.torch_state_dict()
    for k, v in module.state_dict().items():
        assert back[k].dtype == v.numpy().dtype
        assert_allclose(back[k], v.numpy(), rtol=0, atol=0)
