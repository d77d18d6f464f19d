// GRU step kernels, batch normalisation, bias and column sums: the CUDA twins
// of the kernels of the same names in gru_cy/_cpu/cell.pyx.  Contracts (shapes,
// write rule) in gru_cy/kernels.py; sizes T, B, I, H; gate blocks [z | r | h].
//
// Elementwise kernels run a grid-stride loop over the B*H (or R*C) elements;
// the reductions (bn_forward_train, bn_backward, col_sum) give one thread to
// each column and loop serially over groups and rows, so their sums run in a
// fixed order and every result is deterministic.
#include "common.cuh"

namespace gru_cy {

// ---- forward ----------------------------------------------------------------

// Y (R, C) rows of stride ldy: Y[r, c] += bias[c].
template <typename T>
__device__ void bias_forward_body(T* Y, const T* bias, long long R, long long C,
                                  long long ldy) {
    for (long long i = global_index(); i < R * C; i += grid_stride()) {
        const long long r = i / C, c = i % C;
        Y[r * ldy + c] += bias[c];
    }
}

// Y, vhat: element (g, b, c) at [(g*B + b)*ld + c]; sd: (g, c) at [g*ld + c];
// rolling_mean, rolling_variance, scales, biases: (C,).  One thread per column;
// the statistics are accumulated in double for both element types (as the CPU
// twin does).
//   mu = mean_b Y;  var = sum_b (Y - mu)^2 / (B - 1);  d = sqrt(var) + 1e-6
//   vhat = (Y - mu) / d;  sd = sqrt(var);  Y = scales*vhat + biases
//   rolling_mean = 0.99*rolling_mean + 0.01*mu (var likewise), g ascending.
template <typename T>
__device__ void bn_forward_train_body(T* Y, T* vhat, T* sd, T* rolling_mean,
                                      T* rolling_variance, const T* scales,
                                      const T* biases, long long G, long long B,
                                      long long C, long long ld) {
    for (long long c = global_index(); c < C; c += grid_stride()) {
        const T scale = scales[c], shift = biases[c];
        for (long long g = 0; g < G; ++g) {
            T* y = Y + g * B * ld + c;
            T* v = vhat + g * B * ld + c;
            double mu = 0.0;
            for (long long b = 0; b < B; ++b) mu += y[b * ld];
            mu /= (double)B;
            double var = 0.0;
            for (long long b = 0; b < B; ++b) {
                const double dev = y[b * ld] - mu;
                var += dev * dev;
            }
            var /= (double)(B - 1);
            const double d = sqrt(var) + GRU_CY_BN_EPS;
            for (long long b = 0; b < B; ++b) {
                const T vh = T((y[b * ld] - mu) / d);
                v[b * ld] = vh;
                y[b * ld] = scale * vh + shift;
            }
            sd[g * ld + c] = T(sqrt(var));
            rolling_mean[c] = T(GRU_CY_BN_MOMENTUM * rolling_mean[c] + GRU_CY_BN_RATE * mu);
            rolling_variance[c] =
                T(GRU_CY_BN_MOMENTUM * rolling_variance[c] + GRU_CY_BN_RATE * var);
        }
    }
}

// Y (R, C) rows of stride ldy; the others (C,).
//   Y = scales*(Y - rolling_mean)/(sqrt(rolling_variance) + 1e-6) + biases
template <typename T>
__device__ void bn_forward_infer_body(T* Y, const T* rolling_mean,
                                      const T* rolling_variance, const T* scales,
                                      const T* biases, long long R, long long C,
                                      long long ldy) {
    for (long long i = global_index(); i < R * C; i += grid_stride()) {
        const long long r = i / C, c = i % C;
        T* y = Y + r * ldy + c;
        *y = T(scales[c] * (*y - rolling_mean[c]) /
                   (sqrt((double)rolling_variance[c]) + GRU_CY_BN_EPS) + biases[c]);
    }
}

// z, r, s, hprev: (B, H); xp, hp: (B, 3H) rows of stride ldx / ldh.
//   z = sig(xp_z + hp_z);  r = sig(xp_r + hp_r);  s = r * hprev
template <typename T>
__device__ void gru_darknet_gates_forward_body(T* z, T* r, T* s, const T* xp,
                                               const T* hp, const T* hprev,
                                               long long B, long long H,
                                               long long ldx, long long ldh) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T zi = logistic(xp[b * ldx + j] + hp[b * ldh + j]);
        const T ri = logistic(xp[b * ldx + H + j] + hp[b * ldh + H + j]);
        z[i] = zi;
        r[i] = ri;
        s[i] = ri * hprev[i];
    }
}

