"""Darknet's training semantics (issue 14, item 7): the learning-rate policies
of ``[net]`` against Darknet's ``get_current_rate`` at every update of a
schedule, their cfg options, and ``[dropout]`` layers."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gru_cy
from gru_cy import GRU, Connected, Cost, Dropout, Network, Softmax, darknet
from gru_cy.nn import schedule

from finite_differences import gradient
from tolerances import tol


# --- Darknet's formula, transcribed from pjreddie's network.c (f6afaab) -----------
#
#   size_t get_current_batch(network *net)
#   { return (*net->seen)/(net->batch*net->subdivisions); }
#
#   float get_current_rate(network *net)
#   {
#       size_t batch_num = get_current_batch(net);
#       if (batch_num < net->burn_in)
#           return net->learning_rate * pow((float)batch_num / net->burn_in, net->power);
#       switch (net->policy) {
#           case CONSTANT: return net->learning_rate;
#           case STEP:     return net->learning_rate * pow(net->scale, batch_num/net->step);
#           case STEPS:    rate = net->learning_rate;
#                          for(i = 0; i < net->num_steps; ++i){
#                              if(net->steps[i] > batch_num) return rate;
#                              rate *= net->scales[i];
#                          }
#                          return rate;
#           case EXP:      return net->learning_rate * pow(net->gamma, batch_num);
#           case POLY:     return net->learning_rate
#                                 * pow(1 - (float)batch_num / net->max_batches, net->power);
#           case SIG:      return net->learning_rate
#                                 * (1./(1.+exp(net->gamma*(batch_num - net->step))));
#       }
#   }
#
# (SIG's batch_num - step is taken signed: see gru_cy.nn.schedule.)

def darknet_rate(b, p):
    """The formula above in double precision."""
    lr = p["learning_rate"]
    if b < p.get("burn_in", 0):
        return lr * (b / p["burn_in"]) ** p.get("power", 4.0)
    policy = p.get("policy", "constant")
    if policy == "constant":
        return lr
    if policy == "step":
        return lr * p["scale"] ** (b // p["step"])
    if policy == "steps":
        rate = lr
        for s, f in zip(p["steps"], p["scales"]):
            if s > b:
                return rate
            rate *= f
        return rate
    if policy == "exp":
        return lr * p["gamma"] ** b
    if policy == "poly":
        return lr * (1 - b / p["max_batches"]) ** p.get("power", 4.0)
    if policy == "sigmoid":
        return lr * (1.0 / (1.0 + math.exp(p["gamma"] * (b - p["step"]))))
    raise AssertionError(policy)


def darknet_rate_float(b, p):
    """The formula above in C's types: float parameters and float arithmetic
    where network.c has it, pow and exp in double, a float result."""
    f = np.float32
    lr = f(p["learning_rate"])
    power = float(f(p.get("power", 4.0)))
    if b < p.get("burn_in", 0):
        return f(float(lr) * math.pow(float(f(b) / f(p["burn_in"])), power))
    policy = p.get("policy", "constant")
    if policy == "constant":
        return lr
    if policy == "step":
        return f(float(lr) * math.pow(float(f(p["scale"])), b // p["step"]))
    if policy == "steps":
        rate = lr
        for s, g in zip(p["steps"], p["scales"]):
            if s > b:
                return rate
            rate = f(rate * f(g))
        return rate
    if policy == "exp":
        return f(float(lr) * math.pow(float(f(p["gamma"])), b))
    if policy == "poly":
        return f(float(lr) * math.pow(float(f(1) - f(b) / f(p["max_batches"])), power))
    if policy == "sigmoid":
        e = math.exp(float(f(p["gamma"]) * f(b - p["step"])))
        return f(float(lr) * (1.0 / (1.0 + e)))
    raise AssertionError(policy)


# Schedules crossing every branch within 40 batches; parameters float32 holds
# exactly, so the float emulation differs by intermediate roundings only.
SCHEDULES = {
    "constant": dict(policy="constant", learning_rate=0.0625),
    "constant-burn_in": dict(policy="constant", learning_rate=0.0625, burn_in=7),
    "step": dict(policy="step", learning_rate=0.5, step=6, scale=0.75),
    "step-burn_in": dict(policy="step", learning_rate=0.5, step=6, scale=0.75, burn_in=4,
                         power=2.0),
    "steps": dict(policy="steps", learning_rate=0.125, steps=[5, 12, 12, 30],
                  scales=[0.5, 0.25, 2.0, 0.125]),
    "steps-burn_in": dict(policy="steps", learning_rate=0.125, steps=[5, 12, 30],
                          scales=[0.5, 0.25, 0.125], burn_in=3, power=1.0),
    "exp": dict(policy="exp", learning_rate=0.25, gamma=0.9375),
    "exp-burn_in": dict(policy="exp", learning_rate=0.25, gamma=0.9375, burn_in=5,
                        power=3.0),
    "poly": dict(policy="poly", learning_rate=0.25, power=2.5, max_batches=40),
    "poly-burn_in": dict(policy="poly", learning_rate=0.25, max_batches=40, burn_in=6),
    "sigmoid": dict(policy="sigmoid", learning_rate=0.25, gamma=0.375, step=20),
    "sigmoid-burn_in": dict(policy="sigmoid", learning_rate=0.25, gamma=-0.25, step=10,
                            burn_in=8, power=0.5),
}


def _policy_args(p):
    return {k: v for k, v in p.items() if k != "learning_rate"}


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_policy_is_darknets_formula_at_every_batch(name):
    p = SCHEDULES[name]
    args = schedule.check(**_policy_args(p))
    ours = [schedule.current_rate(b, p["learning_rate"], **args) for b in range(41)]
    assert ours == [darknet_rate(b, p) for b in range(41)]          # exactly
    # and Darknet's own float arithmetic to its rounding
    lr = p["learning_rate"]
    assert_allclose(np.array(ours) / lr,
                    np.array([darknet_rate_float(b, p) for b in range(41)]) / lr,
                    **tol(np.float32, "darknet_rate"))
    # the schedules do what they are meant to: every branch is taken
    assert len(set(ours)) > 3 or name.startswith("constant")


def test_the_float_emulation_tells_the_differences_apart():
    # the checker fails for a wrong rate: one batch number off, burn_in's power
    p = SCHEDULES["steps-burn_in"]
    args = schedule.check(**_policy_args(p))
    off = [schedule.current_rate(b + 1, p["learning_rate"], **args) for b in range(41)]
    assert off != [darknet_rate(b, p) for b in range(41)]
    q = dict(p, power=1.5)
    assert [darknet_rate(b, q) for b in range(41)] != [darknet_rate(b, p) for b in range(41)]


def _simulate_darknet(p, n_calls, cfg_batch, subdivisions, time_steps):
    """Darknet's training loop (train_network_datum, parse_net_options): the
    rate of each update."""
    net_batch = cfg_batch // subdivisions * time_steps      # parse_net_options
    seen, rates = 0, []
    for _ in range(n_calls):
        seen += net_batch                                   # train_network_datum
        if (seen // net_batch) % subdivisions == 0:
            rates.append(darknet_rate(seen // (net_batch * subdivisions), p))
    return rates


def _spy(net):
    """The learning rates the network's updates pass to its layers."""
    used = []
    layer = next(la for la in net.layers if hasattr(la, "_check_update"))
    check = layer._check_update

    def record(**hp):
        used.append(hp["learning_rate"])
        return check(**hp)
    layer._check_update = record
    return used


