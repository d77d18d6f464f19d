"""Fuzzing of gru_cy's file and dict readers with hypothesis, run in a
subprocess by tests/test_hardening.py (a crash then fails the test instead of
ending the run): Darknet cfg text, .weights bytes and torch state dicts.
Every input must load or be refused with ValueError / TypeError.

    python tests/fuzz/fuzz_inputs.py EXAMPLES
"""
import os
import sys
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from gru_cy import GRU, StackedGRU, darknet

EXAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 200
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), derandomize=True)
OK = (ValueError, TypeError)
TMP = tempfile.mkdtemp(prefix="gru_cy-fuzz-")

BASE_CFG = """[net]
batch=4
subdivisions=1
time_steps=3
inputs=5
learning_rate=0.1
momentum=0.9
decay=0.001

[gru]
output=6
batch_normalize=1
tanh=1

[connected]
output=5
activation=leaky

[softmax]
groups=1
"""
KEYS = ["batch", "subdivisions", "time_steps", "inputs", "learning_rate", "momentum",
        "decay", "output", "batch_normalize", "tanh", "activation", "groups", "h", "w",
        "c", "adam", "B1", "B2", "eps", "scale", "temperature", "spatial", "type"]
VALUES = st.one_of(
    st.integers(-2 ** 40, 2 ** 40).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-0", "0x10", "", "1.5", "9" * 400,
                     "leaky", "logistic", "sse", "2e9"]),
    st.text(max_size=8))


def _path(name, data):
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 25), st.sampled_from(KEYS), VALUES), max_size=6),
       st.binary(max_size=16))
def fuzz_cfg(edits, junk):
    lines = BASE_CFG.splitlines()
    for pos, key, value in edits:
        lines.insert(min(pos, len(lines)), f"{key}={value}")
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + junk
    try:
        net = darknet.load_network(_path("f.cfg", data))
    except OK:
        return
    x = np.zeros((net.time_steps, net.batch, net.inputs), np.float32)
    net.forward(x)


_NET = darknet.network_from_cfg(darknet.parse_cfg(BASE_CFG))
_GOOD = darknet.weights_bytes(_NET)


@SETTINGS
@given(st.integers(0, len(_GOOD) + 64), st.binary(max_size=64),
       st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), max_size=8))
def fuzz_weights(cut, tail, flips):
    data = bytearray(_GOOD[:cut] + tail)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    try:
        darknet.load_weights(_NET, _path("f.weights", bytes(data)))
    except OK:
        pass


_GRU = GRU(3, 4, variant="reset_after")
_STACK = StackedGRU(3, 4, num_layers=2, bidirectional=True, variant="reset_after")
ARRAYS = st.one_of(
    st.builds(lambda s, v: np.full(s, v), st.lists(st.integers(0, 13), max_size=3),
              st.sampled_from([0.5, np.nan, np.inf, -1e38])),
    st.builds(lambda s: np.zeros(s, np.int64), st.lists(st.integers(0, 13), max_size=2)),
    st.sampled_from([None, "x", 3, [1.0, 2.0], b"ab"]))
NAMES = st.one_of(
    st.sampled_from(list(_STACK.torch_state_dict()) + ["weight_hr_l0", "bias_ih_l9",
                                                       "gru.weight_ih_l0", "x.bias"]),
    st.integers(), st.text(max_size=12))


@SETTINGS
@given(st.dictionaries(NAMES, ARRAYS, max_size=10), st.booleans())
def fuzz_torch(sd, stacked):
    model = _STACK if stacked else _GRU
    try:
        model.load_torch_state_dict(sd)
    except OK:
        pass


if __name__ == "__main__":
    for fn in (fuzz_cfg, fuzz_weights, fuzz_torch):
        fn()
    print(f"fuzz: {EXAMPLES} examples each of cfg, weights, torch state dicts: ok")
