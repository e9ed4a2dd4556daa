// lazytriton vectorizable float32 math. Generated kernels run elementwise math inside
// `#pragma omp simd` loops, but g++ cannot vectorize calls to scalar libm (std::exp, std::sin,
// ...) without -ffast-math, which we refuse because it breaks eager PyTorch's NaN/Inf semantics.
// These functions are branch-free and call nothing (polynomials with std::fma, bit-blend
// selects, integer bit manipulation), so once inlined into such a loop g++ -O3 -march=native
// vectorizes them wherever std::fma is an instruction: x86 with AVX2 and FMA or AVX-512, and
// aarch64 (tests/cpp_targets.py; each needs only operations all of these have). Each is within 2 ULP of the correctly rounded result for every float32 input,
// denormal inputs and results included (an exhaustive sweep against glibc's double functions
// measured at most 1.12 ULP), and returns eager's special values: NaN propagates, overflow
// gives inf and underflow 0, log(0) = -inf, log(x < 0) = NaN, odd functions keep the sign of
// zero, sigmoid's far left tail is denormal, never NaN, and sin/cos reduce huge arguments
// exactly (Payne-Hanek) and give NaN for inf. Built with -std=c++17, so a * b + c is never
// contracted into an fma: every fma is written out, and results do not depend on the compiler.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace lt {
namespace vecmath {

static inline uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

static inline float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

static inline double from_bits64(uint64_t u) {
  double x;
  std::memcpy(&x, &u, 8);
  return x;
}

// 2^k for k in [-126, 127], built in the exponent field (unsigned math: no signed overflow).
static inline float pow2i(int32_t k) {
  return from_bits((static_cast<uint32_t>(k) + 127u) << 23);
}

// mask (all ones or zero) ? a : b, as a bit blend. A plain ?: lets g++ sink the work for one
// side into a branch, and a branch holding float operations (which may trap, without
// -fno-trapping-math) is never if-converted, so the loop would not vectorize.
static inline float blend(uint32_t mask, float a, float b) {
  return from_bits((bits(a) & mask) | (bits(b) & ~mask));
}

static inline float sel(bool c, float a, float b) {
  return blend(0u - static_cast<uint32_t>(c), a, b);
}

static inline float abs_f(float x) { return from_bits(bits(x) & 0x7fffffffu); }

// |v| with the sign bit of `sign` (one integer op, so it works for zeros and NaN alike).
static inline float with_sign_of(float v, float sign) {
  return from_bits(bits(v) | (bits(sign) & 0x80000000u));
}

// Horner's rule, c0 + x * (c1 + x * (...)), with one rounding per step.
template <typename T> static inline T horner(T, T c) { return c; }
template <typename T, typename... Cs> static inline T horner(T x, T c0, Cs... cs) {
  return std::fma(horner(x, static_cast<T>(cs)...), x, c0);
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kLn2Hi = 0x1.62e430p-1f;   // float(ln 2)
constexpr float kLn2Lo = -0x1.05c610p-29f;  // ln 2 - kLn2Hi
constexpr float kLog2e = 0x1.715476p+0f;

static inline float clamp_exp_arg(float x) {  // NaN passes through (comparisons are false)
  return sel(x < -104.0f, -104.0f, sel(x > 89.0f, 89.0f, x));
}

// e^x = 2^k * (hi + lo), hi + lo = e^r carried to ~2^-30, r = x - k ln2 in [-ln2/2, ln2/2]:
// the extra bits make one final rounding dominate the error. x must be in [-104, 89].
struct ExpParts {
  float hi, lo;
  int32_t k;
};

// (e^r - 1 - r) / r^2, minimax on [-0.349, 0.349]
static inline float exp_poly(float r) {
  return horner(r, 0x1p-1f, 0x1.555556p-3f, 0x1.555506p-5f, 0x1.110ff4p-7f, 0x1.6d2a36p-10f,
                0x1.a263e8p-13f);
}

static inline ExpParts exp_reduce(float x) {
  constexpr float kShift = 0x1.8p23f;  // x*log2e + 1.5*2^23 rounds to an integer in the low bits
  float kf = std::fma(x, kLog2e, kShift);
  int32_t k = static_cast<int32_t>(bits(kf) - bits(kShift));
  kf -= kShift;
  float r1 = std::fma(-kf, kLn2Hi, x);  // exact: the difference fits in 24 bits
  float r = std::fma(-kf, kLn2Lo, r1);
  float r_lo = std::fma(-kf, kLn2Lo, r1 - r);  // what rounding r lost
  float q = exp_poly(r);
  float hi = 1.0f + r;
  float lo = ((1.0f - hi) + r) + std::fma(r * r, q, r_lo);  // 1 + r = hi + exact error
  return {hi, lo, k};
}

// (hi + lo) * 2^k: one rounding, then exact scaling in two steps, so a denormal result rounds
// only once more and k = 128 still overflows to inf correctly.
static inline float scale2(float hi, float lo, int32_t k) {
  int32_t k1 = k >> 1;
  return (hi + lo) * pow2i(k1) * pow2i(k - k1);
}

// e / (1 + e) for e = exp(x), x <= 0, to about half an ulp: e and 1 + e carried as float pairs,
// then one division refined by its exact remainder. Also 1 / (1 + e) when `recip` is set.
static inline float sigmoid_neg(float x, bool recip) {
  ExpParts p = exp_reduce(clamp_exp_arg(x));
  bool normal = p.k >= -126;  // below, e is denormal and e / (1 + e) == e in float
  float s = pow2i(normal ? p.k : -126);
  float n_hi = sel(normal, std::fma(s, p.lo, s * p.hi), scale2(p.hi, p.lo, p.k));
  float n_lo = sel(normal, std::fma(s, p.lo, s * p.hi - n_hi), 0.0f);
  float d_hi = 1.0f + n_hi;
  float d_lo = ((1.0f - d_hi) + n_hi) + n_lo;
  float num_hi = recip ? 1.0f : n_hi, num_lo = recip ? 0.0f : n_lo;
  float inv = 1.0f / d_hi;
  float q = num_hi * inv;
  float rem = std::fma(-q, d_hi, num_hi) + (num_lo - q * d_lo);
  return std::fma(rem, inv, q);
}

// P(f) with log(1 + f) = f + f^2 P(f) for 1 + f in [sqrt(1/2), sqrt(2)), minimax.
static inline float log1p_poly(float f) {
  return horner(f, -0x1.fffffep-2f, 0x1.555556p-2f, -0x1.000252p-2f, 0x1.999d9cp-3f,
                -0x1.54798ap-3f, 0x1.230bb4p-3f, -0x1.0d1154p-3f, 0x1.042e60p-3f,
                -0x1.3a08bep-4f);
}

// x = 2^e * (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)); x positive, finite, normal.
struct LogParts {
  float f;
  int32_t e;
};

static inline LogParts log_reduce(float x) {
  int32_t e = static_cast<int32_t>(bits(x) - 0x3f3504f3u) >> 23;  // 0x3f3504f3 = sqrt(1/2)
  float m = from_bits(bits(x) - (static_cast<uint32_t>(e) << 23));
  return {m - 1.0f, e};  // exact (Sterbenz)
}

// log(x) for x > 0 finite; denormals are scaled by 2^23 first. Returns the exponent and f.
static inline LogParts log_reduce_any(float x, float* eadj) {
  bool tiny = x < 0x1p-126f;
  *eadj = tiny ? -23.0f : 0.0f;
  return log_reduce(sel(tiny, x * 0x1p23f, x));
}

static inline float log_special(float x) {  // x outside (0, inf): eager's values
  return sel(x == 0.0f, -kInf, sel(x < 0.0f, kNaN, x));
}

// Exact argument reduction (Payne-Hanek) for a = |x| >= 2^-7, finite: a * 2/pi = n + frac
// (mod 4), giving n mod 4 and r = frac * pi/2 in [-pi/4, pi/4] as a float pair. With
// a = m * 2^(E-150), the bits of 2/pi before position E-151 only add multiples of 4, and 96 bits
// from there times the 24-bit m give frac to 2^-62. No float comes closer to a multiple of pi/2
// than |r| = 2^-29.2 (at 0x1.f37c8ap+95), so r keeps 32 more bits than float needs. The 96 bits
// are cut out with selects and shifts, not a table lookup, which g++ would turn into slow
// emulated gathers.
struct Reduced {
  float hi, lo;  // r = hi + lo
  uint32_t n;
};

// 2/pi in binary after one zero word, so the window start E - 120 is never negative; the 224
// bits cover position 198, the last one a float needs.
constexpr uint32_t kTwoOverPiBits[8] = {0x00000000, 0xa2f9836e, 0x4e441529, 0xfc2757d1,
                                        0xf534ddc0, 0xdb629599, 0x3c439041, 0xfe5163ab};

template <int K> static inline uint32_t two_over_pi_word(uint32_t q) {  // word q + K, q in 0..4
  constexpr const uint32_t* w = kTwoOverPiBits;
  uint32_t low = q == 0u ? w[K] : w[K + 1];
  uint32_t high = q == 2u ? w[K + 2] : (q == 3u ? w[K + 3] : w[K + 4]);
  return q < 2u ? low : high;
}

static inline uint32_t funnel(uint32_t w, uint32_t next, uint32_t sh) {  // 32 bits from bit sh
  return (w << sh) | ((next >> 1) >> (31u - sh));  // no shift by 32 when sh == 0
}

// The signed 64-bit value `v` as a double, rounded once. x86 has no vector int64 -> double
// conversion before AVX-512DQ, and with a plain cast g++ leaves the whole sin/cos loop scalar on
// AVX2; there each 32-bit half goes into the mantissa of a double with a fixed exponent
// (2^84 + (hi + 2^31) 2^32 and 2^52 + lo). Removing the offsets is exact, so the one rounding is
// the final sum's and the result is the cast's, bit for bit (the cast is one instruction where
// there is one, 12% faster sin/cos).
static inline double to_double(uint64_t v) {
#if defined(__AVX512DQ__) || defined(__aarch64__)
  return static_cast<double>(static_cast<int64_t>(v));
#else
  double hi = from_bits64(0x4530000000000000ull | ((v >> 32) ^ 0x80000000ull));
  double lo = from_bits64(0x4330000000000000ull | (v & 0xffffffffull));
  return (hi - 0x1.00000801p84) + lo;  // 2^84 + 2^63 + 2^52
#endif
}

static inline Reduced reduce_pio2(float a) {
  uint32_t u = bits(a);
  uint32_t e = u >> 23;
  uint32_t t0 = (e < 120u ? 120u : e) - 120u;  // window start in bits, 0..135
  uint32_t q = t0 >> 5, sh = t0 & 31u;
  uint32_t w0 = two_over_pi_word<0>(q), w1 = two_over_pi_word<1>(q),
           w2 = two_over_pi_word<2>(q), w3 = two_over_pi_word<3>(q);
  uint32_t hi = funnel(w0, w1, sh), mid = funnel(w1, w2, sh), lo = funnel(w2, w3, sh);
  uint32_t m = (u & 0x7fffffu) | 0x800000u;
  // bits 32..95 of m * (hi:mid:lo): 2 integer bits (mod 4), then 62 fraction bits
  uint64_t fixed = (static_cast<uint64_t>(m * hi) << 32) + static_cast<uint64_t>(m) * mid +
                   ((static_cast<uint64_t>(m) * lo) >> 32);
  uint32_t n = static_cast<uint32_t>((fixed + (1ull << 61)) >> 62);
  uint64_t frac = fixed << 2;  // two's complement, in [-1/2, 1/2) quarter turns, 2^-64 units
  double r = to_double(frac) * 0x1.921fb54442d18p-64;
  float r_hi = static_cast<float>(r);
  return {r_hi, static_cast<float>(r - static_cast<double>(r_hi)), n & 3u};
}

static inline Reduced reduce_any(float a) {
  Reduced big = reduce_pio2(a);
  bool small = a < 0x1.921fb4p-1f;  // below pi/4: no reduction, r = a exactly
  return {sel(small, a, big.hi), sel(small, 0.0f, big.lo), small ? 0u : big.n};
}

// sin(hi + lo) on [-pi/4, pi/4]: hi + (hi^3 S(hi^2) + lo cos(hi)), one final rounding.
static inline float sin_poly(Reduced r) {
  float z = r.hi * r.hi;
  float s = horner(z, -0x1.555556p-3f, 0x1.111246p-7f, -0x1.a16454p-13f, 0x1.c899e2p-19f);
  float lo_cos = std::fma(-0.5f * z, r.lo, r.lo);
  return r.hi + std::fma(r.hi * z, s, lo_cos);
}

// cos(hi + lo) = 1 - (hi + lo)^2 / 2 + z^2 C(z): 1 - z/2 by Fast2Sum, the rest added once.
static inline float cos_poly(Reduced r) {
  float z = r.hi * r.hi;
  float z_lo = std::fma(r.hi, r.hi, -z);
  float c = horner(z, 0x1.555554p-5f, -0x1.6c1238p-10f, 0x1.9b87aap-16f);
  float hz = 0.5f * z;
  float w = 1.0f - hz;
  float tail = ((1.0f - w) - hz) - std::fma(r.hi, r.lo, 0.5f * z_lo);
  return w + std::fma(z * z, c, tail);
}

static inline float flip_sign(float v, uint32_t negate) {
  return from_bits(bits(v) ^ (negate << 31));
}

}  // namespace vecmath

// exp alone needs no extra bits: 1 + r (1 + r q(r)) rounds twice, which keeps it within 1 ULP
// (the pair in exp_reduce is for functions that subtract from e^x or divide by it), and q needs
// one degree less than exp_poly's (the r^2 factor scales its error down to ~2^-27). The hot
// loop of softmax, log_softmax and cross-entropy: a dense sweep of [-104, 89] measured at most
// 0.98 ULP (0.87 with exp_poly), and a loop of it runs 11% faster (AVX-512, one thread).
namespace vecmath {
struct ExpCore {
  float p;   // e^r, r = x - k ln2 in [-ln2/2, ln2/2]
  float kf;  // k + kShift (k in its low bits)
};

static inline ExpCore exp_core(float x) {  // x in [-104, 89]
  constexpr float kShift = 0x1.8p23f;
  float kf = std::fma(x, kLog2e, kShift);
  float k = kf - kShift;
  float r = std::fma(-k, kLn2Lo, std::fma(-k, kLn2Hi, x));
  // (e^r - 1 - r) / r^2, near-minimax (Chebyshev fit) on [-ln2/2, ln2/2]
  float q = horner(r, 0x1p-1f, 0x1.5554dcp-3f, 0x1.55551ap-5f, 0x1.120b6ep-7f, 0x1.6d110ap-10f);
  return {std::fma(std::fma(r, q, 1.0f), r, 1.0f), kf};  // 1 + r + r^2 q
}
constexpr uint32_t kShiftBits = 0x4b400000u;  // bits(0x1.8p23f)
}  // namespace vecmath

static inline float exp_f32(float x) {
  using namespace vecmath;
  ExpCore c = exp_core(clamp_exp_arg(x));
  int32_t k = static_cast<int32_t>(bits(c.kf) - kShiftBits);
  int32_t k1 = k >> 1;  // two exact steps, as in scale2 (whose + lo would add a zero here)
  return c.p * pow2i(k1) * pow2i(k - k1);
}

// exp_f32 for x <= 64 (NaN included), bit for bit (checked on every such float): softmax's
// exp(x - max(x)), whose argument is never positive. k <= 93 there, so one exact scaling by
// 2^(k + 25) (normal for k >= -150) and one rounding multiplication by 2^-25 (where a denormal
// result rounds) do what exp_f32's two steps do; and no upper clamp. A third fewer
// instructions than exp_f32: the softmax loop runs 15-20% faster (AVX-512, one thread).
static inline float exp_nonpos_f32(float x) {
  using namespace vecmath;
  x = x < -104.0f ? -104.0f : x;  // a max instruction: NaN passes (comparisons are false)
  ExpCore c = exp_core(x);
  float scale = from_bits((bits(c.kf) - (kShiftBits - 152u)) << 23);  // 2^(k + 25): 127 + 25
  return c.p * scale * 0x1p-25f;
}

static inline float expm1_f32(float x) {
  using namespace vecmath;
  ExpParts p = exp_reduce(clamp_exp_arg(sel(x < -30.0f, -30.0f, x)));
  // 2^k (hi + lo) - 1 with one rounding: a = 2^k hi is exact, a - 1 too for 0 <= k <= 23, and
  // for k < 0 (a < 1) Fast2Sum recovers its error. From k = 21 on, -1 joins the low part,
  // scaled by 2^(k-1) so that k = 128 cannot overflow before the final exact doubling.
  float s = pow2i(p.k < 20 ? p.k : 20);
  float a = s * p.hi;
  float y0 = a - 1.0f;
  float near = y0 + ((a - (y0 + 1.0f)) + s * p.lo);
  float h = pow2i(p.k > 20 ? p.k - 1 : 20);
  float far = std::fma(h, p.hi, std::fma(h, p.lo, -0.5f)) * 2.0f;
  return sel(x == 0.0f, x, sel(p.k > 20, far, near));  // x == 0: keep -0
}

static inline float log_f32(float x) {
  using namespace vecmath;
  float eadj;
  LogParts p = log_reduce_any(x, &eadj);
  float e = static_cast<float>(p.e) + eadj;
  float y = std::fma(e, kLn2Hi, std::fma(e, kLn2Lo, std::fma(p.f * p.f, log1p_poly(p.f), p.f)));
  return sel((x > 0.0f) & (x < kInf), y, log_special(x));
}

static inline float log2_f32(float x) {
  using namespace vecmath;
  float eadj;
  LogParts p = log_reduce_any(x, &eadj);
  float e = static_cast<float>(p.e) + eadj;
  float f = p.f;
  // log2(1 + f) = f * log2(e) + f^2 * P(f), log2(e) split in two floats
  float q = horner(f, -0x1.715476p-1f, 0x1.ec708ep-2f, -0x1.7156c2p-2f, 0x1.277ff8p-2f,
                   -0x1.eb6b12p-3f, 0x1.a2f052p-3f, -0x1.81a3ecp-3f, 0x1.7c9688p-3f,
                   -0x1.dd1298p-4f);
  float l = std::fma(f, kLog2e, std::fma(f, 0x1.4ae0c0p-26f, f * f * q));
  float y = e + l;
  return sel((x > 0.0f) & (x < kInf), y, log_special(x));
}

static inline float log1p_f32(float x) {
  using namespace vecmath;
  float u = 1.0f + x;
  float b = u - x;
  float lo = (1.0f - b) + (x - (u - b));  // u + lo == 1 + x exactly (TwoSum)
  LogParts p = log_reduce(u);
  float m = p.f + 1.0f;
  // log(1 + x) = e ln2 + log(m) + lo * 2^-e / m (first order is plenty: lo is below half an ulp)
  float c = lo * pow2i(p.e < 126 ? -p.e : -126) / m;
  float lg = p.f + std::fma(p.f * p.f, log1p_poly(p.f), c);
  float e = static_cast<float>(p.e);
  float y = std::fma(e, kLn2Hi, std::fma(e, kLn2Lo, lg));
  bool ok = (x > -1.0f) & (x < kInf) & (x != 0.0f);
  return sel(ok, y, sel(x == -1.0f, -kInf, sel(x < -1.0f, kNaN, x)));
}

static inline float sigmoid_f32(float x) {
  using namespace vecmath;
  // 1 / (1 + e^-x) = e / (1 + e) with e = exp(-|x|) for x < 0: no overflow, and the tail for
  // x << 0 keeps its denormals.
  return sigmoid_neg(-abs_f(x), x >= 0.0f);
}

static inline float tanh_f32(float x) {
  using namespace vecmath;
  float a = abs_f(x);
  // |x| < 0.625: a + a^3 P(a^2); else 1 - 2 sigmoid(-2a) with 2 sigmoid(-2a) <= 0.45, so its
  // error is damped; tanh is 1 in float from 9.02 on.
  float z = a * a;
  float small = std::fma(a * z, horner(z, -0x1.555556p-2f, 0x1.1111a2p-3f, -0x1.ba4178p-5f,
                                       0x1.67bea8p-6f, -0x1.230f3ep-7f, 0x1.738bdap-9f),
                         a);
  float big = 1.0f - 2.0f * sigmoid_neg(-(a + a), false);
  return with_sign_of(sel(a < 0.625f, small, big), x);
}

static inline float erf_f32(float x) {
  using namespace vecmath;
  float a = abs_f(x);
  // |x| < 0.875: a (2/sqrt(pi) + z P(z)), z = a^2 = z + z_lo exactly, 2/sqrt(pi) in two floats.
  float z = a * a;
  float z_lo = std::fma(a, a, -z);
  float ps = horner(z, -0x1.812746p-2f, 0x1.ce2e60p-4f, -0x1.b80a8cp-6f, 0x1.542966p-8f,
                    -0x1.a0771cp-11f, 0x1.2dea82p-14f);
  float corr = std::fma(z, ps, std::fma(z_lo, ps, -0x1.f7ac92p-25f));
  float small = std::fma(a, 0x1.20dd76p+0f, a * corr);
  // 0.875 <= |x| < 3.93: 1 - exp(Q(|x| - 0.875)), Q ~ log(erfc); erf is 1 in float from 3.92.
  float t = sel(a > 3.93f, 3.93f, a) - 0.875f;  // NaN stays NaN
  float lq = horner(t, -0x1.88672ep+0f, -0x1.37118ap+1f, -0x1.a72c1cp-1f, -0x1.812548p-5f,
                    0x1.78916cp-7f, -0x1.2668eap-9f, 0x1.0a1368p-12f);
  ExpParts p = exp_reduce(lq);
  float s = pow2i(p.k);
  float e_hi = s * p.hi;  // exact; erfc = e_hi + s lo
  float y = 1.0f - e_hi;
  float big = y + (((1.0f - y) - e_hi) - s * p.lo);  // 1 - erfc with one rounding
  return with_sign_of(sel(a < 0.875f, small, big), x);
}

static inline float sin_f32(float x) {
  using namespace vecmath;
  float a = abs_f(x);
  Reduced r = reduce_any(a);
  float v = blend(0u - (r.n & 1u), cos_poly(r), sin_poly(r));
  uint32_t neg = (r.n >> 1) ^ (bits(x) >> 31);
  return sel(a < kInf, flip_sign(v, neg & 1u), x - x);  // inf and NaN give NaN
}

static inline float cos_f32(float x) {
  using namespace vecmath;
  float a = abs_f(x);
  Reduced r = reduce_any(a);
  float v = blend(0u - (r.n & 1u), sin_poly(r), cos_poly(r));
  uint32_t neg = ((r.n + 1u) >> 1) & 1u;
  return sel(a < kInf, flip_sign(v, neg), x - x);
}

}  // namespace lt
