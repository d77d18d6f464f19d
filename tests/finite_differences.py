"""Central differences for the tests' gradient checks."""
import numpy as np


def central_difference(f, a, idx, h=1e-6):
    """d f() / d a[idx]: perturbs ``a[idx]`` in place by +-h, then restores it."""
    old = a[idx]
    a[idx] = old + h
    fp = f()
    a[idx] = old - h
    fm = f()
    a[idx] = old
    return (fp - fm) / (2.0 * h)


def gradient(f, a, h=1e-6):
    """d f() / d a for every element of ``a`` (perturbed in place, restored)."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        gflat[i] = central_difference(f, flat, i, h)
    return grad
