"""The engine's backward against an independent automatic differentiation.

The SPEC's forward is written again here in torch (autograd, float64), from
the SPEC text alone — not from gru_cy.reference — and torch differentiates
it.  Skipped where torch is not installed (it is an optional reference, never
a dependency).
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import gru_cy

from tolerances import tol

torch = pytest.importorskip("torch")

SUBS = ("uz", "ur", "uh", "wz", "wr", "wh")


def spec_forward(P, x, h0, variant, activation, bn):
    """SPEC section 1 in torch; P holds torch tensors with requires_grad."""
    act = torch.tanh if activation == "tanh" else torch.sigmoid

    def sub(name, v):
        out = v @ P[f"{name}.weights"].T
        if not bn:
            return out + P[f"{name}.biases"]
        mu = out.mean(0)
        var = ((out - mu) ** 2).sum(0) / (out.shape[0] - 1)
        vhat = (out - mu) / (torch.sqrt(var) + 1e-6)
        return P[f"{name}.scales"] * vhat + P[f"{name}.biases"]

    h = h0
    ys = []
    for t in range(x.shape[0]):
        z = torch.sigmoid(sub("uz", x[t]) + sub("wz", h))
        r = torch.sigmoid(sub("ur", x[t]) + sub("wr", h))
        if variant == "darknet":
            c = act(sub("uh", x[t]) + sub("wh", r * h))
        else:
            c = act(sub("uh", x[t]) + r * sub("wh", h))
        h = z * h + (1 - z) * c
        ys.append(h)
    return torch.stack(ys), h


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
@pytest.mark.parametrize("variant", ["darknet", "reset_after"])
def test_backward_matches_torch_autograd(variant, activation, bn, dtype):
    rng = np.random.default_rng(11)
    T, B, I, H = 5, 4, 6, 7
    layer = gru_cy.GRU(I, H, variant=variant, activation=activation, batch_normalize=bn,
                       dtype=dtype, seed=3)
    for s in SUBS:
        layer.params[f"{s}.biases"] = rng.normal(0, 0.3, H)
        if bn:
            layer.params[f"{s}.scales"] = rng.uniform(0.5, 1.5, H)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))          # distinct rows (SPEC section 6)
    dy = rng.standard_normal((T, B, H))
    dstate = rng.standard_normal((B, H))

    y = layer.forward(x, train=True, h0=h0)
    dx = layer.backward(dy, dstate)

    P = {k: torch.tensor(np.array(v, dtype=np.float64), requires_grad=True)
         for k, v in layer.params.items() if k in layer.grads}
    xt = torch.tensor(np.asarray(x, dtype), dtype=torch.float64, requires_grad=True)
    ht = torch.tensor(np.asarray(h0, dtype), dtype=torch.float64, requires_grad=True)
    yt, hT = spec_forward(P, xt, ht, variant, activation, bn)
    loss = (yt * torch.tensor(dy)).sum() + (hT * torch.tensor(dstate)).sum()
    loss.backward()

    close = tol(dtype, "autodiff")
    assert_allclose(y, yt.detach().numpy(), **close)
    assert_allclose(dx, xt.grad.numpy(), **close, err_msg="dx")
    assert_allclose(layer.dh0, ht.grad.numpy(), **close, err_msg="dh0")
    for k, p in P.items():
        assert_allclose(layer.grads[k], p.grad.numpy(), **close, err_msg=k)
