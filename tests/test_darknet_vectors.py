"""Forward against Darknet's own outputs (tests/data/gru_*.npz, SPEC section 5).

Each file holds one Darknet GRU layer ("darknet" variant) run over ``ncalls``
consecutive forward calls with the state carried.  The same helper runs the
NumPy reference and the Cython engine on a file, so both are held to the same
numbers: outputs and state of every call, the rolling statistics after the
last call (BN files) and, for the reference, the gates, candidate and every
sublayer's output in the last call.
"""

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import reference as ref

from tolerances import tol

try:
    from gru_cy import GRU
    _NO_ENGINE = None
except ImportError as exc:
    GRU = None
    _NO_ENGINE = f"gru_cy.GRU is not importable yet (engine not built or written): {exc}"

DATA = Path(__file__).parent / "data"
FILES = sorted(DATA.glob("gru_*.npz"))

_NEEDS_ENGINE = pytest.mark.skipif(GRU is None, reason=str(_NO_ENGINE))
ENGINES = [
    pytest.param("reference", None, id="reference"),
    pytest.param("cpu", np.float32, marks=_NEEDS_ENGINE, id="cpu-float32"),
    pytest.param("cpu", np.float64, marks=_NEEDS_ENGINE, id="cpu-float64"),
]


def load_params(data):
    """The layer's parameters from a vector file, keyed by SPEC names (float32)."""
    bn = bool(data["batch_normalize"])
    return {name: data[name.replace(".", "_")] for name in ref.param_names(bn)}


def run_vectors(data, engine, dtype=np.float64):
    """Run one vector file through the reference or the CPU engine.

    Parameters
    ----------
    data : NpzFile
        A ``gru_*.npz`` file.
    engine : {"reference", "cpu"}
        The reference starts call ``c`` from Darknet's ``calls_state[c-1]``
        (call 0 from ``init_state``) and carries the rolling statistics itself;
        the engine gets ``init_state`` once and carries its own state.
    dtype : numpy dtype
        The engine's dtype (ignored by the reference, which is float64).

    Returns
    -------
    dict
        ``"output"`` (ncalls, T, B, H), ``"state"`` (ncalls, B, H), ``"rolling"``
        (dict of SPEC-named rolling statistics after the last call, empty
        without BN) and, for the reference only, ``"last"``: the last call's
        gates, candidate and sublayer outputs under the file's key names.
    """
    bn = bool(data["batch_normalize"])
    activation = "tanh" if data["tanh"] else "logistic"
    params = load_params(data)
    outputs, states, last = [], [], {}
    if engine == "reference":
        for c in range(int(data["ncalls"])):
            h0 = data["init_state"] if c == 0 else data["calls_state"][c - 1]
            y, h, cache = ref.forward(params, data["calls_input"][c], h0, variant="darknet",
                                      activation=activation, batch_normalize=bn,
                                      train=bool(data["calls_train"][c]))
            if "rolling" in cache:
                params.update(cache["rolling"])
            outputs.append(y)
            states.append(h)
        last = {"last_z": cache["z"][-1], "last_r": cache["r"][-1], "last_h": cache["c"][-1]}
        last.update({f"last_call_{sub}_out": cache["out"][sub] for sub in ref.SUBLAYERS})
    else:
        layer = GRU(int(data["inputs"]), int(data["outputs"]), variant="darknet",
                    activation=activation, batch_normalize=bn, dtype=dtype)
        for name, value in params.items():
            layer.params[name] = np.asarray(value, dtype=dtype)
        for c in range(int(data["ncalls"])):
            h0 = data["init_state"] if c == 0 else None
            outputs.append(np.array(layer.forward(data["calls_input"][c],
                                                  train=bool(data["calls_train"][c]), h0=h0)))
            states.append(np.array(layer.state))
        params = {name: np.array(layer.params[name]) for name in params}
    rolling = {k: v for k, v in params.items() if ".rolling_" in k}
    return {"output": np.stack(outputs), "state": np.stack(states), "rolling": rolling,
            "last": last}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
@pytest.mark.parametrize("engine, dtype", ENGINES)
def test_forward_matches_darknet(path, engine, dtype):
    data = np.load(path)
    bn = bool(data["batch_normalize"])
    # whatever the engine's dtype: Darknet's numbers are float32
    close = tol(data["calls_output"].dtype, "darknet_bn" if bn else "darknet")
    got = run_vectors(data, engine, dtype)
    assert_allclose(got["output"], data["calls_output"], **close,
                    err_msg=f"{engine} {path.stem}: calls_output")
    assert_allclose(got["state"], data["calls_state"], **close,
                    err_msg=f"{engine} {path.stem}: calls_state")
    if bn:
        for name, value in got["rolling"].items():
            key = name.replace(".", "_") + "_after"
            assert_allclose(value, data[key], **close, err_msg=f"{engine} {path.stem}: {key}")
    for key, value in got["last"].items():
        assert_allclose(value, data[key], **close, err_msg=f"{engine} {path.stem}: {key}")


def test_vector_files_are_present_and_complete():
    # Six configurations: both activations, BN on and off, train and
    # inference, one and several calls, a random initial state.
    assert len(FILES) == 6
    seen = set()
    for path in FILES:
        data = np.load(path)
        n, T, B, I = data["calls_input"].shape
        H = int(data["outputs"])
        assert (n, T, B, I) == (int(data["ncalls"]), int(data["steps"]),
                                int(data["batch"]), int(data["inputs"]))
        assert data["calls_output"].shape == (n, T, B, H)
        seen.add((int(data["tanh"]), int(data["batch_normalize"]), int(data["train"])))
        if data["batch_normalize"]:
            for sub in ref.SUBLAYERS:
                assert f"{sub}_rolling_variance_after" in data.files
    assert {t for t, _, _ in seen} == {0, 1}
    assert {b for _, b, _ in seen} == {0, 1}
    assert {tr for _, _, tr in seen} == {0, 1}
