"""One lock per model object: concurrent calls on one object run one at a time.

A layer keeps per-call state (its engine's scratch and training cache, the
carried state, the optimiser's moments), so two threads calling one layer at
once would overwrite each other's buffers.  Every public method that reads or
writes that state is :func:`serialized` on the object's re-entrant lock
(``self._lock``): concurrent calls wait for each other and each gets the
result it would get alone.  Calls on different objects run in parallel (the
engine releases the GIL).  A training forward's cache belongs to the object:
a ``backward`` uses the last training forward of any thread, so train one
model per thread.
"""
import functools
import threading

__all__ = ["serialized", "new_lock", "Locked"]


def new_lock():
    """The lock an object's serialized methods share."""
    return threading.RLock()


def serialized(method):
    """Run ``method`` holding ``self._lock``."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return call


class Locked:
    """Pickling and copying of an object with a lock (``self._lock``): the lock
    is left out and a fresh one made; ``copy.copy`` makes an independent copy
    (as ``copy.deepcopy``), never one sharing arrays with the original."""

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = new_lock()

    def __copy__(self):
        import copy
        return copy.deepcopy(self)