// c, h, z, hprev: (B, H); xp, hp point at column 2H of rows of stride ldx / ldh.
//   c = act(xp_h + hp_h);  h = z*hprev + (1 - z)*c
template <typename T>
__device__ void gru_darknet_state_forward_body(T* c, T* h, const T* xp, const T* hp,
                                               const T* z, const T* hprev,
                                               long long B, long long H,
                                               long long ldx, long long ldh, int act) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T ci = activate(xp[b * ldx + j] + hp[b * ldh + j], act);
        const T zi = z[i];
        c[i] = ci;
        h[i] = zi * hprev[i] + (T(1) - zi) * ci;
    }
}

// z, r, q, c, h, hprev: (B, H); xp, hp: (B, 3H) rows of stride ldx / ldh.
//   z = sig(xp_z + hp_z);  r = sig(xp_r + hp_r);  q = hp_h (skipped if NULL)
//   c = act(xp_h + r*q);  h = z*hprev + (1 - z)*c
template <typename T>
__device__ void gru_reset_after_forward_body(T* z, T* r, T* q, T* c, T* h,
                                             const T* xp, const T* hp, const T* hprev,
                                             long long B, long long H, long long ldx,
                                             long long ldh, int act) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T* x = xp + b * ldx;
        const T* p = hp + b * ldh;
        const T zi = logistic(x[j] + p[j]);
        const T ri = logistic(x[H + j] + p[H + j]);
        const T qi = p[2 * H + j];
        const T ci = activate(x[2 * H + j] + ri * qi, act);
        z[i] = zi;
        r[i] = ri;
        if (q) q[i] = qi;
        c[i] = ci;
        h[i] = zi * hprev[i] + (T(1) - zi) * ci;
    }
}

// ---- backward ---------------------------------------------------------------

// dau, daw: (B, 3H) rows of stride ldd, columns [0:H] and [2H:3H] written;
// dh (B, H) in/out; dy, z, c, hprev: (B, H).
// Differentiates  h = z*hprev + (1 - z)*c,  c = act(a_h),  z = sig(a_z):
//   g = dy + dh;  daz = g*(hprev - c)*z*(1 - z);  dah = g*(1 - z)*act'(c)
//   dau_z = daw_z = daz;  dau_h = daw_h = dah;  dh = g*z
template <typename T>
__device__ void gru_darknet_gates_backward_body(T* dau, T* daw, T* dh, const T* dy,
                                                const T* z, const T* c, const T* hprev,
                                                long long B, long long H, long long ldd,
                                                int act) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T g = dy[i] + dh[i];
        const T zi = z[i], ci = c[i];
        const T daz = g * (hprev[i] - ci) * zi * (T(1) - zi);
        const T dah = g * (T(1) - zi) * activate_gradient(ci, act);
        dau[b * ldd + j] = daz;
        daw[b * ldd + j] = daz;
        dau[b * ldd + 2 * H + j] = dah;
        daw[b * ldd + 2 * H + j] = dah;
        dh[i] = g * zi;
    }
}

