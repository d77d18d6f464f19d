"""Darknet cfg and .weights in and out (SPEC section 3) against Darknet's own files.

Reference data (tests/data, copied from ../shared/vectors/darknet) was written
by pjreddie's Darknet, commit f6afaab: ``net_chargru_tiny.{cfg,weights,npz}``
is a whole network run over six consecutive ``network_predict`` calls.
"""
import os
import struct

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gru_cy import GRU, darknet
from gru_cy.nn import Connected, Network, Softmax, Cost

from tolerances import tol

DATA = os.path.join(os.path.dirname(__file__), "data")
CFG = os.path.join(DATA, "net_chargru_tiny.cfg")
WEIGHTS = os.path.join(DATA, "net_chargru_tiny.weights")
NPZ = os.path.join(DATA, "net_chargru_tiny.npz")
SUBS = ("uz", "ur", "uh", "wz", "wr", "wh")

# Darknet's numbers are float32 (tolerances.py: "darknet", "darknet_bn").
DARKNET = tol(np.float32, "darknet")
DARKNET_BN = tol(np.float32, "darknet_bn")


@pytest.fixture(scope="module")
def ref():
    return np.load(NPZ)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_chargru_parameters_match_darknet(ref):
    net = darknet.load_network(CFG, WEIGHTS)
    assert net.header == (int(ref["header_major"]), int(ref["header_minor"]),
                          int(ref["header_revision"]))
    assert net.seen == int(ref["header_seen"])
    assert [type(layer) for layer in net.layers[2:]] == [Connected, Softmax]
    assert net.layers[0].activation == "logistic"
    assert net.layers[1].activation == "tanh"
    for i in (0, 1):
        for s in SUBS:
            for p in ("weights", "biases"):
                assert_allclose(net.layers[i].params[f"{s}.{p}"],
                                ref[f"layer{i}_{s}_{p}"], rtol=0, atol=0)
    assert_allclose(net.layers[2].params["weights"], ref["layer2_weights"], rtol=0, atol=0)
    assert_allclose(net.layers[2].params["biases"], ref["layer2_biases"], rtol=0, atol=0)


def test_chargru_reproduces_darknet_over_six_calls(ref):
    net = darknet.load_network(CFG, WEIGHTS)
    assert (net.batch, net.time_steps) == (1, 1)
    gru0, gru1, fc, sm = net.layers
    for c in range(int(ref["ncalls"])):
        x = ref["input"][c]                               # (T, B, inputs)
        T, B = x.shape[:2]
        h0 = gru0.forward(x)
        assert_allclose(h0, ref["layer0_output"][c], **DARKNET)
        assert_allclose(gru0.state, ref["layer0_state"][c], **DARKNET)
        h1 = gru1.forward(h0)
        assert_allclose(h1, ref["layer1_output"][c], **DARKNET)
        assert_allclose(gru1.state, ref["layer1_state"][c], **DARKNET)
        logits = fc.forward(h1.reshape(T * B, -1))
        assert_allclose(logits.reshape(T, B, -1), ref["layer2_output"][c], **DARKNET)
        p = sm.forward(logits)
        assert_allclose(p.reshape(T, B, -1), ref["layer3_output"][c], **DARKNET)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chargru_predict_over_six_calls(ref, dtype):
    # Through Network.predict, state carried between calls; float64 too.
    net = darknet.load_network(CFG, WEIGHTS, dtype=dtype)
    for c in range(int(ref["ncalls"])):
        y = net.predict(ref["input"][c])
        assert y.dtype == dtype
        assert_allclose(y, ref["output"][c], **DARKNET)


def test_save_load_gives_identical_bytes_and_numbers(ref, tmp_path):
    net = darknet.load_network(CFG, WEIGHTS)
    out = tmp_path / "copy.weights"
    darknet.save_weights(net, out)
    assert _read(out) == _read(WEIGHTS)
    cfg = tmp_path / "copy.cfg"
    darknet.save_cfg(net, cfg)
    net2 = darknet.load_network(cfg, out)
    for c in range(int(ref["ncalls"])):
        assert_allclose(net2.predict(ref["input"][c]), ref["output"][c], **DARKNET)
    darknet.save_weights(net2, tmp_path / "again.weights")
    assert _read(tmp_path / "again.weights") == _read(WEIGHTS)


