/* Branch-free float32 exp / logistic / tanh that gcc can vectorise.
 *
 * libm's expf and tanhf are opaque calls, so a loop over them stays scalar.
 * These are written with arithmetic, bit operations and selects (?: that gcc
 * if-converts to blends) only: no libm call, no branch, no integer conversion
 * of a float.  Inlined into a loop compiled for AVX2 / AVX-512 they become
 * packed code.
 *
 * Accuracy against the exact value, measured over every third float32 bit
 * pattern (eps = 2^-23; tests/test_fastmath.py checks the bounds):
 *   gru_expneg_f   x in [ln(FLT_MIN), 0]: relative error <= 0.7 eps; below
 *                  ln(FLT_MIN) ~ -87.34: 0 (the true value is subnormal).
 *   gru_logistic_f absolute error <= 8.9e-8 for every x; relative error
 *                  <= 1.7 eps where the result is a normal number.
 *   gru_tanh_f     absolute error <= 9.0e-8 for every x; relative error
 *                  <= 1.3 eps (odd polynomial below |x| = 0.625, so tiny x
 *                  gives x itself).
 * Special values: NaN -> NaN; +-inf and huge finite x give the exact limits
 * (logistic 0 / 1, tanh -1 / +1); no intermediate overflows for any finite x.
 *
 * The float64 functions are libm's (the float64 engine must keep its results
 * bit for bit: it serves the gradient check).
 */
#ifndef GRU_CY_FASTMATH_H
#define GRU_CY_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t gru_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float gru_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* e^x for x <= 0 (or NaN) in float32 (Cephes expf, branch-free).
 * n = round(x*log2(e)) via the 1.5*2^23 shift, r = x - n*ln2 in two parts
 * (n*GRU_LN2_HI is exact), e^r by a degree-6 polynomial on |r| <= ln2/2, and
 * 2^n from exponent bits.  x is clamped at ln(FLT_MIN) so that 2^n stays a
 * normal number (n >= -126); below it the result is 0. */
#define GRU_EXP_LO (-87.3365479f) /* ~ln(FLT_MIN) */
#define GRU_LOG2E 1.44269504088896341f
#define GRU_LN2_HI 0.693359375f
#define GRU_LN2_LO (-2.12194440e-4f)
#define GRU_SHIFT 12582912.0f /* 1.5 * 2^23 */

static inline float gru_expneg_f(float x)
{
    /* NaN fails the comparison and passes through. */
    float xc = x < GRU_EXP_LO ? GRU_EXP_LO : x;
    /* t's low mantissa bits hold n = round(xc*log2e), n in [-126, 0]. */
    float t = xc * GRU_LOG2E + GRU_SHIFT;
    float n = t - GRU_SHIFT;
    float r = xc - n * GRU_LN2_HI;
    r = r - n * GRU_LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* 2^n: biased exponent n + 127 = bits(t) - bits(GRU_SHIFT) + 127.
     * Unsigned arithmetic: wraps instead of overflowing (for NaN t the
     * scale is garbage but p is NaN). */
    uint32_t e = (gru_f2u(t) - 0x4B400000u + 127u) << 23;
    float y = p * gru_u2f(e);
    return x < GRU_EXP_LO ? 0.0f : y;
}

/* 1 / (1 + e^-x) through e = e^-|x| <= 1 (as common.pxd's logistic). */
static inline float gru_logistic_f(float x)
{
    float e = gru_expneg_f(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

/* tanh: odd polynomial (Cephes tanhf) for |x| < 0.625, where 1 - e^{-2|x|}
 * would cancel; (1 - e)/(1 + e), e = e^{-2|x|}, above; sign copied from x.
 * |x| is capped at 20 first (tanh rounds to 1 from 9.01) so that -2|x|
 * cannot overflow; the cap keeps NaN. */
#define GRU_TANH_SMALL 0.625f

static inline float gru_tanh_f(float x)
{
    float a = fabsf(x);
    a = a > 20.0f ? 20.0f : a;
    float z = a * a;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * a + a;
    float e = gru_expneg_f(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    return copysignf(a < GRU_TANH_SMALL ? small : big, x);
}

/* float64: libm, the same formula as common.pxd's logistic. */
static inline double gru_logistic_d(double x)
{
    double e = exp(-fabs(x));
    double s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : e * s;
}

static inline double gru_tanh_d(double x) { return tanh(x); }

#endif