@pytest.mark.parametrize("name", ["steps-burn_in", "poly-burn_in", "sigmoid", "step"])
@pytest.mark.parametrize("subdivisions", [1, 3])
def test_training_uses_darknets_batch_numbers(name, subdivisions):
    # A recurrent net: Darknet's batch holds time_steps, seen advances before
    # the update, so the first update has batch number 1.
    p = SCHEDULES[name]
    T, B = 3, 2
    net = Network([GRU(4, 5, seed=0), Connected(5, 3, seed=1), Softmax(3)], 4, batch=B,
                  subdivisions=subdivisions, time_steps=T, learning_rate=p["learning_rate"],
                  momentum=0.0, decay=0.0, **_policy_args(p))
    used = _spy(net)
    rng = np.random.default_rng(0)
    calls = 12 * subdivisions
    for _ in range(calls):
        x = rng.normal(size=(T, B, 4)).astype(np.float32) * 0.01
        net.train_step(x, rng.integers(0, 3, (T, B)))
    expected = _simulate_darknet(p, calls, B * subdivisions, subdivisions, T)
    assert len(used) == 12 and used == expected
    assert net.current_batch == 12
    assert net.current_learning_rate() == darknet_rate(12, p)
    assert net.current_learning_rate(5) == darknet_rate(5, p)


