"""Whole-model checkpoints (issue 14, item 3): model.save / gru_cy.load, a
documented .npz + JSON format, resumed training bit for bit, damaged and
foreign files refused."""
import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import gru_cy
from gru_cy import GRU, Connected, Dropout, Network, Softmax, checkpoint

from test_pickle import _arrays, _gru, _net_cost, _net_dropout, _network, _stacked, _train


@pytest.mark.parametrize("make", [_gru, _stacked, _network, _net_cost, _net_dropout],
                         ids=("gru", "stacked", "network", "network-cost", "network-dropout"))
def test_resume_is_bit_identical(tmp_path, make):
    rng = np.random.default_rng(0)
    model = make()
    _train(model, 3, rng)
    path = tmp_path / "m.ckpt"
    model.save(path)
    resumed = gru_cy.load(path)
    assert type(resumed) is type(model)
    for k, v in _arrays(model).items():
        assert_array_equal(_arrays(resumed)[k], v, err_msg=k)
    y1 = _train(model, 3, np.random.default_rng(9))
    y2 = _train(resumed, 3, np.random.default_rng(9))
    assert_array_equal(y1, y2)
    for k, v in _arrays(model).items():
        assert_array_equal(_arrays(resumed)[k], v, err_msg=k)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_200_iterations_interrupted_at_100_with_a_schedule_and_dropout(tmp_path, optimizer):
    # issue 14's bar: a steps policy with burn_in (the rate depends on seen),
    # a [dropout] layer (its generator), subdivisions (a resume between
    # updates carries the accumulated gradients and the call count)
    def make():
        return Network([GRU(3, 5, seed=1, optimizer=optimizer), Dropout(5, 0.3, seed=2),
                        Connected(5, 4, seed=3, optimizer=optimizer), Softmax(4)], 3,
                       batch=2, subdivisions=3, time_steps=4, learning_rate=0.05,
                       optimizer=optimizer, policy="steps", steps=[10, 40], scales=[0.5, 0.1],
                       burn_in=5, power=2.0)

    data = np.random.default_rng(4)
    batches = [(data.normal(size=(4, 2, 3)).astype(np.float32), data.integers(0, 4, (4, 2)))
               for _ in range(200)]
    whole = make()
    for x, t in batches:
        whole.train_step(x, t)
    first = make()
    for x, t in batches[:100]:
        first.train_step(x, t)
    first.save(tmp_path / "run.ckpt")
    del first
    resumed = gru_cy.load(tmp_path / "run.ckpt")
    assert (resumed.policy, resumed.steps, resumed.scales, resumed.burn_in, resumed.power) == (
        "steps", (10, 40), (0.5, 0.1), 5, 2.0)
    for x, t in batches[100:]:
        resumed.train_step(x, t)
    assert resumed.seen == whole.seen and resumed.current_batch == 200 // 3
    for k, v in _arrays(whole).items():
        assert_array_equal(_arrays(resumed)[k], v, err_msg=k)
    assert resumed.layers[1].dropout_state == whole.layers[1].dropout_state
    x = np.ones((4, 2, 3), np.float32)
    assert_array_equal(resumed.forward(x), whole.forward(x))


def test_mid_accumulation_gradients_and_counts_travel(tmp_path):
    g = GRU(3, 5, seed=0, optimizer="adam")
    x = np.random.default_rng(1).normal(size=(4, 2, 3)).astype(np.float32)
    y = g.forward(x, train=True)
    g.backward(np.ones_like(y))                    # gradients accumulated, no update yet
    g.save(tmp_path / "g.ckpt", state=False)
    r = gru_cy.load(tmp_path / "g.ckpt")
    assert r.state is None and r._rows == g._rows
    for k in g.grads:
        assert_array_equal(r.grads[k], g.grads[k])
    g.update(learning_rate=0.01)
    r.update(learning_rate=0.01)
    for k in g.params:
        assert_array_equal(r.params[k], g.params[k])


def test_the_format_is_readable_without_gru_cy(tmp_path):
    model = _stacked()
    model.save(tmp_path / "s.ckpt")
    with np.load(tmp_path / "s.ckpt", allow_pickle=False) as z:
        header = json.loads(z["__header__"].tobytes().decode())
        assert header["format"] == "gru_cy-checkpoint" and header["version"] == 1
        assert header["model"]["kind"] == "StackedGRU"
        first = header["model"]["layers"][0]
        assert z[first["prefix"] + "theta"].size == model.layers[0][0]._theta.size


