"""Darknet's update rules as optimiser objects: one per flat parameter vector.

The rules themselves are kernels (``sgd_update`` and ``adam_update`` of
``gru_cy.kernels``, run by the layer's backend); this module keeps their state
(SGD's velocity ``u``, Adam's moments ``m``, ``v`` and step ``t``) and moves it
with the layer.
"""
OPTIMIZERS = ("sgd", "adam")


class Optimizer:
    """Darknet's SGD with momentum and decay, or Adam (SPEC "Update").

    Parameters
    ----------
    kind : {"sgd", "adam"}

    Attributes
    ----------
    state : dict
        ``"u"`` (SGD) or ``"m"``, ``"v"`` (Adam): arrays the size of the
        parameter vector, created at the first step.
    t : int
        Adam's step count (0 before the first step).
    """

    def __init__(self, kind):
        self.kind = kind
        self.state = {}
        self.t = 0

    def step(self, backend, w, g, n_decay, hp, nthreads):
        """One update of the flat vector ``w`` with gradient ``g``, in place; zeroes ``g``.

        ``n_decay``: SGD's decay applies to ``w[:n_decay]`` (the weights);
        ``hp``: the checked hyper-parameters (``gru_cy._validate.update_args``).
        """
        if not self.state:
            self.state = {k: backend.xp.zeros_like(w) for k in self._names()}
        if self.kind == "adam":
            self.t += 1
        self._rule(backend, w, g, self.state, n_decay, hp, self.t, nthreads)

    def _names(self):
        return ("u",) if self.kind == "sgd" else ("m", "v")

    def _rule(self, backend, w, g, state, n_decay, hp, t, nthreads):
        if self.kind == "sgd":
            backend.sgd_update(w, state["u"], g, n_decay, hp["learning_rate"],
                               hp["momentum"], hp["decay"], hp["batch"], hp["clip"],
                               nthreads)
        else:
            backend.adam_update(w, state["m"], state["v"], g, hp["learning_rate"],
                                hp["b1"], hp["b2"], hp["eps"], hp["decay"], hp["batch"],
                                t, hp["clip"], nthreads)

    def would_be_non_finite(self, backend, w, g, n_decay, hp, nthreads):
        """Whether :meth:`step` would leave an element non-finite (parameter or
        state), by the ``sgd_check`` / ``adam_check`` kernels: the rule's own
        arithmetic, writing nothing."""
        out = backend.xp.zeros(1, w.dtype)
        if self.kind == "sgd":
            u = self.state["u"] if self.state else backend.xp.zeros_like(w)
            backend.sgd_check(out, w, u, g, n_decay, hp["learning_rate"], hp["momentum"],
                              hp["decay"], hp["batch"], hp["clip"], nthreads)
        else:
            z = None if self.state else backend.xp.zeros_like(w)
            backend.adam_check(out, w, self.state["m"] if self.state else z,
                               self.state["v"] if self.state else z, g,
                               hp["learning_rate"], hp["b1"], hp["b2"], hp["eps"],
                               hp["decay"], hp["batch"], self.t + 1, hp["clip"], nthreads)
        return bool(out[0] != 0)

    def first_non_finite(self, backend, w, g, n_decay, hp, nthreads, chunk=1 << 16):
        """Where :meth:`step` would leave ``w`` non-finite: the first such index,
        or None.  Runs the rule on copies, ``chunk`` elements at a time (the
        same kernel, so the same values as the real step); changes nothing."""
        xp = backend.xp
        n = w.size
        t = self.t + 1 if self.kind == "adam" else self.t
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            wc, gc = w[s:e].copy(), g[s:e].copy()
            st = {k: (self.state[k][s:e].copy() if self.state else xp.zeros_like(wc))
                  for k in self._names()}
            self._rule(backend, wc, gc, st, max(0, min(n_decay - s, e - s)), hp, t,
                       nthreads)
            bad = ~xp.isfinite(wc)
            if bool(bad.any()):
                return s + int(xp.argmax(bad))
        return None

    def to(self, backend):
        """Move the state to ``backend``'s device."""
        self.state = {k: backend.asarray(v) for k, v in self.state.items()}