def test_first_update_uses_batch_number_one():
    net = Network([Connected(2, 2, seed=0), Cost(2)], 2, learning_rate=0.5, burn_in=4,
                  power=1.0)
    used = _spy(net)
    net.train_step(np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 2)))
    assert used == [0.5 * 1 / 4]
    net.train_step(np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 2)))
    assert used == [0.125, 0.25]


def test_constant_policy_and_an_explicit_rate_leave_updates_as_they_were():
    def run(**kw):
        net = Network([GRU(3, 4, seed=2), Connected(4, 2, seed=3), Cost(2)], 3, batch=2,
                      time_steps=3, learning_rate=0.01, **kw)
        rng = np.random.default_rng(5)
        for _ in range(4):
            net.train_step(rng.normal(size=(3, 2, 3)).astype(np.float32),
                           rng.normal(size=(3, 2, 2)))
        return [np.array(v) for la in net.layers for v in getattr(la, "params", {}).values()]

    base = run()
    for a, b in zip(base, run(policy="constant", power=2.0, steps=[1], scales=[0.0])):
        assert_array_equal(a, b)
    net = Network([Connected(2, 2, seed=0), Cost(2)], 2, learning_rate=0.5, policy="exp",
                  gamma=0.5)
    used = _spy(net)
    net.forward(np.ones((1, 1, 2), np.float32), train=True)
    net.backward(np.ones((1, 1, 2), np.float32))
    net.update(learning_rate=0.03)
    assert used == [0.03]


def test_poly_past_max_batches_is_refused_by_update():
    net = Network([Connected(2, 2, seed=0), Cost(2)], 2, learning_rate=0.5, policy="poly",
                  power=2.5, max_batches=2)
    for k in range(2):
        net.train_step(np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=r"learning_rate: policy 'poly' at batch number 3 "
                                         r"gives nan.*max_batches=2"):
        net.train_step(np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 2)))


@pytest.mark.parametrize("kw, words", [
    (dict(policy="random"), "policy: 'random' is not supported: Darknet draws"),
    (dict(policy="sig"), "Darknet's cfg spells it 'sigmoid'"),
    (dict(policy="cosine"), "policy: expected one of 'constant'"),
    (dict(policy="steps"), "steps: policy 'steps' expected at least one step"),
    (dict(policy="steps", steps=[3, 5]), "scales: expected one scale per step (2), got 0"),
    (dict(steps=[-1], scales=[0.1]), "steps[0]: expected an integer in [0,"),
    (dict(steps=[1], scales=[-0.1]), "scales[0]: expected a finite number in [0.0, inf]"),
    (dict(policy="step", step=0), "step: policy 'step' expected an integer >= 1, got 0"),
    (dict(policy="poly"), "max_batches: policy 'poly' expected an integer >= 1, got 0"),
    (dict(policy="exp", gamma=-0.5), "gamma: policy 'exp' expected a finite number in [0.0"),
    (dict(burn_in=-1), "burn_in: expected an integer in [0,"),
    (dict(power=float("nan")), "power: expected a finite number"),
    (dict(scale=-2.0), "scale: expected a finite number in [0.0, inf]"),
])
def test_bad_policies_are_value_errors_naming_the_parameter(kw, words):
    with pytest.raises(ValueError) as info:
        Network([Connected(2, 2)], 2, **kw)
    assert words in str(info.value)


def test_current_learning_rate_checks_its_argument():
    net = Network([Connected(2, 2)], 2)
    with pytest.raises(ValueError, match="batch_num: expected an integer >= 0"):
        net.current_learning_rate(-1)