def test_cfg_text_keeps_options_and_writes_tanh():
    net = darknet.load_network(CFG, WEIGHTS)
    secs = darknet.parse_cfg(darknet.cfg_text(net))
    assert [s["type"] for s in secs] == ["net", "gru", "gru", "connected", "softmax"]
    assert secs[0]["options"]["policy"] == "constant"
    assert secs[0]["options"]["learning_rate"] == ".002"
    assert "tanh" not in secs[1]["options"]
    assert secs[2]["options"]["tanh"] == "1"


def test_parse_cfg_follows_darknet_reader():
    secs = darknet.parse_cfg("# comment\n[net]\n batch = 4 \n;x\n\n[gru]\noutput= 7\n")
    assert secs[0]["options"] == {"batch": "4"}
    assert secs[1] == {"type": "gru", "options": {"output": "7"}, "line": 6}
    with pytest.raises(ValueError, match="line 2.*key=value"):
        darknet.parse_cfg("[net]\nbatch\n")
    with pytest.raises(ValueError, match="line 1.*section header"):
        darknet.parse_cfg("batch=1\n[net]\n")


def test_unknown_section_is_named(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\ninputs=4\n[gru]\noutput=3\n[convolutional]\nfilters=2\n")
    with pytest.raises(ValueError, match=r"layer 1 \[convolutional\].*line 5"):
        darknet.load_network(cfg)


def test_bad_options_are_named(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\ninputs=4\n[connected]\noutput=3\nactivation=stair\n")
    with pytest.raises(ValueError, match=r"layer 0 \[connected\].*activation"):
        darknet.load_network(cfg)
    cfg.write_text("[net]\ninputs=4\nbatch=2\nsubdivisions=4\n[gru]\noutput=3\n")
    with pytest.raises(ValueError, match="subdivisions"):
        darknet.load_network(cfg)


def test_truncated_file_names_layer_and_offset(tmp_path):
    data = _read(WEIGHTS)
    bad = tmp_path / "short.weights"
    bad.write_bytes(data[:-4])
    net = darknet.load_network(CFG)
    before = net.layers[0].params["uz.weights"].copy()
    with pytest.raises(ValueError, match=r"truncated at layer 2 \[connected\] weights.*"
                                         r"byte offset 11964"):
        darknet.load_weights(net, bad)
    # All or nothing: the GRU layers read before the failure were not assigned.
    assert_allclose(net.layers[0].params["uz.weights"], before, rtol=0, atol=0)
    bad.write_bytes(data[:10])
    with pytest.raises(ValueError, match="truncated header"):
        darknet.load_weights(net, bad)


def test_oversized_file_names_offset(tmp_path):
    bad = tmp_path / "long.weights"
    bad.write_bytes(_read(WEIGHTS) + b"\0" * 8)
    with pytest.raises(ValueError, match=r"oversized: 8 bytes.*layer 2 \[connected\].*"
                                         r"byte offset 12604"):
        darknet.load_network(CFG, bad)


def test_cfg_that_does_not_match_weights(tmp_path):
    cfg = tmp_path / "wide.cfg"
    cfg.write_text(_read(CFG).decode().replace("output = 16\ntanh", "output = 17\ntanh"))
    # The file is read in order, so the shortfall shows where the data runs out.
    with pytest.raises(ValueError, match=r"truncated at layer 2 \[connected\].*cfg "
                                         r"implies 13256 bytes, the file has 12604"):
        darknet.load_network(cfg, WEIGHTS)


def test_non_finite_and_negative_variance_are_refused(tmp_path):
    data = bytearray(_read(WEIGHTS))
    data[20:24] = struct.pack("<f", np.nan)
    bad = tmp_path / "nan.weights"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"layer 0 \[gru\] wz.biases: non-finite.*offset 20"):
        darknet.load_network(CFG, bad)


def _reorder_gru_blocks(data, sizes, order_from, order_to):
    """Rewrite each GRU block of a BN-less file from one sublayer order to another."""
    out, off = [data[:20]], 20
    for H, I in sizes:
        blocks = {}
        for s in order_from:
            n = 4 * (H + H * (I if s[0] == "u" else H))
            blocks[s] = data[off:off + n]
            off += n
        out += [blocks[s] for s in order_to]
    out.append(data[off:])
    return b"".join(out)


def test_alexeyab_order_refused_by_default_and_loaded_explicitly(tmp_path, ref):
    data = _read(WEIGHTS)
    alexey = _reorder_gru_blocks(data, [(16, 10), (16, 16)], darknet.GRU_ORDERS["darknet"],
                                 darknet.GRU_ORDERS["alexeyab"])
    alexey = struct.pack("<3i", 0, 2, 5) + alexey[12:]
    path = tmp_path / "alexey.weights"
    path.write_bytes(alexey)
    with pytest.raises(ValueError, match="AlexeyAB.*gru_order='alexeyab'"):
        darknet.load_network(CFG, path)
    net = darknet.load_network(CFG, path, gru_order="alexeyab")
    for s in SUBS:
        assert_allclose(net.layers[1].params[f"{s}.weights"], ref[f"layer1_{s}_weights"],
                        rtol=0, atol=0)
    assert_allclose(net.predict(ref["input"][0]), ref["output"][0], **DARKNET)
    darknet.save_weights(net, tmp_path / "back.weights")
    assert _read(tmp_path / "back.weights") == alexey


def _chargru_file(ref, header, seen_fmt, seen, transposed):
    """net_chargru_tiny's weights written from the npz in Darknet's layout."""
    parts = [struct.pack("<3i", *header), struct.pack(seen_fmt, seen)]

    def block(prefix):
        w = ref[prefix + "_weights"]
        parts.append(ref[prefix + "_biases"].astype("<f4").tobytes())
        # Darknet's transposed files hold every connected weight matrix as (in, out).
        parts.append(np.ascontiguousarray(w.T if transposed else w).astype("<f4").tobytes())

    for i in (0, 1):
        for s in ("wz", "wr", "wh", "uz", "ur", "uh"):
            block(f"layer{i}_{s}")
    block("layer2")
    return b"".join(parts)


def test_chargru_file_rebuilt_from_npz_is_darknets(ref):
    assert _chargru_file(ref, (0, 2, 0), "<Q", 12345, False) == _read(WEIGHTS)


@pytest.mark.parametrize("major,minor,seen_fmt,transposed", [
    (0, 1, "<i", False),        # before 0.2: seen is int32
    (1001, 2, "<i", True),      # major above 1000: int32 seen, transposed weights
    (0, 1001, "<i", True),      # minor above 1000 likewise
    (1000, 2, "<i", False),     # exactly 1000: int32 seen, not transposed (Darknet: > 1000)
])
def test_old_headers_and_transposed_weights(tmp_path, ref, major, minor, seen_fmt,
                                            transposed):
    blob = _chargru_file(ref, (major, minor, 0), seen_fmt, 777, transposed)
    path = tmp_path / "old.weights"
    path.write_bytes(blob)
    net = darknet.load_network(CFG, path)
    assert net.seen == 777
    assert_allclose(net.layers[2].params["weights"], ref["layer2_weights"], rtol=0, atol=0)
    assert_allclose(net.layers[1].params["uh.weights"], ref["layer1_uh_weights"],
                    rtol=0, atol=0)
    assert_allclose(net.predict(ref["input"][0]), ref["output"][0], **DARKNET)
    darknet.save_weights(net, tmp_path / "back.weights")
    assert _read(tmp_path / "back.weights") == blob


def _bn_network(seed=3):
    rng = np.random.default_rng(seed)
    layers = [GRU(5, 6, activation="tanh", batch_normalize=True, seed=seed),
              GRU(6, 4, activation="logistic", batch_normalize=True, seed=seed + 1),
              Connected(4, 3, activation="leaky", batch_normalize=True, seed=seed),
              Softmax(3), Cost(3)]
    for layer in layers[:3]:
        for k in layer.params:
            a = layer.params[k]
            if k.endswith("rolling_variance"):
                layer.params[k] = rng.uniform(0.5, 2.0, a.shape)
            else:
                layer.params[k] = rng.standard_normal(a.shape)
    return Network(layers, 5, batch=3, subdivisions=2, time_steps=4, seen=10 ** 10)


def test_bn_network_round_trip(tmp_path):
    net = _bn_network()
    darknet.save_cfg(net, tmp_path / "bn.cfg")
    darknet.save_weights(net, tmp_path / "bn.weights")
    net2 = darknet.load_network(tmp_path / "bn.cfg", tmp_path / "bn.weights")
    assert (net2.batch, net2.subdivisions, net2.time_steps) == (3, 2, 4)
    assert net2.update_batch == 24
    assert net2.seen == 10 ** 10
    assert [getattr(layer, "batch_normalize", False) for layer in net2.layers] == \
        [True, True, True, False, False]
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 5)).astype(np.float32)
    for c in range(2):
        assert_allclose(net2.predict(x[c]), net.predict(x[c]), rtol=0, atol=0)
    darknet.save_weights(net2, tmp_path / "bn2.weights")
    assert _read(tmp_path / "bn2.weights") == _read(tmp_path / "bn.weights")
    # Header 20 bytes; floats: GRU 5->6 with BN 3*(6+30+18) + 3*(6+36+18) = 342,
    # GRU 6->4 3*(4+24+12) + 3*(4+16+12) = 216, connected 4->3 3+12+9 = 24.
    assert os.path.getsize(tmp_path / "bn.weights") == 20 + 4 * (342 + 216 + 24)


