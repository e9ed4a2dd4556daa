// lazytriton C++ kernel prelude: helpers with eager PyTorch's semantics (NaN propagation,
// Python-style integer division and remainder, half/bfloat16 storage) and a counter-based RNG.
#pragma once
#include "vecmath.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#include <omp.h>

namespace lt {

// bit casts: vecmath::bits / vecmath::from_bits (vecmath.h)
static inline float bf16_to_float(uint16_t v) {
  return vecmath::from_bits(static_cast<uint32_t>(v) << 16);
}

static inline uint16_t float_to_bf16(float f) {
  uint32_t bits = vecmath::bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);                   // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

static inline float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; exp--; }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  return vecmath::from_bits(bits);
}

static inline uint16_t float_to_half(float f) {
  uint32_t bits = vecmath::bits(f);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow: inf
  if (abs < 0x38800000u) {  // subnormal or zero: round to nearest even in the half grid
    float scaled = vecmath::from_bits(abs) * 16777216.0f;  // 2^24: one unit = smallest half subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t mant_odd = (abs >> 13) & 1u;
  abs += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (abs >> 13));
}

// NaN-propagating, written as one select so loops using them vectorize: a NaN in `a` is kept,
// a NaN in `b` fails both comparisons and is returned. Of two equal values the first is taken,
// as eager's (maximum(0., -0.) is 0., maximum(-0., 0.) is -0.).
template <typename T> static inline T maximum(T a, T b) { return ((a != a) | (a >= b)) ? a : b; }
template <typename T> static inline T minimum(T a, T b) { return ((a != a) | (a <= b)) ? a : b; }
// float: a bit blend, since g++ may turn a ?: next to float math into a branch (no vectors)
static inline float maximum(float a, float b) { return vecmath::sel((a != a) | (a >= b), a, b); }
static inline float minimum(float a, float b) { return vecmath::sel((a != a) | (a <= b), a, b); }
// relu as eager's clamp_min(x, 0): NaN and -0.0 come through (x < 0 fails for both)
template <typename T> static inline T relu(T x) { return x < T(0) ? T(0) : x; }
static inline float relu(float x) { return vecmath::sel(x < 0.0f, 0.0f, x); }

// where(c, a, b). Floating point as a bit blend: g++ sinks a ?: whose operand may trap (a
// division) into a branch, and a loop with a branch is not vectorized (an attention mask's
// where(mask, fill, scores / scale) ran scalar).
template <typename T> static inline T select(bool c, T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    return vecmath::sel(c, a, b);
  } else if constexpr (std::is_same_v<T, double>) {
    uint64_t ua, ub, mask = 0 - static_cast<uint64_t>(c);
    std::memcpy(&ua, &a, 8);
    std::memcpy(&ub, &b, 8);
    uint64_t u = (ua & mask) | (ub & ~mask);
    double out;
    std::memcpy(&out, &u, 8);
    return out;
  } else {
    return c ? a : b;
  }
}

// Integer arithmetic wraps, as eager's: signed overflow is undefined in C++, and g++ uses
// that (it folds sign(x * x) to 0 or 1), so it is done in the unsigned type of the promoted one.
template <typename T> using wrap_t = std::make_unsigned_t<decltype(T() + T())>;
template <typename T> static inline T wrapping_add(T a, T b) {
  return static_cast<T>(static_cast<wrap_t<T>>(a) + static_cast<wrap_t<T>>(b));
}
template <typename T> static inline T wrapping_sub(T a, T b) {
  return static_cast<T>(static_cast<wrap_t<T>>(a) - static_cast<wrap_t<T>>(b));
}
template <typename T> static inline T wrapping_mul(T a, T b) {
  return static_cast<T>(static_cast<wrap_t<T>>(a) * static_cast<wrap_t<T>>(b));
}
template <typename T> static inline T wrapping_neg(T a) {
  return static_cast<T>(wrap_t<T>(0) - static_cast<wrap_t<T>>(a));
}
template <typename T> static inline T wrapping_abs(T a) {  // abs(MIN) is MIN
  return a < 0 ? wrapping_neg(a) : a;
}

// x86 traps on the one signed division that overflows, MIN / -1: eager wraps the quotient
// (MIN) and gives remainder 0, so a divisor of -1 never reaches the division.
template <typename T> static inline bool minus_one(T b) {
  if constexpr (std::is_signed_v<T>) return b == T(-1); else return false;
}

template <typename T> static inline T floordiv_int(T a, T b, int32_t* err) {
  if (b == 0) { *err = 2; return 0; }
  if (minus_one(b)) return wrapping_neg(a);
  T q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
  return q;
}

template <typename T> static inline T truncdiv_int(T a, T b, int32_t* err) {
  if (b == 0) { *err = 2; return 0; }
  if (minus_one(b)) return wrapping_neg(a);
  return a / b;
}