# --- the cfg ----------------------------------------------------------------

CFG = """[net]
inputs=4
batch=4
subdivisions=2
time_steps=3
learning_rate=0.125
momentum=0.9
decay=0.0
policy=steps
steps=5,12,30
scales=.5,.25,.125
burn_in=3
power=1
max_batches=40

[gru]
output=5

[dropout]
probability=.25

[connected]
output=3
activation=linear

[softmax]
"""


def test_cfg_policy_and_dropout_are_read_and_written_back(tmp_path):
    net = darknet.network_from_cfg(darknet.parse_cfg(CFG), seed=0)
    assert (net.policy, net.steps, net.scales, net.burn_in, net.power, net.max_batches) == (
        "steps", (5, 12, 30), (0.5, 0.25, 0.125), 3, 1.0, 40)
    drop = net.layers[1]
    assert isinstance(drop, Dropout) and drop.type == "dropout"
    assert (drop.inputs, drop.outputs, drop.probability) == (5, 5, 0.25)
    text = darknet.cfg_text(net)
    assert "scales=.5,.25,.125" in text and "[dropout]\nprobability=.25" in text
    again = darknet.network_from_cfg(darknet.parse_cfg(text))
    for key in ("policy", "steps", "scales", "burn_in", "power", "max_batches", "step",
                "scale", "gamma", "learning_rate"):
        assert getattr(again, key) == getattr(net, key), key
    # values set on the network are written (lists as Darknet's comma lists)
    net.policy, net.steps, net.scales, net.gamma = "sigmoid", (7,), (0.5,), 0.375
    net.step = 9
    text = darknet.cfg_text(net)
    for line in ("policy=sigmoid", "steps=7", "scales=0.5", "gamma=0.375", "step=9"):
        assert line in text.splitlines(), line
    # weights: [dropout] has none; a pair round-trips
    darknet.save(net, tmp_path / "m.cfg", tmp_path / "m.weights")
    back = darknet.load_network(tmp_path / "m.cfg", tmp_path / "m.weights")
    assert [type(la) for la in back.layers] == [GRU, Dropout, Connected, Softmax]
    for k, v in net.layers[2].params.items():
        assert_array_equal(back.layers[2].params[k], v)


def test_training_from_a_cfg_follows_its_schedule():
    net = darknet.network_from_cfg(darknet.parse_cfg(CFG), seed=0)
    used = _spy(net)
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(2 * 35):
        x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, 2))]
        losses.append(net.train_step(x, rng.integers(0, 3, (3, 2))))
    p = dict(policy="steps", learning_rate=0.125, steps=[5, 12, 30], scales=[0.5, 0.25, 0.125],
             burn_in=3, power=1.0)
    assert used == _simulate_darknet(p, 70, cfg_batch=4, subdivisions=2, time_steps=3)
    assert np.all(np.isfinite(losses))


NET = "[net]\ninputs=4\n{net}\n[gru]\noutput=3\n{layer}[softmax]\n"


@pytest.mark.parametrize("net, layer, words", [
    ("policy=steps\nsteps=100,200", "", "[net] (line 1): option scales: expected one scale "
                                        "per step (2), got 0"),
    ("policy=steps\nscales=.1", "", "option scales: expected one scale per step (0), got 1"),
    ("policy=steps\nsteps=100,x\nscales=.1,.1", "", "option steps, item 1: expected int, "
                                                    "got 'x'"),
    ("policy=steps\nsteps=100,\nscales=.1,.1", "", "option steps, item 1: expected int"),
    ("policy=random", "", "option policy: 'random' is not supported"),
    ("policy=sig", "", "spells it 'sigmoid'"),
    ("policy=poly", "", "option max_batches: policy 'poly' expected an integer >= 1"),
    ("burn_in=-2", "", "option burn_in: expected an integer in [0,"),
    ("power=inf", "", "option power: expected a finite number"),
    ("gamma=nan", "", "option gamma: expected a finite number"),
    ("policy=step\nstep=0", "", "option step: policy 'step' expected an integer >= 1"),
    ("clip=1", "", "[net] (line 1): option clip: not supported by gru_cy"),
    ("notruth=1", "", "option notruth: not supported by gru_cy (it would be ignored); "
                      "expected one of batch"),
    ("", "[dropout]\nprobability=1\n", "layer 1 [dropout] (cfg line 6): option probability: "
                                       "expected a finite number in [0.0, 1.0)"),
    ("", "[dropout]\nprobability=-0.5\n", "option probability"),
    ("", "[dropout]\nprob=0.5\n", "layer 1 [dropout] (cfg line 6): option prob: not "
                                  "supported by gru_cy"),
    ("", "[connected]\noutput=3\ndontload=1\n", "layer 1 [connected] (cfg line 6): option "
                                                "dontload: not supported"),
    ("", "[cost]\ntype=sse\nthresh=0.5\n", "option thresh: not supported"),
])
def test_cfg_options_are_checked_and_unknown_ones_refused(net, layer, words):
    with pytest.raises(ValueError) as info:
        darknet.network_from_cfg(darknet.parse_cfg(NET.format(net=net, layer=layer)))
    assert words in str(info.value)