def test_bn_gru_network_matches_darknet_layer_vectors(tmp_path):
    """A [gru] network with BN, its .weights written in Darknet's layout by hand."""
    d = np.load(os.path.join(DATA, "gru_b3_s4_i10_o8_tanh_bn_infer.npz"))
    B, T, I, H = (int(d[k]) for k in ("batch", "steps", "inputs", "outputs"))
    cfg = tmp_path / "bn.cfg"
    cfg.write_text(f"[net]\ninputs={I}\nbatch={B}\ntime_steps={T}\n\n"
                   f"[gru]\noutput={H}\nbatch_normalize=1\ntanh=1\n")
    parts = [struct.pack("<3iQ", 0, 2, 0, 0)]
    for s in ("wz", "wr", "wh", "uz", "ur", "uh"):
        for p in ("biases", "weights", "scales", "rolling_mean", "rolling_variance"):
            parts.append(d[f"{s}_{p}"].astype("<f4").tobytes())
    weights = tmp_path / "bn.weights"
    weights.write_bytes(b"".join(parts))
    net = darknet.load_network(cfg, weights)
    net.layers[0].state = d["init_state"]
    for c in range(int(d["ncalls"])):
        assert_allclose(net.predict(d["calls_input"][c]), d["calls_output"][c],
                        **DARKNET_BN)
        assert_allclose(net.layers[0].state, d["calls_state"][c], **DARKNET_BN)
    darknet.save_weights(net, tmp_path / "back.weights")
    assert _read(tmp_path / "back.weights") == _read(weights)


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "net.weights"
    target.write_bytes(_read(WEIGHTS))
    # Not representable: a reset_after GRU.
    bad = Network([GRU(10, 4, variant="reset_after"), Connected(4, 2)], 10)
    with pytest.raises(ValueError, match="reset_after.*Darknet"):
        darknet.save_weights(bad, target)
    with pytest.raises(ValueError, match="reset_after"):
        darknet.save_cfg(bad, tmp_path / "net.cfg")
    assert _read(target) == _read(WEIGHTS)
    # An I/O failure while replacing: the old file stays, no temporary is left.
    net = darknet.load_network(CFG, WEIGHTS)
    net.layers[2].params["biases"] = np.ones(10)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        darknet.save_weights(net, target)
    assert _read(target) == _read(WEIGHTS)
    assert sorted(os.listdir(tmp_path)) == ["net.weights"]


def test_seen_advances_by_rows_per_training_call():
    net = _bn_network()
    seen = net.seen
    x = np.random.default_rng(1).standard_normal((4, 3, 5)).astype(np.float32)
    net.train_step(x, np.zeros((4, 3), np.int64))
    assert net.seen == seen + 12
    net.predict(x)
    assert net.seen == seen + 12
