// Parameter updates: the CUDA twins of gru_cy/_cpu/update.pyx (contracts in
// gru_cy/kernels.py).  One thread per element (grid-stride loop); parameters
// are modified in place and the gradient is zeroed.
#include "common.cuh"

namespace gru_cy {

// w, u, g: (n,).  Elements i < n_decay are weights and get the decay.
//   g clipped to [-clip, clip] when clip > 0;  u = u - g
//   u = u - decay*batch*w (i < n_decay);  w = w + (lr/batch)*u
//   u = momentum*u;  g = 0
template <typename T>
__device__ void sgd_update_body(T* w, T* u, T* g, long long n, long long n_decay, T lr,
                                T momentum, T decay, T batch, T clip) {
    const T step = lr / batch;
    const T wdecay = decay * batch;
    for (long long i = global_index(); i < n; i += grid_stride()) {
        const T gi = clip > T(0) ? clamp_abs(g[i], clip) : g[i];
        T ui = u[i] - gi;
        if (i < n_decay) ui -= wdecay * w[i];
        w[i] += step * ui;
        u[i] = momentum * ui;
        g[i] = T(0);
    }
}

// w, m, v, g: (n,).  t >= 1 is the update count.
//   g clipped when clip > 0;  g' = g + decay*batch*w
//   m = b1*m + (1 - b1)*g';  v = b2*v + (1 - b2)*g'^2
//   w = w - lr*(m/(1 - b1^t))/(sqrt(v/(1 - b2^t)) + eps);  g = 0
template <typename T>
__device__ void adam_update_body(T* w, T* m, T* v, T* g, long long n, T lr, T b1, T b2,
                                 T eps, T decay, T batch, int t, T clip) {
    // Bias corrections in double, rounded once (as the CPU twin).
    const T c1 = T(1.0 - pow((double)b1, (double)t));
    const T c2 = T(1.0 - pow((double)b2, (double)t));
    const T wdecay = decay * batch;
    for (long long i = global_index(); i < n; i += grid_stride()) {
        const T gi = (clip > T(0) ? clamp_abs(g[i], clip) : g[i]) + wdecay * w[i];
        const T mi = b1 * m[i] + (T(1) - b1) * gi;
        const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr * (mi / c1) / (sqrt(vi / c2) + eps);
        g[i] = T(0);
    }
}

// out[0] = 1 where sgd_update would leave some i < n non-finite (w or u),
// with sgd_update_body's arithmetic; else out[0] untouched.  Threads that find
// one all store the same 1 (deterministic for any grid).
template <typename T>
__device__ void sgd_check_body(T* out, const T* w, const T* u, const T* g, long long n,
                               long long n_decay, T lr, T momentum, T decay, T batch,
                               T clip) {
    const T step = lr / batch;
    const T wdecay = decay * batch;
    int bad = 0;
    for (long long i = global_index(); i < n; i += grid_stride()) {
        const T gi = clip > T(0) ? clamp_abs(g[i], clip) : g[i];
        T ui = u[i] - gi;
        if (i < n_decay) ui -= wdecay * w[i];
        const T wi = w[i] + step * ui;
        const T un = momentum * ui;
        bad |= (wi - wi != T(0)) | (un - un != T(0));
    }
    if (bad) out[0] = T(1);
}

// out[0] = 1 where adam_update would leave some i < n non-finite (w, m or v).
template <typename T>
__device__ void adam_check_body(T* out, const T* w, const T* m, const T* v, const T* g,
                                long long n, T lr, T b1, T b2, T eps, T decay, T batch,
                                int t, T clip) {
    const T c1 = T(1.0 - pow((double)b1, (double)t));
    const T c2 = T(1.0 - pow((double)b2, (double)t));
    const T wdecay = decay * batch;
    int bad = 0;
    for (long long i = global_index(); i < n; i += grid_stride()) {
        const T gi = (clip > T(0) ? clamp_abs(g[i], clip) : g[i]) + wdecay * w[i];
        const T mi = b1 * m[i] + (T(1) - b1) * gi;
        const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
        const T wi = w[i] - lr * (mi / c1) / (sqrt(vi / c2) + eps);
        bad |= (wi - wi != T(0)) | (mi - mi != T(0)) | (vi - vi != T(0));
    }
    if (bad) out[0] = T(1);
}

}  // namespace gru_cy

extern "C" __global__ void sgd_update_f32(float* w, float* u, float* g, long long n,
                                          long long n_decay, float lr, float momentum,
                                          float decay, float batch, float clip) {
    gru_cy::sgd_update_body<float>(w, u, g, n, n_decay, lr, momentum, decay, batch, clip);
}
extern "C" __global__ void sgd_update_f64(double* w, double* u, double* g, long long n,
                                          long long n_decay, double lr, double momentum,
                                          double decay, double batch, double clip) {
    gru_cy::sgd_update_body<double>(w, u, g, n, n_decay, lr, momentum, decay, batch, clip);
}

extern "C" __global__ void adam_update_f32(float* w, float* m, float* v, float* g,
                                           long long n, float lr, float b1, float b2,
                                           float eps, float decay, float batch, int t,
                                           float clip) {
    gru_cy::adam_update_body<float>(w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip);
}
extern "C" __global__ void adam_update_f64(double* w, double* m, double* v, double* g,
                                           long long n, double lr, double b1, double b2,
                                           double eps, double decay, double batch, int t,
                                           double clip) {
    gru_cy::adam_update_body<double>(w, m, v, g, n, lr, b1, b2, eps, decay, batch, t, clip);
}

extern "C" __global__ void sgd_check_f32(float* out, const float* w, const float* u,
                                         const float* g, long long n, long long n_decay,
                                         float lr, float momentum, float decay, float batch,
                                         float clip) {
    gru_cy::sgd_check_body<float>(out, w, u, g, n, n_decay, lr, momentum, decay, batch, clip);
}
extern "C" __global__ void sgd_check_f64(double* out, const double* w, const double* u,
                                         const double* g, long long n, long long n_decay,
                                         double lr, double momentum, double decay,
                                         double batch, double clip) {
    gru_cy::sgd_check_body<double>(out, w, u, g, n, n_decay, lr, momentum, decay, batch,
                                   clip);
}

extern "C" __global__ void adam_check_f32(float* out, const float* w, const float* m,
                                          const float* v, const float* g, long long n,
                                          float lr, float b1, float b2, float eps,
                                          float decay, float batch, int t, float clip) {
    gru_cy::adam_check_body<float>(out, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t,
                                   clip);
}
extern "C" __global__ void adam_check_f64(double* out, const double* w, const double* m,
                                          const double* v, const double* g, long long n,
                                          double lr, double b1, double b2, double eps,
                                          double decay, double batch, int t, double clip) {
    gru_cy::adam_check_body<double>(out, w, m, v, g, n, lr, b1, b2, eps, decay, batch, t,
                                    clip);
}
