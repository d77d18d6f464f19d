"""Tests of gru_cy.gradcheck: the check passes on correct gradients, fails on
wrong ones, leaves the layer as it found it, and its CLI exits 0 / 1 / 2.

The check's own tolerances (rtol 1e-6, atol 1e-8) are justified in the module
docstring; here the analytic float64 gradients must meet them on every
variant x activation x BN configuration, and an error of 1e-3 in one entry
(five orders of magnitude above atol) must be caught for exactly that tensor.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from threadpoolctl import threadpool_limits

import gru_cy
from gru_cy import gradcheck

from tolerances import tol

ROOT = Path(__file__).resolve().parents[1]
MATRIX = [(variant, activation, bn) for variant in gradcheck.VARIANTS
          for activation in gradcheck.ACTIVATIONS for bn in (False, True)]


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    # A check runs thousands of forwards on (3, 2, 4)-sized tensors, where an
    # OpenMP team only adds barriers (ruinous on a shared, oversubscribed
    # machine); the engine's results do not depend on the thread count, so one
    # thread changes the time and nothing else.  Subprocesses get
    # OMP_NUM_THREADS=1 for the same reason.  Building a layer first loads the
    # engine, and with it libgomp, so that threadpoolctl can find it.
    gru_cy.GRU(1, 1)
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _grad_names(batch_normalize):
    layer = gru_cy.GRU(3, 4, batch_normalize=batch_normalize, dtype=np.float64, seed=0)
    return list(layer.grads)


def _run_cli(args, script=None, timeout=300):
    """Run ``python -m gru_cy gradcheck ARGS`` (or a script) from the repository root.

    The child imports the same gru_cy as the tests (see conftest.py).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if script is None:
        cmd = [sys.executable, "-m", "gru_cy", "gradcheck", *args]
    else:
        cmd = [sys.executable, "-c", script, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _has_cuda():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# --- the check passes on the engine's float64 gradients --------------------------------

@pytest.mark.parametrize("variant, activation, batch_normalize", MATRIX)
@pytest.mark.parametrize("batch", [2, 3])
def test_check_passes_on_matrix(variant, activation, batch_normalize, batch):
    # B = 2 with BN is the degenerate case (vhat = +-1/sqrt(2) up to O(1e-6));
    # B = 3 exercises the full BN backward.
    res = gradcheck.check(inputs=3, outputs=4, batch=batch, steps=3, variant=variant,
                          activation=activation, batch_normalize=batch_normalize, seed=1)
    assert res.ok, res.format_table()
    assert [r["name"] for r in res.rows] == ["x", "h0", *_grad_names(batch_normalize)]
    for row in res.rows:
        assert row["checked"] == row["size"] == int(np.prod(row["shape"]))
    assert res.config["variant"] == variant and res.config["steps"] == 3
    assert res.rows[0]["shape"] == [3, batch, 3]


def test_check_all_covers_matrix():
    results = gradcheck.check_all(batch=3, steps=2, max_coords=6)
    assert [(r.config["variant"], r.config["activation"], r.config["batch_normalize"])
            for r in results] == MATRIX
    assert all(r.ok for r in results), "\n\n".join(r.format_table() for r in results)


def test_sampling_is_seeded_and_bounded():
    kw = dict(inputs=5, outputs=7, batch=3, steps=4, max_coords=10, seed=3)
    a = gradcheck.check(**kw).to_dict()
    b = gradcheck.check(**kw).to_dict()
    assert a["ok"]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["checked"] == min(ra["size"], 10)
        # same seed, same coordinates, same arithmetic: identical numbers
        assert_allclose(ra["max_abs_err"], rb["max_abs_err"], rtol=0, atol=0)
        assert_allclose(ra["max_abs_grad"], rb["max_abs_grad"], rtol=0, atol=0)


def test_prebuilt_layer_is_restored():
    # A gradient check must not leave traces: parameters, rolling statistics
    # and the carried state are exactly as before (SPEC section 6).
    layer = gru_cy.GRU(3, 4, variant="reset_after", batch_normalize=True,
                       dtype=np.float64, seed=5)
    rng = np.random.default_rng(0)
    for k, a in layer.params.items():
        if k.endswith("rolling_variance"):
            layer.params[k] = rng.uniform(0.5, 2.0, a.shape)
        elif not k.endswith(".weights"):
            layer.params[k] = rng.uniform(-1.0, 1.0, a.shape)
    layer.forward(rng.uniform(-1.0, 1.0, (2, 3, 3)), train=False)
    before = {k: np.array(a) for k, a in layer.params.items()}
    state = np.array(layer.state)
    res = gradcheck.check(batch=3, steps=2, layer=layer)
    assert res.ok, res.format_table()
    assert res.config["variant"] == "reset_after" and res.config["batch_normalize"]
    for k, a in layer.params.items():
        assert_allclose(np.array(a), before[k], rtol=0, atol=0, err_msg=k)
    assert_allclose(np.array(layer.state), state, rtol=0, atol=0)


# --- the checker is shown to fail --------------------------------------------------------

@pytest.mark.parametrize("target, batch_normalize", [
    ("x", False), ("uh.weights", False), ("wr.biases", False), ("wz.weights", True),
    ("ur.scales", True)])
def test_wrong_gradient_is_caught(target, batch_normalize):
    layer = gru_cy.GRU(3, 4, batch_normalize=batch_normalize, dtype=np.float64, seed=2)
    backward = layer.backward

    def broken_backward(dy, dstate=None):
        dx = backward(dy, dstate)
        if target == "x":
            dx[1, 0, 2] += 1e-3
        else:
            layer.grads[target].reshape(-1)[1] += 1e-3
        return dx

    layer.backward = broken_backward
    res = gradcheck.check(batch=3, steps=3, layer=layer)
    assert not res.ok
    assert res.failed == [target], res.format_table()
    row = next(r for r in res.rows if r["name"] == target)
    assert_allclose(row["max_abs_err"], 1e-3, **tol(np.float64, "gradcheck_injected"))


def test_scaled_gradient_is_caught():
    layer = gru_cy.GRU(3, 4, variant="reset_after", activation="logistic",
                       dtype=np.float64, seed=4)
    backward = layer.backward

    def scaled_backward(dy, dstate=None):
        dx = backward(dy, dstate)
        layer.grads["wh.weights"][...] *= 1.001
        return dx

    layer.backward = scaled_backward
    res = gradcheck.check(layer=layer)
    assert res.failed == ["wh.weights"], res.format_table()
    assert_allclose(next(r for r in res.rows if r["name"] == "wh.weights")["max_rel_err"],
                    1e-3, **tol(np.float64, "gradcheck_scaled"))


def test_float32_layer_is_rejected():
    layer = gru_cy.GRU(3, 4, dtype=np.float32, seed=0)
    with pytest.raises(ValueError, match="float64"):
        gradcheck.check(layer=layer)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(batch=0), ValueError, "batch"),
    (dict(steps=1.5), TypeError, "steps"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(atol=-1.0), ValueError, "atol"),
    (dict(variant="lstm"), ValueError, "variant"),
    (dict(activation="relu"), ValueError, "activation"),
    (dict(batch_normalize=True, batch=1), ValueError, "batch"),
    (dict(max_coords=0), ValueError, "max_coords"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gradcheck.check(**kwargs)


# --- CLI -------------------------------------------------------------------------------

BROKEN_SCRIPT = textwrap.dedent("""
    import sys
    import gru_cy
    import gru_cy.gradcheck

    backward = gru_cy.GRU.backward

    def broken_backward(self, dy, dstate=None):
        dx = backward(self, dy, dstate)
        dx[0, 0, 0] += 1e-3
        return dx

    gru_cy.GRU.backward = broken_backward
    sys.exit(gru_cy.gradcheck.main(sys.argv[1:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    [],
    ["--variant", "reset_after", "--activation", "logistic"],
    ["--batch-normalize", "--batch", "3", "--steps", "4"],
])
def test_cli_passes(args):
    proc = _run_cli(args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout


@pytest.mark.slow
def test_cli_fails_on_broken_backward():
    proc = _run_cli(["--steps", "2"], script=BROKEN_SCRIPT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout
    failing = [line.split()[0] for line in proc.stdout.splitlines()
               if line.rstrip().endswith("FAIL") and line.startswith("  ")
               and not line.lstrip().startswith("FAIL")]
    assert failing == ["x"], proc.stdout


@pytest.mark.slow
def test_cli_json(tmp_path):
    out = tmp_path / "grad.json"
    proc = _run_cli(["--batch-normalize", "--batch", "3", "--steps", "4", "--seed", "7",
                     "--max-coords", "5", "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True and len(data["results"]) == 1
    result = data["results"][0]
    assert result["ok"] is True
    config = result["config"]
    assert (config["steps"], config["batch"], config["seed"], config["batch_normalize"]) \
        == (4, 3, 7, True)
    assert config["rtol"] == gradcheck.DEFAULT_RTOL and config["atol"] == gradcheck.DEFAULT_ATOL
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["x", "h0", *_grad_names(True)]
    assert rows["x"]["shape"] == [4, 3, 3]  # --steps is T
    for r in rows.values():
        assert set(r) == {"name", "shape", "size", "checked", "max_abs_grad", "max_abs_err",
                          "max_rel_err", "fd_error", "ok"}
        assert r["ok"] is True and r["checked"] == min(r["size"], 5)


@pytest.mark.slow
def test_cli_all_json(tmp_path):
    out = tmp_path / "all.json"
    proc = _run_cli(["--all", "--batch", "3", "--steps", "2", "--max-coords", "4",
                     "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert [(r["config"]["variant"], r["config"]["activation"],
             r["config"]["batch_normalize"]) for r in data["results"]] == MATRIX


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--variant", "lstm"],
    ["--activation", "relu"],
    ["--batch", "0"],
    ["--steps", "two"],
    ["--eps", "-1e-3"],
    ["--atol", "nan"],
    ["--no-such-option"],
    ["--batch-normalize", "--batch", "1"],
    ["--all", "--batch", "1"],
    ["--device", "tpu"],
])
def test_cli_bad_usage_exits_2(args):
    proc = _run_cli(args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error" in proc.stderr


def test_main_returns_2_in_process(capsys):
    assert gradcheck.main(["--batch", "-3"]) == 2
    assert gradcheck.main(["--batch-normalize", "--batch", "1"]) == 2
    assert "batch" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(_has_cuda(), reason="a GPU is present: this checks the message without one")
def test_cli_cuda_without_gpu_exits_2():
    proc = _run_cli(["--device", "cuda"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cuda" in proc.stderr.lower()
