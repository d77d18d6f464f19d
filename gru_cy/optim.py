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
            names = ("u",) if self.kind == "sgd" else ("m", "v")
            self.state = {k: backend.xp.zeros_like(w) for k in names}
        if self.kind == "sgd":
            backend.sgd_update(w, self.state["u"], g, n_decay, hp["learning_rate"],
                               hp["momentum"], hp["decay"], hp["batch"], hp["clip"],
                               nthreads)
        else:
            self.t += 1
            backend.adam_update(w, self.state["m"], self.state["v"], g, hp["learning_rate"],
                                hp["b1"], hp["b2"], hp["eps"], hp["decay"], hp["batch"],
                                self.t, hp["clip"], nthreads)

    def to(self, backend):
        """Move the state to ``backend``'s device."""
        self.state = {k: backend.asarray(v) for k, v in self.state.items()}
