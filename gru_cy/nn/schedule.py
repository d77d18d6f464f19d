"""Darknet's learning-rate policies (``[net]``'s ``policy``), as ``get_current_rate``
in pjreddie's ``network.c`` (commit f6afaab).

The rate of an update depends on Darknet's *batch number*
``b = seen // (batch * subdivisions)`` in Darknet's units, where a recurrent
net's ``batch`` already holds ``time_steps`` (``parse_net_options``:
``batch = batch / subdivisions * time_steps``).  In gru_cy's
:class:`~gru_cy.nn.Network` that is ``seen // update_batch`` with
``update_batch = B * subdivisions * T``.  ``seen`` advances before the update
of its batch, so the first update uses ``b = 1``.

With ``lr`` = ``learning_rate``, ``b < burn_in`` gives
``lr * (b / burn_in) ** power`` whatever the policy; otherwise:

==========  ====================================================================
policy      rate
==========  ====================================================================
constant    ``lr``
step        ``lr * scale ** (b // step)``
steps       ``lr`` times every ``scales[i]`` whose ``steps[i] <= b``, the list
            walked in order and stopped at the first ``steps[i] > b``
exp         ``lr * gamma ** b``
poly        ``lr * (1 - b / max_batches) ** power``
sigmoid     ``lr / (1 + exp(gamma * (b - step)))`` (Darknet's ``SIG``, spelled
            ``sigmoid`` in a cfg)
==========  ====================================================================

Differences from Darknet, all deliberate:

* The rate is computed in double precision from the values as given; Darknet
  holds ``learning_rate``, ``scale``, ``gamma``, ``power`` in ``float`` and
  returns a ``float``, so the two agree to float32 rounding.
* ``sigmoid``: Darknet subtracts ``step`` from an unsigned batch number, so
  before ``step`` its exponent wraps to about 1.8e19 and the rate is 0 (for
  ``gamma > 0``); here ``b - step`` is signed, the logistic curve Darknet's
  formula means.
* ``random`` (``lr * rand_uniform(0, 1) ** power``, a draw from C's ``rand()``
  at every update) is refused: its rates cannot be reproduced, nor a run
  resumed bit for bit.
* Values Darknet accepts and then divides by zero or wraps with (``step = 0``
  with ``step``, ``max_batches = 0`` with ``poly``, negative counts, ``steps``
  without as many ``scales``) are ``ValueError``\\ s.

``poly`` past ``max_batches`` is Darknet's value, the power of a negative
number (C's ``pow``: NaN for a fractional ``power``); ``Network.update``
refuses a rate that is NaN or negative with a ``ValueError``.
"""
import math
import numbers

from gru_cy import _validate as V

__all__ = ["POLICIES", "DEFAULTS", "check", "current_rate"]

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid")
"""The policies gru_cy implements (the cfg's spelling)."""

DEFAULTS = dict(policy="constant", burn_in=0, power=4.0, step=1, scale=1.0, steps=(),
                scales=(), gamma=1.0, max_batches=0)
"""Darknet's defaults (``parse_net_options``)."""

_INT_MAX = 2 ** 31 - 1          # Darknet reads these as C ints


def _count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r} of type "
                        f"{type(value).__name__}")
    if not low <= value <= _INT_MAX:
        raise ValueError(f"{name}: expected an integer in [{low}, {_INT_MAX}], got {value}")
    return int(value)