// dau, daw point at column H of rows of stride ldd; dh (B, H) +=;
// ds, r, hprev: (B, H).  Differentiates  s = r*hprev,  r = sig(a_r):
//   dar = ds*hprev*r*(1 - r);  dau_r = daw_r = dar;  dh += ds*r
template <typename T>
__device__ void gru_darknet_reset_backward_body(T* dau, T* daw, T* dh, const T* ds,
                                                const T* r, const T* hprev, long long B,
                                                long long H, long long ldd) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T ri = r[i];
        const T dar = ds[i] * hprev[i] * ri * (T(1) - ri);
        dau[b * ldd + j] = dar;
        daw[b * ldd + j] = dar;
        dh[i] += ds[i] * ri;
    }
}

// dau, daw: (B, 3H) rows of stride ldd; dh (B, H) in/out; others (B, H).
// Differentiates  c = act(a_h + r*q),  h = z*hprev + (1 - z)*c:
//   g = dy + dh;  daz = g*(hprev - c)*z*(1 - z);  dah = g*(1 - z)*act'(c)
//   dq = dah*r;  dar = dah*q*r*(1 - r)
//   dau = [daz | dar | dah];  daw = [daz | dar | dq];  dh = g*z
template <typename T>
__device__ void gru_reset_after_backward_body(T* dau, T* daw, T* dh, const T* dy,
                                              const T* z, const T* r, const T* q,
                                              const T* c, const T* hprev, long long B,
                                              long long H, long long ldd, int act) {
    for (long long i = global_index(); i < B * H; i += grid_stride()) {
        const long long b = i / H, j = i % H;
        const T g = dy[i] + dh[i];
        const T zi = z[i], ri = r[i], ci = c[i];
        const T daz = g * (hprev[i] - ci) * zi * (T(1) - zi);
        const T dah = g * (T(1) - zi) * activate_gradient(ci, act);
        const T dq = dah * ri;
        const T dar = dah * q[i] * ri * (T(1) - ri);
        T* u = dau + b * ldd;
        T* w = daw + b * ldd;
        u[j] = daz;
        u[H + j] = dar;
        u[2 * H + j] = dah;
        w[j] = daz;
        w[H + j] = dar;
        w[2 * H + j] = dq;
        dh[i] = g * zi;
    }
}

// Layout as bn_forward_train.  dY: dL/d(out) on entry, dL/dv on exit.
// Differentiates  out = scales*vhat + biases,  vhat = (v - mu)/(sd + 1e-6):
//   dscales += sum_b g*vhat;  dbiases += sum_b g;  gv = g*scales
//   dv = (gv - mean_b gv)/d - vhat*sum_b(gv*vhat)/((B - 1)*sd)   (0 if sd == 0)
// One thread per column, groups ascending, sums in double (as the CPU twin).
template <typename T>
__device__ void bn_backward_body(T* dY, T* dscales, T* dbiases, const T* vhat,
                                 const T* sd, const T* scales, long long G, long long B,
                                 long long C, long long ld) {
    for (long long c = global_index(); c < C; c += grid_stride()) {
        const double scale = scales[c];
        for (long long g = 0; g < G; ++g) {
            T* dy = dY + g * B * ld + c;
            const T* v = vhat + g * B * ld + c;
            double sum_g = 0.0, sum_gvh = 0.0;
            for (long long b = 0; b < B; ++b) {
                sum_g += dy[b * ld];
                sum_gvh += (double)dy[b * ld] * v[b * ld];
            }
            dscales[c] += T(sum_gvh);
            dbiases[c] += T(sum_g);
            // sum_b gv = scale*sum_g and sum_b gv*vhat = scale*sum_gvh.
            const double mean_gv = scale * sum_g / (double)B;
            const double sum_gv_vh = scale * sum_gvh;
            const double s = sd[g * ld + c];
            const double d = s + GRU_CY_BN_EPS;
            for (long long b = 0; b < B; ++b) {
                const double gv = scale * dy[b * ld];
                double dv = (gv - mean_gv) / d;
                if (s > 0.0) dv -= v[b * ld] * sum_gv_vh / ((double)(B - 1) * s);
                dy[b * ld] = T(dv);
            }
        }
    }
}