def test_unknown_gru_and_softmax_options_are_refused():
    for text, words in (("[net]\ninputs=4\n[gru]\noutput=3\nhidden=3\n", "option hidden"),
                        ("[net]\ninputs=4\n[softmax]\ntree=x.tree\n", "option tree"),
                        ("[net]\ninputs=4\n[softmax]\nspatial=1\n",
                         "option spatial: expected 0")):
        with pytest.raises(ValueError, match=words):
            darknet.network_from_cfg(darknet.parse_cfg(text))


def test_darknets_input_size_names_are_read():
    net = darknet.network_from_cfg(darknet.parse_cfg(
        "[net]\nheight=1\nwidth=2\nchannels=3\n[gru]\noutput=3\n"))
    assert net.inputs == 6


def test_darknets_own_cfgs_load():
    # pjreddie's cfg/gru.cfg (policy=constant, power, max_batches) and its
    # cfg/rnn.cfg's [net] (steps, scales) load as they are
    for name in ("net_chargru_tiny.cfg",):
        import os
        net = darknet.load_network(os.path.join(os.path.dirname(__file__), "data", name))
        assert net.policy == "constant" and net.max_batches == 1000000 and net.power == 4
    net = darknet.network_from_cfg(darknet.parse_cfg(
        "[net]\nsubdivisions=1\ninputs=256\nbatch = 1\nmomentum=0.9\ndecay=0.001\n"
        "max_batches = 2000\ntime_steps=1\nlearning_rate=0.1\npolicy=steps\n"
        "steps=1000,1500\nscales=.1,.1\n[gru]\noutput=8\n[connected]\noutput=256\n"
        "activation=leaky\n[softmax]\n"))
    assert net.current_learning_rate(1499) == darknet_rate(1499, dict(
        policy="steps", learning_rate=0.1, steps=[1000, 1500], scales=[0.1, 0.1]))


# --- [dropout] --------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_scales_survivors_and_reuses_the_mask(dtype):
    p = 0.3
    layer = Dropout(50, probability=p, seed=4)
    x = np.random.default_rng(0).uniform(0.5, 1.5, (400, 50)).astype(dtype)
    y = layer.forward(x, train=True)
    assert y.dtype == dtype and y.shape == x.shape
    dropped = y == 0
    scale = dtype(1.0 / (1.0 - p))                         # Darknet's l.scale
    assert_array_equal(y[~dropped], x[~dropped] * scale)
    assert abs(dropped.mean() - p) < 0.01                  # 20000 draws: sd 0.003
    dy = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    dx = layer.backward(dy)
    assert_array_equal(dx[dropped], 0)
    assert_array_equal(dx[~dropped], dy[~dropped] * scale)
    assert_array_equal(layer.backward(dy), dx)             # the same mask again
    y2 = layer.forward(x, train=True)                      # a new mask
    assert not np.array_equal(y2 == 0, dropped)


def test_dropout_inference_is_the_identity_and_p0_keeps_all():
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    layer = Dropout(4, probability=0.5, seed=0)
    y = layer.forward(x)
    assert_array_equal(y, x)
    y[0, 0] = 99.0
    assert x[0, 0] != 99.0                                 # a fresh array
    with pytest.raises(ValueError, match="backward: expected a preceding forward"):
        layer.backward(x)
    assert_array_equal(Dropout(4, probability=0.0, seed=0).forward(x, train=True), x)


