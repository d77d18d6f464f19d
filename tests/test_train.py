"""``gru-cy train`` and ``gru-cy generate`` through a subprocess, exit codes asserted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import darknet

from tolerances import tol

pytestmark = pytest.mark.slow           # every test runs the CLI in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and fast: T = 10 keeps the adding problem easy, one thread avoids
# oversubscribing a shared machine.
SMALL = ["--hidden", "8", "--steps", "10", "--batch", "16", "--threads", "1",
         "--eval-every", "50", "--eval-size", "200", "--quiet"]


def _run(*args, cwd=None):
    # The child imports the same gru_cy as the tests (see conftest.py).
    return subprocess.run([sys.executable, "-m", "gru_cy", *args], capture_output=True,
                          text=True, errors="replace", cwd=cwd or ROOT, timeout=300)


def test_short_adding_run_lowers_the_loss(tmp_path):
    out = tmp_path / "r.json"
    r = _run("train", "--iterations", "300", "--target", "0", "--json", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert {"task", "final_loss", "baseline_loss", "steps", "seconds"} <= set(res)
    assert res["task"] == "adding"
    assert res["steps"] == 10
    assert res["iterations"] == 300
    # The constant-1 baseline of the adding problem is 1/6 (sum of two U(0, 1)).
    assert_allclose(res["baseline_loss"], 1 / 6, **tol(np.float32, "adding_baseline"))
    assert res["final_loss"] < 0.5 * res["baseline_loss"]
    assert "final loss" in r.stdout


def test_stops_early_once_the_target_is_reached(tmp_path):
    out = tmp_path / "r.json"
    r = _run("train", "--iterations", "3000", "--target", "0.5", "--json", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["reached_target"]
    assert res["iterations"] < 3000
    assert res["final_loss"] < 0.5 * res["baseline_loss"]


def test_progress_bar_goes_to_stderr(tmp_path):
    args = [a for a in SMALL if a != "--quiet"]
    r = _run("train", "--iterations", "20", *args)
    assert r.returncode == 0, r.stderr
    assert "20/20" in r.stderr
    assert "[" not in r.stdout


@pytest.mark.parametrize("args", [
    ["--steps", "0"],
    ["--task", "bogus"],
    ["--learning-rate", "-1"],
    ["--iterations", "x"],
    ["--task", "copy", "--steps", "5"],
    ["--text", "/nonexistent/file.txt"],
    ["--no-such-option"],
])
def test_bad_usage_exits_2(args):
    r = _run("train", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "gru-cy train" in r.stderr
    assert "error" in r.stderr


def test_plot_without_matplotlib_is_a_clear_error_or_a_file(tmp_path):
    png = tmp_path / "loss.png"
    r = _run("train", "--iterations", "20", "--plot", str(png), *SMALL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert r.returncode == 2
        assert "matplotlib" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert png.stat().st_size > 0


def test_save_writes_a_loadable_darknet_network(tmp_path):
    stem = tmp_path / "adding"
    r = _run("train", "--iterations", "50", "--save", str(stem) + ".weights", *SMALL)
    assert r.returncode == 0, r.stderr
    net = darknet.load_network(str(stem) + ".cfg", str(stem) + ".weights")
    assert (net.inputs, net.outputs, net.time_steps, net.batch) == (2, 1, 10, 16)
    assert net.seen == 50 * 16 * 10
    assert net.layers[0].activation == "tanh"
    y = net.predict(np.zeros((10, 3, 2), np.float32))
    assert y.shape == (10, 3, 1) and np.all(np.isfinite(y))
    darknet.save_weights(net, tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == (tmp_path / "adding.weights").read_bytes()


def test_copy_task_runs(tmp_path):
    out = tmp_path / "r.json"
    r = _run("train", "--task", "copy", "--iterations", "30", "--steps", "12",
             "--json", str(out), *[a for a in SMALL if a not in ("--steps", "10")])
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["task"] == "copy"
    assert_allclose(res["baseline_loss"], np.log(8), **tol(np.float64, "json_float"))
    assert np.isfinite(res["final_loss"])


def test_text_model_trains_saves_and_generates(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world. " * 200)
    stem = tmp_path / "char"
    out = tmp_path / "r.json"
    r = _run("train", "--text", str(text), "--iterations", "200", "--hidden", "16",
             "--steps", "8", "--batch", "4", "--threads", "1", "--quiet",
             "--learning-rate", "0.01", "--save", str(stem), "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["task"] == "text"
    assert res["final_loss"] < res["baseline_loss"]
    cfg = (tmp_path / "char.cfg").read_text()
    assert "[softmax]" in cfg and "[cost]" in cfg and "inputs=256" in cfg
    g = _run("generate", "--cfg", str(stem) + ".cfg", "--weights", str(stem) + ".weights",
             "--length", "40", "--seed-text", "hello")
    assert g.returncode == 0, g.stderr
    assert g.stdout.startswith("hello")
    assert len(g.stdout.encode()) >= 45


def test_generate_bad_usage_exits_2(tmp_path):
    r = _run("generate", "--cfg", str(tmp_path / "missing.cfg"), "--weights", "x")
    assert r.returncode == 2
    assert "no such file" in r.stderr
    r = _run("generate")
    assert r.returncode == 2


def test_ctrl_c_is_a_message_and_exit_130():
    # A long run interrupted as a user would: no traceback, the shell's status.
    import signal
    loud = [a for a in SMALL if a != "--quiet"]
    # The child gets SIGINT's default disposition: under a shell's background
    # job SIGINT is ignored, and Python then keeps ignoring it.
    p = subprocess.Popen([sys.executable, "-m", "gru_cy", "train", "--iterations", "100000",
                          "--target", "0", *loud], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = p.stderr.readline()           # the progress bar's first line: training runs
    assert first.startswith("["), first
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