// out (C,) +=; A (R, C) rows of stride lda:  out[c] += A[r, c] for r ascending
// (added to out one row at a time, as the CPU twin).
template <typename T>
__device__ void col_sum_body(T* out, const T* A, long long R, long long C,
                             long long lda) {
    for (long long c = global_index(); c < C; c += grid_stride()) {
        T sum = out[c];
        for (long long r = 0; r < R; ++r) sum += A[r * lda + c];
        out[c] = sum;
    }
}

}  // namespace gru_cy

// ---- entry points -------------------------------------------------------------

extern "C" __global__ void bias_forward_f32(float* Y, const float* bias, long long R,
                                            long long C, long long ldy) {
    gru_cy::bias_forward_body<float>(Y, bias, R, C, ldy);
}
extern "C" __global__ void bias_forward_f64(double* Y, const double* bias, long long R,
                                            long long C, long long ldy) {
    gru_cy::bias_forward_body<double>(Y, bias, R, C, ldy);
}

extern "C" __global__ void bn_forward_train_f32(
        float* Y, float* vhat, float* sd, float* rolling_mean, float* rolling_variance,
        const float* scales, const float* biases, long long G, long long B, long long C,
        long long ld) {
    gru_cy::bn_forward_train_body<float>(Y, vhat, sd, rolling_mean, rolling_variance,
                                         scales, biases, G, B, C, ld);
}
extern "C" __global__ void bn_forward_train_f64(
        double* Y, double* vhat, double* sd, double* rolling_mean, double* rolling_variance,
        const double* scales, const double* biases, long long G, long long B, long long C,
        long long ld) {
    gru_cy::bn_forward_train_body<double>(Y, vhat, sd, rolling_mean, rolling_variance,
                                          scales, biases, G, B, C, ld);
}

extern "C" __global__ void bn_forward_infer_f32(
        float* Y, const float* rolling_mean, const float* rolling_variance,
        const float* scales, const float* biases, long long R, long long C, long long ldy) {
    gru_cy::bn_forward_infer_body<float>(Y, rolling_mean, rolling_variance, scales, biases,
                                         R, C, ldy);
}
extern "C" __global__ void bn_forward_infer_f64(
        double* Y, const double* rolling_mean, const double* rolling_variance,
        const double* scales, const double* biases, long long R, long long C, long long ldy) {
    gru_cy::bn_forward_infer_body<double>(Y, rolling_mean, rolling_variance, scales, biases,
                                          R, C, ldy);
}

extern "C" __global__ void gru_darknet_gates_forward_f32(
        float* z, float* r, float* s, const float* xp, const float* hp, const float* hprev,
        long long B, long long H, long long ldx, long long ldh) {
    gru_cy::gru_darknet_gates_forward_body<float>(z, r, s, xp, hp, hprev, B, H, ldx, ldh);
}
extern "C" __global__ void gru_darknet_gates_forward_f64(
        double* z, double* r, double* s, const double* xp, const double* hp,
        const double* hprev, long long B, long long H, long long ldx, long long ldh) {
    gru_cy::gru_darknet_gates_forward_body<double>(z, r, s, xp, hp, hprev, B, H, ldx, ldh);
}

extern "C" __global__ void gru_darknet_state_forward_f32(
        float* c, float* h, const float* xp, const float* hp, const float* z,
        const float* hprev, long long B, long long H, long long ldx, long long ldh, int act) {
    gru_cy::gru_darknet_state_forward_body<float>(c, h, xp, hp, z, hprev, B, H, ldx, ldh,
                                                  act);
}
extern "C" __global__ void gru_darknet_state_forward_f64(
        double* c, double* h, const double* xp, const double* hp, const double* z,
        const double* hprev, long long B, long long H, long long ldx, long long ldh,
        int act) {
    gru_cy::gru_darknet_state_forward_body<double>(c, h, xp, hp, z, hprev, B, H, ldx, ldh,
                                                   act);
}

