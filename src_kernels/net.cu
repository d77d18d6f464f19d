// Network building blocks (activations, softmax, losses): the CUDA twins of
// gru_cy/_cpu/net.pyx (contracts in gru_cy/kernels.py).  Elementwise kernels
// use a grid-stride loop; row kernels give one thread to each row and loop
// over its columns in ascending order (deterministic sums).  Activations are
// evaluated in the element type (the CPU twin uses double: float32 results
// agree to rounding).
#include "common.cuh"

namespace gru_cy {

// Y (n,):  Y = act(Y) in place.
template <typename T>
__device__ void activation_forward_body(T* Y, long long n, int act) {
    for (long long i = global_index(); i < n; i += grid_stride()) Y[i] = activate(Y[i], act);
}

// dY, Y (n,):  dY *= act'(x), written through the output Y = act(x).
template <typename T>
__device__ void activation_backward_body(T* dY, const T* Y, long long n, int act) {
    for (long long i = global_index(); i < n; i += grid_stride())
        dY[i] *= activate_gradient(Y[i], act);
}

// P (R, C) contiguous; X (R, C) rows of stride ldx.  Sums in double (as the
// CPU twin):
//   P[r] = exp(X[r] - max X[r]) / sum_c exp(X[r, c] - max X[r])
template <typename T>
__device__ void softmax_forward_body(T* P, const T* X, long long R, long long C,
                                     long long ldx) {
    for (long long r = global_index(); r < R; r += grid_stride()) {
        if (C <= 0) break;
        const T* x = X + r * ldx;
        T* p = P + r * C;
        T mx = x[0];
        for (long long c = 1; c < C; ++c) mx = x[c] > mx ? x[c] : mx;
        double sum = 0.0;
        for (long long c = 0; c < C; ++c) {
            const double e = exp((double)x[c] - (double)mx);
            sum += e;
            p[c] = T(e);
        }
        for (long long c = 0; c < C; ++c) p[c] = T(p[c] / sum);
    }
}

// dX, P, target: (R, C) contiguous; loss (R,).  Differentiates
// loss = -sum_c target*log(softmax(X)) (scaled); the loss sums in double:
//   dX = scale*(P - target);  loss[r] = -sum_c target*log(max(P, tiny))
template <typename T>
__device__ void softmax_cross_entropy_backward_body(T* dX, T* loss, const T* P,
                                                    const T* target, long long R,
                                                    long long C, T scale) {
    const double p_min = tiny<T>();
    for (long long r = global_index(); r < R; r += grid_stride()) {
        double sum = 0.0;
        for (long long c = 0; c < C; ++c) {
            const long long i = r * C + c;
            const double p = P[i];
            if (target[i] != T(0)) sum -= target[i] * log(p > p_min ? p : p_min);
            dX[i] = scale * (P[i] - target[i]);
        }
        loss[r] = T(sum);
    }
}

// dX, Y, target: (R, C) contiguous; loss (R,).  Sums in double:
//   dX = scale*(Y - target);  loss[r] = sum_c (Y - target)^2 / 2
template <typename T>
__device__ void mse_backward_body(T* dX, T* loss, const T* Y, const T* target, long long R,
                                  long long C, T scale) {
    for (long long r = global_index(); r < R; r += grid_stride()) {
        double sum = 0.0;
        for (long long c = 0; c < C; ++c) {
            const long long i = r * C + c;
            const double e = (double)Y[i] - target[i];
            sum += e * e;
            dX[i] = T(scale * e);
        }
        loss[r] = T(0.5 * sum);
    }
}

// Y: rows of stride ldy; X: rows of stride ldx; rows (R,):
//   Y[i, :C] = X[rows[i], :C] where rows[i] >= 0, else 0
template <typename T>
__device__ void seq_gather_body(T* Y, const T* X, const long long* rows, long long R,
                                long long C, long long ldy, long long ldx) {
    for (long long e = global_index(); e < R * C; e += grid_stride()) {
        const long long i = e / C, c = e % C;
        const long long j = rows[i];
        Y[i * ldy + c] = j >= 0 ? X[j * ldx + c] : T(0);
    }
}

}  // namespace gru_cy

extern "C" __global__ void activation_forward_f32(float* Y, long long n, int act) {
    gru_cy::activation_forward_body<float>(Y, n, act);
}
extern "C" __global__ void activation_forward_f64(double* Y, long long n, int act) {
    gru_cy::activation_forward_body<double>(Y, n, act);
}

extern "C" __global__ void activation_backward_f32(float* dY, const float* Y, long long n,
                                                   int act) {
    gru_cy::activation_backward_body<float>(dY, Y, n, act);
}
extern "C" __global__ void activation_backward_f64(double* dY, const double* Y, long long n,
                                                   int act) {
    gru_cy::activation_backward_body<double>(dY, Y, n, act);
}

extern "C" __global__ void softmax_forward_f32(float* P, const float* X, long long R,
                                               long long C, long long ldx) {
    gru_cy::softmax_forward_body<float>(P, X, R, C, ldx);
}
extern "C" __global__ void softmax_forward_f64(double* P, const double* X, long long R,
                                               long long C, long long ldx) {
    gru_cy::softmax_forward_body<double>(P, X, R, C, ldx);
}

extern "C" __global__ void softmax_cross_entropy_backward_f32(
        float* dX, float* loss, const float* P, const float* target, long long R, long long C,
        float scale) {
    gru_cy::softmax_cross_entropy_backward_body<float>(dX, loss, P, target, R, C, scale);
}
extern "C" __global__ void softmax_cross_entropy_backward_f64(
        double* dX, double* loss, const double* P, const double* target, long long R,
        long long C, double scale) {
    gru_cy::softmax_cross_entropy_backward_body<double>(dX, loss, P, target, R, C, scale);
}

extern "C" __global__ void mse_backward_f32(float* dX, float* loss, const float* Y,
                                            const float* target, long long R, long long C,
                                            float scale) {
    gru_cy::mse_backward_body<float>(dX, loss, Y, target, R, C, scale);
}
extern "C" __global__ void mse_backward_f64(double* dX, double* loss, const double* Y,
                                            const double* target, long long R, long long C,
                                            double scale) {
    gru_cy::mse_backward_body<double>(dX, loss, Y, target, R, C, scale);
}

extern "C" __global__ void seq_gather_f32(float* Y, const float* X, const long long* rows,
                                          long long R, long long C, long long ldy,
                                          long long ldx) {
    gru_cy::seq_gather_body<float>(Y, X, rows, R, C, ldy, ldx);
}
extern "C" __global__ void seq_gather_f64(double* Y, const double* X, const long long* rows,
                                          long long R, long long C, long long ldy,
                                          long long ldx) {
    gru_cy::seq_gather_body<double>(Y, X, rows, R, C, ldy, ldx);
}