def test_damaged_and_foreign_files_are_value_errors(tmp_path):
    path = tmp_path / "g.ckpt"
    _gru().save(path)
    good = path.read_bytes()
    cases = {"truncated": good[: len(good) // 2], "not a zip": b"hello",
             "empty": b""}
    for name, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(ValueError, match="checkpoint"):
            gru_cy.load(path)
    # another version, a missing array, a wrong size: refused, nothing loaded
    path.write_bytes(good)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    header = json.loads(entries["__header__"].tobytes().decode())

    def rewrite(h, drop=None, resize=None):
        e = dict(entries)
        e["__header__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
        if drop:
            del e[drop]
        if resize:
            e[resize] = e[resize][:-1]
        with open(path, "wb") as f:          # (np.savez would add ".npz" to the name)
            np.savez(f, **e)

    rewrite({**header, "version": 99})
    with pytest.raises(ValueError, match="version 99"):
        gru_cy.load(path)
    rewrite(header, drop="grad")
    with pytest.raises(ValueError, match="'grad' missing"):
        gru_cy.load(path)
    rewrite(header, resize="theta")
    with pytest.raises(ValueError, match="'theta'"):
        gru_cy.load(path)


def test_damaged_policy_and_dropout_generator_are_value_errors(tmp_path):
    path = tmp_path / "n.ckpt"
    _net_dropout().save(path)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    header = json.loads(entries["__header__"].tobytes().decode())
    model = header["model"]
    assert model["args"]["policy"] == "steps" and model["args"]["steps"] == [2, 5]
    assert model["layers"][1]["kind"] == "Dropout" and "rng" in model["layers"][1]

    def load_with(edit):
        h = json.loads(json.dumps(header))
        edit(h["model"])
        e = dict(entries, __header__=np.frombuffer(json.dumps(h).encode(), np.uint8))
        with open(path, "wb") as f:
            np.savez(f, **e)
        with pytest.raises(ValueError) as info:
            gru_cy.load(path)
        assert str(info.value).startswith(f"{path}: damaged checkpoint"), str(info.value)
        return str(info.value)

    assert "scales: expected one scale per step" in load_with(
        lambda m: m["args"].update(scales=[0.5]))
    assert "policy" in load_with(lambda m: m["args"].update(policy="random"))
    assert "dropout generator state" in load_with(
        lambda m: m["layers"][1].update(rng={"bit_generator": "MT19937"}))
    assert "dropout generator state" in load_with(lambda m: m["layers"][1].update(rng=5))


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "g.ckpt"
    _gru().save(path)
    old = path.read_bytes()
    import os
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError):
        GRU(3, 4).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="model"):
        checkpoint.save(object(), tmp_path / "x")


# --------------------------------------------------------------------- CLI ---

import os          # noqa: E402
import signal      # noqa: E402
import subprocess  # noqa: E402
import sys         # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--hidden", "8", "--steps", "10", "--batch", "16", "--threads", "1", "--quiet"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gru_cy", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_train_save_resume_and_ctrl_c(tmp_path):
    stem = str(tmp_path / "m")
    r = _cli("train", "--iterations", "60", "--save", stem, *SMALL)
    assert r.returncode == 0, r.stderr
    for ext in (".ckpt", ".cfg", ".weights"):
        assert os.path.isfile(stem + ext)
    net = gru_cy.load(stem + ".ckpt")
    assert net.seen > 0
    r = _cli("train", "--iterations", "30", "--resume", stem, "--save", stem + "2", *SMALL)
    assert r.returncode == 0, r.stderr
    assert gru_cy.load(stem + "2.ckpt").seen > net.seen        # went on from there
    r = _cli("train", "--iterations", "5", "--resume", stem, *SMALL[:1], "9", *SMALL[2:])
    assert r.returncode == 2 and "--resume" in r.stderr         # another size
    # Ctrl-C: the checkpoint first, then one line and 130
    loud = [a for a in SMALL if a != "--quiet"]
    p = subprocess.Popen([sys.executable, "-m", "gru_cy", "train", "--iterations", "100000",
                          "--target", "0", "--save", stem + "3", *loud],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stderr.readline().startswith("[")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "--resume" in err and os.path.isfile(stem + "3.ckpt")
    gru_cy.load(stem + "3.ckpt")


def test_damaged_members_and_headers_are_value_errors(tmp_path):
    # (review findings) a flipped byte inside an array, headers of the wrong
    # shape or with bad counters: ValueError, not BadZipFile / KeyError / ...
    path = tmp_path / "g.ckpt"
    _gru().save(path)
    good = path.read_bytes()
    i = good.find(b"theta.npy")
    i = good.find(b"\x93NUMPY", i) + 200          # inside theta's data
    bad = bytearray(good)
    bad[i] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="damaged"):
        gru_cy.load(path)
    path.write_bytes(good)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    header = json.loads(entries["__header__"].tobytes().decode())
    for change in ({"model": [1]}, {"model": {**header["model"], "rows": None}},
                   {"model": {**header["model"], "rows": -7}},
                   {"model": {k: v for k, v in header["model"].items() if k != "optim_t"}}):
        e = dict(entries)
        e["__header__"] = np.frombuffer(json.dumps({**header, **change}).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **e)
        with pytest.raises(ValueError, match="checkpoint"):
            gru_cy.load(path)