extern "C" __global__ void gru_reset_after_forward_f32(
        float* z, float* r, float* q, float* c, float* h, const float* xp, const float* hp,
        const float* hprev, long long B, long long H, long long ldx, long long ldh, int act) {
    gru_cy::gru_reset_after_forward_body<float>(z, r, q, c, h, xp, hp, hprev, B, H, ldx,
                                                ldh, act);
}
extern "C" __global__ void gru_reset_after_forward_f64(
        double* z, double* r, double* q, double* c, double* h, const double* xp,
        const double* hp, const double* hprev, long long B, long long H, long long ldx,
        long long ldh, int act) {
    gru_cy::gru_reset_after_forward_body<double>(z, r, q, c, h, xp, hp, hprev, B, H, ldx,
                                                 ldh, act);
}

extern "C" __global__ void gru_darknet_gates_backward_f32(
        float* dau, float* daw, float* dh, const float* dy, const float* z, const float* c,
        const float* hprev, long long B, long long H, long long ldd, int act) {
    gru_cy::gru_darknet_gates_backward_body<float>(dau, daw, dh, dy, z, c, hprev, B, H,
                                                   ldd, act);
}
extern "C" __global__ void gru_darknet_gates_backward_f64(
        double* dau, double* daw, double* dh, const double* dy, const double* z,
        const double* c, const double* hprev, long long B, long long H, long long ldd,
        int act) {
    gru_cy::gru_darknet_gates_backward_body<double>(dau, daw, dh, dy, z, c, hprev, B, H,
                                                    ldd, act);
}

extern "C" __global__ void gru_darknet_reset_backward_f32(
        float* dau, float* daw, float* dh, const float* ds, const float* r,
        const float* hprev, long long B, long long H, long long ldd) {
    gru_cy::gru_darknet_reset_backward_body<float>(dau, daw, dh, ds, r, hprev, B, H, ldd);
}
extern "C" __global__ void gru_darknet_reset_backward_f64(
        double* dau, double* daw, double* dh, const double* ds, const double* r,
        const double* hprev, long long B, long long H, long long ldd) {
    gru_cy::gru_darknet_reset_backward_body<double>(dau, daw, dh, ds, r, hprev, B, H, ldd);
}

extern "C" __global__ void gru_reset_after_backward_f32(
        float* dau, float* daw, float* dh, const float* dy, const float* z, const float* r,
        const float* q, const float* c, const float* hprev, long long B, long long H,
        long long ldd, int act) {
    gru_cy::gru_reset_after_backward_body<float>(dau, daw, dh, dy, z, r, q, c, hprev, B, H,
                                                 ldd, act);
}
extern "C" __global__ void gru_reset_after_backward_f64(
        double* dau, double* daw, double* dh, const double* dy, const double* z,
        const double* r, const double* q, const double* c, const double* hprev, long long B,
        long long H, long long ldd, int act) {
    gru_cy::gru_reset_after_backward_body<double>(dau, daw, dh, dy, z, r, q, c, hprev, B,
                                                  H, ldd, act);
}

extern "C" __global__ void bn_backward_f32(
        float* dY, float* dscales, float* dbiases, const float* vhat, const float* sd,
        const float* scales, long long G, long long B, long long C, long long ld) {
    gru_cy::bn_backward_body<float>(dY, dscales, dbiases, vhat, sd, scales, G, B, C, ld);
}
extern "C" __global__ void bn_backward_f64(
        double* dY, double* dscales, double* dbiases, const double* vhat, const double* sd,
        const double* scales, long long G, long long B, long long C, long long ld) {
    gru_cy::bn_backward_body<double>(dY, dscales, dbiases, vhat, sd, scales, G, B, C, ld);
}

extern "C" __global__ void col_sum_f32(float* out, const float* A, long long R, long long C,
                                       long long lda) {
    gru_cy::col_sum_body<float>(out, A, R, C, lda);
}
extern "C" __global__ void col_sum_f64(double* out, const double* A, long long R,
                                       long long C, long long lda) {
    gru_cy::col_sum_body<double>(out, A, R, C, lda);
}