template <typename T> static inline T remainder_int(T a, T b, int32_t* err) {
  if (b == 0) { *err = 2; return 0; }
  if (minus_one(b)) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

template <typename T> static inline T fmod_int(T a, T b, int32_t* err) {
  if (b == 0) { *err = 2; return 0; }
  if (minus_one(b)) return 0;
  return a % b;
}

template <typename T> static inline T floordiv_float(T a, T b) {
  if (b == 0) return a / b;
  T mod = std::fmod(a, b);
  T div = (a - mod) / b;
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
  if (div == 0) return std::copysign(T(0), a / b);
  T fl = std::floor(div);
  return (div - fl > T(0.5)) ? fl + 1 : fl;
}

template <typename T> static inline T remainder_float(T a, T b) {
  T r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

template <typename T> static inline T pow_int(T base, T exp) {
  if (exp < 0) {
    if (base == 1) return 1;
    if (base == -1) return (exp % 2 == 0) ? 1 : -1;
    return 0;
  }
  T result = 1;
  while (exp) {
    if (exp & 1) result = wrapping_mul(result, base);
    base = wrapping_mul(base, base);
    exp >>= 1;
  }
  return result;
}

// As eager's: NaN has sign 0 (both comparisons fail).
template <typename T> static inline T sign(T x) {
  return static_cast<T>((T(0) < x) - (x < T(0)));
}

// Counter-based random numbers: Triton's Philox 4x32-10 (tl.rand / tl.randn), bit for bit, so
// every backend draws the same numbers (lazytriton/philox.py is the same for the reference
// executor). The value at (seed, offset) never depends on thread schedule.
struct philox4 { uint32_t c0, c1, c2, c3; };

static inline philox4 philox(int64_t seed, int64_t offset) {
  uint64_t s = static_cast<uint64_t>(seed), o = static_cast<uint64_t>(offset);
  uint32_t k0 = static_cast<uint32_t>(s), k1 = static_cast<uint32_t>(s >> 32);
  uint32_t c0 = static_cast<uint32_t>(o), c1 = static_cast<uint32_t>(o >> 32), c2 = 0, c3 = 0;
  for (int round = 0; round < 10; round++) {
    uint64_t b = 0xCD9E8D57ull * c2, a = 0xD2511F53ull * c0;
    uint32_t n0 = static_cast<uint32_t>(b >> 32) ^ c1 ^ k0;
    uint32_t n2 = static_cast<uint32_t>(a >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(b);
    c3 = static_cast<uint32_t>(a);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

static inline float uniform_of_bits(uint32_t bits) {
  int32_t x = static_cast<int32_t>(bits);
  x = x < 0 ? ~x : x;
  return static_cast<float>(x) * 4.6566127342e-10f;
}

static inline float uniform(int64_t seed, int64_t offset) {
  return uniform_of_bits(philox(seed, offset).c0);
}

static inline float normal(int64_t seed, int64_t offset) {
  philox4 r = philox(seed, offset);
  float u1 = uniform_of_bits(r.c0), u2 = uniform_of_bits(r.c1);
  u1 = u1 > 1e-7f ? u1 : 1e-7f;
  return std::sqrt(-2.0f * log_f32(u1)) * cos_f32(6.283185307179586f * u2);
}

// Index arithmetic with floor semantics (FloorDiv / ModularIndexing where the dividend may be
// negative: C's `/` and `%` truncate toward zero). The divisor is positive.
static inline int64_t div_floor(int64_t a, int64_t b) {
  int64_t q = a / b;
  return q - ((a % b != 0) & (a < 0));
}

static inline int64_t mod_floor(int64_t a, int64_t b) {
  int64_t r = a % b;
  return r + ((r < 0) ? b : 0);
}

// An index read from memory, as eager takes it: one outside [0, n) sets the kernel's error
// flag (the wrapper raises eager's IndexError) and reads element 0 instead. wrap_index first
// counts a negative one from the end (x[idx], index_put); strict_index does not (embedding,
// index_select, gather, scatter refuse it). One declaration each, so a gather whose index is
// the same for a whole inner loop (an embedding row) computes it before that loop, which
// then vectorizes.
template <typename T>
static inline int64_t strict_index(T value, int64_t n, int32_t* err) {
  int64_t i = static_cast<int64_t>(value);
  if (i < 0 || i >= n) {
    *err = 1;
    i = 0;
  }
  return i;
}

template <typename T>
static inline int64_t wrap_index(T value, int64_t n, int32_t* err) {
  int64_t i = static_cast<int64_t>(value);
  return strict_index(i < 0 ? i + n : i, n, err);
}

// Bounds-checked mode (LAZYTRITON_CHECK=bounds): an access outside [0, extent) is not made;
// the first one is reported in bounds[0..2] (param + 1, index, extent) for the wrapper to raise.
template <typename T>
static inline T& checked(T* p, int64_t i, int64_t extent, int64_t param, int64_t* bounds) {
  if (i >= 0 && i < extent) return p[i];
  int64_t none = 0;
  if (__atomic_compare_exchange_n(&bounds[0], &none, param + 1, false, __ATOMIC_SEQ_CST,
                                  __ATOMIC_SEQ_CST)) {
    bounds[1] = i;
    bounds[2] = extent;
  }
  static thread_local T scratch;
  scratch = T();
  return scratch;
}

}  // namespace lt

// NaN-propagating max/min as OpenMP reductions, so `omp simd` vectorizes row maxima (softmax).
#pragma omp declare reduction(ltmax : float : omp_out = lt::maximum(omp_out, omp_in)) \
    initializer(omp_priv = -std::numeric_limits<float>::infinity())
#pragma omp declare reduction(ltmax : double : omp_out = lt::maximum(omp_out, omp_in)) \
    initializer(omp_priv = -std::numeric_limits<double>::infinity())
#pragma omp declare reduction(ltmin : float : omp_out = lt::minimum(omp_out, omp_in)) \
    initializer(omp_priv = std::numeric_limits<float>::infinity())
#pragma omp declare reduction(ltmin : double : omp_out = lt::minimum(omp_out, omp_in)) \
    initializer(omp_priv = std::numeric_limits<double>::infinity())