def test_dropout_masks_are_seeded_and_the_state_redraws_them():
    x = np.ones((5, 8))
    a, b = Dropout(8, 0.5, seed=11), Dropout(8, 0.5, seed=11)
    assert_array_equal(a.forward(x, train=True), b.forward(x, train=True))
    state = a.dropout_state
    y = a.forward(x, train=True)
    a.dropout_state = state
    assert_array_equal(a.forward(x, train=True), y)


def test_dropout_gradient_by_finite_differences():
    # L = sum(w * dropout(x)) with the mask held fixed (the generator's state
    # put back before every forward): dL/dx = backward(w)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5))
    w = rng.normal(size=(6, 5))
    layer = Dropout(5, probability=0.4, seed=2)
    state = layer.dropout_state

    def loss():
        layer.dropout_state = state
        return float(np.sum(w * layer.forward(x, train=True)))

    numeric = gradient(loss, x)
    layer.dropout_state = state
    layer.forward(x, train=True)
    analytic = layer.backward(w)
    assert_allclose(analytic, numeric, **tol(np.float64, "finite_diff_net"))
    # the check catches a wrong backward: the unscaled mask
    wrong = w * (analytic != 0)
    assert not np.allclose(wrong, numeric, **tol(np.float64, "finite_diff_net"))


def test_dropout_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"probability: expected a finite number in \[0.0, "
                                         r"1.0\), got 1"):
        Dropout(3, probability=1)
    with pytest.raises(TypeError, match="seed"):
        Dropout(3, seed=1.5)
    layer = Dropout(3)
    with pytest.raises(ValueError, match="x: expected an array whose last axis has 3"):
        layer.forward(np.ones((2, 4)))
    with pytest.raises(TypeError, match="x: expected a floating array"):
        layer.forward(np.ones((2, 3), int))
    layer.forward(np.ones((2, 3)), train=True)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\)"):
        layer.backward(np.ones((3, 3)))


def test_dropout_in_a_network_trains_and_reproduces():
    def run():
        net = Network([GRU(4, 6, seed=1), Dropout(6, 0.5, seed=2), Connected(6, 3, seed=3),
                       Softmax(3)], 4, batch=2, time_steps=3)
        rng = np.random.default_rng(0)
        for _ in range(3):
            net.train_step(rng.normal(size=(3, 2, 4)).astype(np.float32),
                           rng.integers(0, 3, (3, 2)))
        return net

    a, b = run(), run()
    for la, lb in zip(a.layers, b.layers):
        for k, v in getattr(la, "params", {}).items():
            assert_array_equal(lb.params[k], v)
    x = np.ones((3, 2, 4), np.float32)
    assert_array_equal(a.forward(x), b.forward(x))
    assert "Dropout" in gru_cy.__all__ and gru_cy.Dropout is Dropout


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_dropout_copies_carry_the_generator_and_are_independent(how):
    import copy
    import pickle
    layer = Dropout(7, 0.5, seed=3)
    x = np.ones((4, 7))
    layer.forward(x, train=True)
    clone = {"pickle": lambda m: pickle.loads(pickle.dumps(m)),
             "deepcopy": copy.deepcopy, "copy": copy.copy}[how](layer)
    assert (clone.type, clone.inputs, clone.outputs, clone.probability) == ("dropout", 7, 7, 0.5)
    assert_array_equal(clone.backward(x), layer.backward(x))     # the mask travelled
    assert_array_equal(clone.forward(x, train=True), layer.forward(x, train=True))
    clone.forward(x, train=True)                                 # the clone's own generator
    assert clone.dropout_state != layer.dropout_state


def test_steps_and_scales_must_be_sequences():
    for kw in (dict(steps=5, scales=[0.1]), dict(steps=[5], scales="0.1")):
        with pytest.raises(TypeError, match="expected a sequence of numbers"):
            Network([Connected(2, 2)], 2, policy="steps", **kw)