def check(policy="constant", burn_in=0, power=4.0, step=1, scale=1.0, steps=(), scales=(),
          gamma=1.0, max_batches=0):
    """The policy's parameters checked and normalised (a dict of :data:`DEFAULTS`' keys).

    Parameters
    ----------
    policy : {"constant", "step", "steps", "exp", "poly", "sigmoid"}
    burn_in : int >= 0
        Updates whose batch number is below it use ``lr * (b / burn_in) ** power``.
    power : float >= 0
        The exponent of ``burn_in`` and ``poly``.
    step : int >= 0 (>= 1 with policy "step")
        ``step``'s period; ``sigmoid``'s midpoint.
    scale : float >= 0
        ``step``'s factor.
    steps : sequence of int >= 0
        ``steps``'s batch numbers; as many as ``scales`` (at least one with
        policy "steps").
    scales : sequence of float >= 0
        ``steps``'s factors.
    gamma : float
        ``exp``'s base (>= 0 there); ``sigmoid``'s slope (any finite value).
    max_batches : int >= 0 (>= 1 with policy "poly")

    Raises
    ------
    ValueError
        An unknown policy (``random`` with the reason), a value out of range,
        or a policy without what it needs; the message names the parameter,
        the expected and the received value.
    """
    if policy == "random":
        raise ValueError("policy: 'random' is not supported: Darknet draws its rate from "
                         "C's rand() at every update, which cannot be reproduced (nor a "
                         f"run resumed bit for bit); expected one of "
                         f"{', '.join(map(repr, POLICIES))}")
    if policy == "sig":
        raise ValueError(f"policy: expected one of {', '.join(map(repr, POLICIES))}, got "
                         f"'sig' (Darknet's cfg spells it 'sigmoid')")
    out = dict(policy=V.choice("policy", policy, POLICIES),
               burn_in=_count("burn_in", burn_in, 0),
               power=V.hyper("power", power),
               step=_count("step", step, 0),
               scale=V.hyper("scale", scale),
               gamma=V.hyper("gamma", gamma, low=-math.inf),
               max_batches=_count("max_batches", max_batches, 0))
    for name, value in (("steps", steps), ("scales", scales)):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{name}: expected a sequence of numbers, got {value!r}")
    out["steps"] = tuple(_count(f"steps[{i}]", s, 0) for i, s in enumerate(steps))
    out["scales"] = tuple(V.hyper(f"scales[{i}]", s) for i, s in enumerate(scales))
    if len(out["steps"]) != len(out["scales"]):
        raise ValueError(f"scales: expected one scale per step ({len(out['steps'])}), got "
                         f"{len(out['scales'])}")
    policy = out["policy"]
    if policy == "steps" and not out["steps"]:
        raise ValueError("steps: policy 'steps' expected at least one step (and as many "
                         "scales), got none")
    if policy == "step" and out["step"] < 1:
        raise ValueError(f"step: policy 'step' expected an integer >= 1, got {out['step']}")
    if policy == "poly" and out["max_batches"] < 1:
        raise ValueError(f"max_batches: policy 'poly' expected an integer >= 1, got "
                         f"{out['max_batches']}")
    if policy == "exp" and out["gamma"] < 0:
        raise ValueError(f"gamma: policy 'exp' expected a finite number in [0.0, inf], got "
                         f"{out['gamma']!r}")
    return out


def _pow(base, exponent):
    # C's pow: NaN for a negative base and a fractional exponent, inf on overflow
    try:
        return math.pow(base, exponent)
    except ValueError:
        return math.inf if base == 0 else math.nan
    except OverflowError:
        return math.inf


def current_rate(batch_num, learning_rate, policy="constant", burn_in=0, power=4.0, step=1,
                 scale=1.0, steps=(), scales=(), gamma=1.0, max_batches=0):
    """Darknet's ``get_current_rate`` for batch number ``batch_num``.

    Parameters
    ----------
    batch_num : int >= 0
        Darknet's ``get_current_batch``: ``seen // (B * subdivisions * T)``.
    learning_rate : float
    policy, burn_in, power, step, scale, steps, scales, gamma, max_batches
        As :func:`check` returns them (not checked again here).

    Returns
    -------
    float
        The rate (see the module's table).
    """
    b = int(batch_num)
    lr = float(learning_rate)
    if b < burn_in:
        return lr * _pow(b / burn_in, power)
    if policy == "constant":
        return lr
    if policy == "step":
        return lr * _pow(scale, b // step)
    if policy == "steps":
        rate = lr
        for s, f in zip(steps, scales):
            if s > b:
                return rate
            rate *= f
        return rate
    if policy == "exp":
        return lr * _pow(gamma, b)
    if policy == "poly":
        return lr * _pow(1.0 - b / max_batches, power)
    if policy == "sigmoid":
        try:
            e = math.exp(gamma * (b - step))
        except OverflowError:
            e = math.inf
        return lr * (1.0 / (1.0 + e))
    raise ValueError(f"policy: expected one of {', '.join(map(repr, POLICIES))}, "
                     f"got {policy!r}")
