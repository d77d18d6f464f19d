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

__all__ = ["serialized", "new_lock"]


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
