"""pickle, copy.copy and copy.deepcopy of every model class (issue 14, item 4):
exact round trips, independent storage, training that continues bit for bit."""
import copy
import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from gru_cy import GRU, Network, StackedGRU
from gru_cy.nn import Connected, Cost, Dropout, Softmax


def _gru():
    return GRU(4, 6, variant="reset_after", batch_normalize=True, optimizer="adam", seed=1)


def _stacked():
    return StackedGRU(4, 6, num_layers=2, bidirectional=True, dropout=0.3, seed=2,
                      optimizer="adam")


def _network():
    return Network([GRU(4, 6, seed=3), Connected(6, 5, activation="leaky",
                                                  batch_normalize=True, seed=4),
                    Softmax(5)], 4, batch=3, time_steps=5, learning_rate=0.05)


def _net_cost():
    return Network([GRU(4, 6, seed=3), Connected(6, 4, seed=4), Cost(4)], 4)


def _net_dropout():
    # a learning-rate schedule and a [dropout] layer (its generator travels)
    return Network([GRU(4, 6, seed=3, optimizer="adam"), Dropout(6, 0.4, seed=5),
                    Connected(6, 5, seed=4, optimizer="adam"), Softmax(5)], 4, batch=3,
                   time_steps=5, learning_rate=0.05, optimizer="adam", policy="steps",
                   steps=[2, 5], scales=[0.5, 0.2], burn_in=2, power=2.0)


def _train(model, steps, rng):
    # a few training steps (with carried state), returns the last outputs
    for _ in range(steps):
        x = rng.normal(size=(5, 3, 4)).astype(np.float32)
        if isinstance(model, Network):
            y = model.forward(x, train=True)
            if isinstance(model.layers[-1], Softmax):
                model.train_step(x, rng.integers(0, 5, (5, 3)))
            else:
                model.train_step(x, rng.normal(size=(5, 3, 4)))
        else:
            y = model.forward(x, train=True)
            model.backward(np.ones_like(y))
            model.update(learning_rate=0.01)
    return model.forward(np.ones((5, 3, 4), np.float32))


def _arrays(model):
    if isinstance(model, Network):
        out = {}
        for i, layer in enumerate(model.layers):
            for k, v in getattr(layer, "params", {}).items():
                out[f"{i}.{k}"] = np.array(v)
        return out
    return {k: np.array(v) for k, v in model.params.items()}


@pytest.mark.parametrize("make", [_gru, _stacked, _network, _net_cost, _net_dropout],
                         ids=("gru", "stacked", "network", "network-cost", "network-dropout"))
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_round_trip_is_exact_and_training_continues_bit_for_bit(make, how):
    rng = np.random.default_rng(0)
    model = make()
    _train(model, 3, rng)                     # optimiser state, rolling statistics, state
    clone = {"pickle": lambda m: pickle.loads(pickle.dumps(m)),
             "deepcopy": copy.deepcopy, "copy": copy.copy}[how](model)
    assert type(clone) is type(model)
    for k, v in _arrays(model).items():
        assert_array_equal(_arrays(clone)[k], v, err_msg=k)
    # the same further training on both: the same bits (optimiser moments,
    # Adam's step, rolling statistics, carried states and dropout generators
    # all travelled)
    y1 = _train(model, 2, np.random.default_rng(7))
    y2 = _train(clone, 2, np.random.default_rng(7))
    assert_array_equal(y1, y2)
    for k, v in _arrays(model).items():
        assert_array_equal(_arrays(clone)[k], v, err_msg=k)


@pytest.mark.parametrize("make", [_gru, _stacked, _network], ids=("gru", "stacked", "network"))
@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy], ids=("copy", "deepcopy"))
def test_copies_own_their_storage(make, how):
    model = make()
    clone = how(model)
    before = _arrays(model)
    for k, v in (clone.params.items() if not isinstance(clone, Network)
                 else clone.layers[0].params.items()):
        v[...] = 0.5                          # in place, through the copy's views
    for k, v in _arrays(model).items():
        assert_array_equal(v, before[k], err_msg=k)


def test_unpickled_layers_run_and_lock():
    g = pickle.loads(pickle.dumps(GRU(3, 4, seed=0)))
    assert g._engine is not None and g._lock is not None
    y = g.forward(np.ones((2, 2, 3), np.float32), train=True)
    g.backward(np.ones_like(y))
    g.update()
