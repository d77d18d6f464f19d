"""The backend protocol's base class (see ``gru_cy.backends``) and host copies."""
import numpy as np


def is_cupy(a):
    """Whether ``a`` is a CuPy array (without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def to_host(a):
    """A NumPy array of ``a`` (NumPy as is, CuPy copied to the host, torch tensors
    and array-likes converted)."""
    if isinstance(a, np.ndarray):
        return a
    if is_cupy(a):
        return a.get()
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


class Backend:
    """The kernels of ``gru_cy.kernels`` on whole arrays (the protocol: ``gru_cy.backends``).

    Shapes: 2-D arrays are (rows R, columns C), C-contiguous.
    """

    name = None
    xp = None

    def _run(self, name, args, nthreads):
        raise NotImplementedError

    # -- products and sums
    def gemm(self, C, A, B, transA, transB, alpha, beta, nthreads):
        """C (M, N) = alpha * op(A) @ op(B) + beta * C."""
        M, N = C.shape
        K = A.shape[0] if transA else A.shape[1]
        self._run("gemm", (C, A, B, M, N, K, A.shape[1], B.shape[1], N, int(transA),
                           int(transB), alpha, beta), nthreads)

    def bias_forward(self, Y, bias, nthreads):
        """Y (R, C) += bias (C,) on every row."""
        R, C = Y.shape
        self._run("bias_forward", (Y, bias, R, C, C), nthreads)

    def col_sum(self, out, A, nthreads):
        """out (C,) += the column sums of A (R, C)."""
        R, C = A.shape
        self._run("col_sum", (out, A, R, C, C), nthreads)

    # -- batch normalisation over all rows (one group)
    def bn_forward_train(self, Y, vhat, sd, rolling_mean, rolling_variance, scales,
                         biases, nthreads):
        """Y (R, C) = scales * (Y - mu) / (sd + eps) + biases with the batch's mu
        and sd; vhat (R, C) and sd (C,) kept; rolling statistics advance once."""
        R, C = Y.shape
        self._run("bn_forward_train", (Y, vhat, sd, rolling_mean, rolling_variance,
                                       scales, biases, 1, R, C, C), nthreads)

    def bn_forward_infer(self, Y, rolling_mean, rolling_variance, scales, biases,
                         nthreads):
        """Y (R, C) normalised with the rolling statistics."""
        R, C = Y.shape
        self._run("bn_forward_infer", (Y, rolling_mean, rolling_variance, scales, biases,
                                       R, C, C), nthreads)

    def bn_backward(self, dY, dscales, dbiases, vhat, sd, scales, nthreads):
        """dY (R, C): dL/d(out) in, dL/dv out; dscales, dbiases (C,) +=."""
        R, C = dY.shape
        self._run("bn_backward", (dY, dscales, dbiases, vhat, sd, scales, 1, R, C, C),
                  nthreads)

    # -- activations, softmax, losses
    def activation_forward(self, Y, act, nthreads):
        """Y = act(Y) in place (code of ``gru_cy.kernels.ACTIVATIONS``)."""
        self._run("activation_forward", (Y, Y.size, act), nthreads)

    def activation_backward(self, dY, Y, act, nthreads):
        """dY *= act'(x), written through Y = act(x)."""
        self._run("activation_backward", (dY, Y, dY.size, act), nthreads)

    def softmax_forward(self, P, X, nthreads):
        """P (R, C) = softmax of each row of X (R, C)."""
        R, C = X.shape
        self._run("softmax_forward", (P, X, R, C, C), nthreads)

    def softmax_cross_entropy_backward(self, dX, loss, P, target, scale, nthreads):
        """dX (R, C) = scale * (P - target); loss (R,) = -sum_c target * log(P)."""
        R, C = P.shape
        self._run("softmax_cross_entropy_backward", (dX, loss, P, target, R, C, scale),
                  nthreads)

    def mse_backward(self, dX, loss, Y, target, scale, nthreads):
        """dX (R, C) = scale * (Y - target); loss (R,) = sum_c (Y - target)^2 / 2."""
        R, C = Y.shape
        self._run("mse_backward", (dX, loss, Y, target, R, C, scale), nthreads)

    # -- sequences
    def seq_gather(self, Y, X, rows, C, ldy, ldx, nthreads):
        """Y[i, :C] = X[rows[i], :C] where rows[i] >= 0, else 0; Y and X flat
        arrays with rows of strides ldy and ldx, rows an int64 array on the
        backend."""
        self._run("seq_gather", (Y, X, rows, rows.size, C, ldy, ldx), nthreads)

    # -- update rules (flat vectors; the first n_decay elements are weights)
    def sgd_update(self, w, u, g, n_decay, lr, momentum, decay, batch, clip, nthreads):
        """Darknet's SGD step in place; zeroes g."""
        self._run("sgd_update", (w, u, g, w.size, n_decay, lr, momentum, decay, batch,
                                 clip), nthreads)

    def sgd_check(self, out, w, u, g, n_decay, lr, momentum, decay, batch, clip, nthreads):
        """out[0] += how many elements ``sgd_update`` would leave non-finite."""
        self._run("sgd_check", (out, w, u, g, w.size, n_decay, lr, momentum, decay, batch,
                                clip), nthreads)

    def adam_check(self, out, w, m, v, g, lr, b1, b2, eps, decay, batch, t, clip, nthreads):
        """out[0] += how many elements ``adam_update`` would leave non-finite."""
        self._run("adam_check", (out, w, m, v, g, w.size, lr, b1, b2, eps, decay, batch, t,
                                 clip), nthreads)

    def adam_update(self, w, m, v, g, lr, b1, b2, eps, decay, batch, t, clip, nthreads):
        """Darknet's Adam step in place; zeroes g."""
        self._run("adam_update", (w, m, v, g, w.size, lr, b1, b2, eps, decay, batch, t,
                                  clip), nthreads)
