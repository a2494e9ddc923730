/* y = x W^T + b for a few rows of x: the decode step's linears with bf16 or int8 weights
   (vimtool/sampling/skinny_gemv.py); and, at the end of the file, the decode step's attention over the KV cache.

   x: (M, K) fp32, bias: (N,) fp32 or NULL, scale: (N,) fp32 (int8 only), y: (M, N) fp32, all row-major and contiguous;
   W in the layout `vimtool_skinny_layout()` names (below); scratch: M * (K + 1) uint16 (a bf16 copy of x). Any M, K,
   N >= 1.

   A cached decode step multiplies 1-8 rows (batch x 2 with guidance) by every weight, so it is a stream over the
   weights. Two builds of one source, chosen by the compiler's target (-march=native):

   - AVX512-BF16 with AVX512-VBMI (`vimtool_skinny_path() == 2`, layout 32; e.g. AMD Zen 4, Intel Sapphire
     Rapids): W is stored in panels of 32 output columns, and within a
     panel k-pair by k-pair: W[n, k], W[n, k + 1] side by side for the 32 n (the pairs vdpbf16ps multiplies; K is
     padded to even with zeros). x is rounded to bf16 once per call (round to nearest even, as torch's
     .to(torch.bfloat16)); each step reads 32 columns x 2 k of weights as two vectors and multiplies them with the
     k-pair of every row broadcast, into 2 accumulators per row (16 at 8 rows): no horizontal sums, and each weight
     vector serves all rows from a register. The same products as oneDNN's bf16 inner product (which also rounds
     its input to bf16). int8 weights in the same layout are widened to bf16 exactly (|q| <= 127 fits bf16's 8-bit
     significand; stored sign-magnitude, see load_int8) and scaled per column at the end: the products torch's int8
     kernel computes (it rounds x to bf16 too). On the AMD Zen 4 this was tuned on, streamed from memory: 26-29 GB/s
     of bf16 weights at 1-4 rows, ~18 at 8 (oneDNN bf16: 10-17), int8 17-20 GB/s at 1-4 rows, ~10 at 8 (torch's int8
     kernel: 4-10). At 8 rows both are bound by vdpbf16ps (16 per step, ~1 per cycle), not by memory.
   - anywhere else (`== 1`, layout 0: W row-major (N, K)): one weight row at a time, front to back, one fp32
     accumulator per row of x; each weight widened to fp32 exactly (bf16 is the top half of an fp32; int8 by a
     conversion) and multiplied with the fp32 x. GNU vector extensions, so gcc or clang vectorize it for AVX2,
     AVX-512 or NEON. Two or more weight rows read side by side measured ~2x SLOWER on Zen 4, hence one row. */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* fp32 lanes per vector of the portable loops and the attention: 16 where AVX-512 holds them in one register; 8
   elsewhere, since gcc splits 64-byte vectors badly on AVX2 (measured 1.1 GB/s at 16 lanes against 13 GB/s at 8 on
   an AVX2 build) */
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
typedef float f32v __attribute__((vector_size(4 * LANES)));
typedef uint32_t u32v __attribute__((vector_size(4 * LANES)));
typedef int32_t i32v __attribute__((vector_size(4 * LANES)));
typedef uint16_t u16v __attribute__((vector_size(2 * LANES)));
typedef int16_t i16v __attribute__((vector_size(2 * LANES)));
typedef int8_t i8v __attribute__((vector_size(LANES)));

static inline f32v load(const float *p) {
  f32v v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline float hsum(f32v v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)v);
#else
  float s = 0.f;
  for (int i = 0; i < LANES; i++) s += v[i];
  return s;
#endif
}

/* Built with -fopenmp (skinny_gemv.py tries it first), the loops over weight panels and attention rows run on the
   calling thread's OpenMP team: torch's own libgomp (same soname, already loaded), sized by torch.set_num_threads.
   Below this much work (multiply-adds / 2) a fork-join costs more than it saves. Without -fopenmp: one thread. */
#define PARALLEL_MIN_WORK 16384

/* the widest SIMD this build uses: 512 (AVX-512), 256 (AVX2 + FMA) or 0 (other: not measured, not used) */
int vimtool_skinny_simd(void) {
#if defined(__AVX512F__)
  return 512;
#elif defined(__AVX2__) && defined(__FMA__)
  return 256;
#else
  return 0;
#endif
}

#if defined(__AVX512BF16__) && defined(__AVX512VBMI__) && defined(__AVX512BW__) && defined(__AVX512F__)
int vimtool_skinny_path(void) { return 2; }
int vimtool_skinny_layout(void) { return 32; }

/* rows of x to bf16, each padded to an even length with a zero (the weights' padding pairs with it) */
static void to_bf16(const float *x, int64_t M, int64_t K, uint16_t *out) {
  int64_t K2 = (K + 1) / 2 * 2;
  for (int64_t m = 0; m < M; m++, x += K, out += K2) {
    int64_t i = 0;
    for (; i + 32 <= K; i += 32)
      _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    for (; i < K; i += 16) {
      __mmask16 m16 = K - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - i)) - 1);
      _mm256_mask_storeu_epi16(out + i, m16, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m16, x + i)));
    }
    if (K2 > K) out[K] = 0;
  }
}

/* One step's 64 weights as two bf16 vectors (32 columns x 2 k each half). bf16: two loads. */
#define LOAD_BF16_PAIR(w, w_lo, w_hi) (w_lo = (__m512bh)_mm512_loadu_si512(w), w_hi = (__m512bh)_mm512_loadu_si512((w) + 32))
#define NO_PROLOGUE()

/* int8: widened to bf16 exactly (|q| <= 127 fits bf16's 8-bit significand) in 5 instructions per step. The weights
   are stored sign-magnitude (bit 7 the sign, bits 0-6 |q|), so vpermi2b looks up the low and the high byte of
   bf16(|q|) in two 128-entry tables, one ternary-logic op puts the sign on the high byte, and the unpacks interleave
   the two bytes into words; pack() permutes each step's 64 bytes so that the unpacks' per-128-bit-lane order comes
   out as the panel's order. (Widening through fp32 instead, 14 instructions per step, read 7-25% fewer GB/s.) */
static __m512i LUT_LO0, LUT_LO1, LUT_HI0, LUT_HI1;
__attribute__((constructor)) static void load_int8_tables(void) { /* when the library is loaded */
  uint8_t lo[128], hi[128];
  for (int m = 0; m < 128; m++) {
    float f = (float)m;
    uint32_t u;
    memcpy(&u, &f, 4);
    lo[m] = (uint8_t)(u >> 16), hi[m] = (uint8_t)(u >> 24);
  }
  LUT_LO0 = _mm512_loadu_si512(lo), LUT_LO1 = _mm512_loadu_si512(lo + 64);
  LUT_HI0 = _mm512_loadu_si512(hi), LUT_HI1 = _mm512_loadu_si512(hi + 64);
}
#define INT8_PROLOGUE()                                                                                        \
  const __m512i lut_lo0 = LUT_LO0, lut_lo1 = LUT_LO1, lut_hi0 = LUT_HI0, lut_hi1 = LUT_HI1;                      \
  const __m512i sign = _mm512_set1_epi8((char)0x80);
#define LOAD_INT8_PAIR(w, w_lo, w_hi)                                                                          \
  do {                                                                                                         \
    __m512i b_ = _mm512_loadu_si512(w);                                                                        \
    __m512i l_ = _mm512_permutex2var_epi8(lut_lo0, b_, lut_lo1);                                               \
    __m512i h_ = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(lut_hi0, b_, lut_hi1), b_, sign, 0xF8);    \
    w_lo = (__m512bh)_mm512_unpacklo_epi8(l_, h_);                                                             \
    w_hi = (__m512bh)_mm512_unpackhi_epi8(l_, h_);                                                             \
  } while (0)

/* R rows (1-8) of bf16 x (K2 pairs each, as uint32) times every panel; y = acc * scale + bias per column */
#define PANELS(NAME, T, PROLOGUE, LOAD_PAIR, R)                                                                   \
  static void NAME##R(const uint32_t *x, int64_t K2, const T *W, int64_t N, const float *scale, const float *bias, \
                      float *y) {                                                                                 \
    PROLOGUE()                                                                                                    \
    /* panels split over torch's OpenMP threads (the same runtime, when built with -fopenmp) */                  \
    _Pragma("omp parallel for schedule(static) if (N * K2 >= PARALLEL_MIN_WORK)")                                \
    for (int64_t n0 = 0; n0 < N; n0 += 32) {                                                                      \
      const T *w = W + n0 * 2 * K2; /* a panel: K2 steps of 64 weights */                                         \
      __m512 lo[R], hi[R];                                                                                        \
      for (int r = 0; r < R; r++) lo[r] = hi[r] = _mm512_setzero_ps();                                            \
      for (int64_t k = 0; k < K2; k++, w += 64) {                                                                 \
        __m512bh w_lo, w_hi;                                                                                      \
        LOAD_PAIR(w, w_lo, w_hi);                                                                                 \
        for (int r = 0; r < R; r++) {                                                                             \
          __m512bh xr = (__m512bh)_mm512_set1_epi32((int)x[r * K2 + k]);                                          \
          lo[r] = _mm512_dpbf16_ps(lo[r], w_lo, xr);                                                              \
          hi[r] = _mm512_dpbf16_ps(hi[r], w_hi, xr);                                                              \
        }                                                                                                         \
      }                                                                                                           \
      int64_t left = N - n0;                                                                                      \
      __mmask16 m_lo = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);                            \
      __mmask16 m_hi = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);   \
      __m512 s_lo = _mm512_set1_ps(1.f), s_hi = s_lo, b_lo = _mm512_setzero_ps(), b_hi = b_lo;                    \
      if (scale) s_lo = _mm512_maskz_loadu_ps(m_lo, scale + n0), s_hi = _mm512_maskz_loadu_ps(m_hi, scale + n0 + 16); \
      if (bias) b_lo = _mm512_maskz_loadu_ps(m_lo, bias + n0), b_hi = _mm512_maskz_loadu_ps(m_hi, bias + n0 + 16); \
      for (int r = 0; r < R; r++) {                                                                               \
        _mm512_mask_storeu_ps(y + r * N + n0, m_lo, _mm512_fmadd_ps(lo[r], s_lo, b_lo));                          \
        _mm512_mask_storeu_ps(y + r * N + n0 + 16, m_hi, _mm512_fmadd_ps(hi[r], s_hi, b_hi));                     \
      }                                                                                                           \
    }                                                                                                             \
  }
#define EIGHT(NAME, T, PRO, LOAD)                                                                                 \
  PANELS(NAME, T, PRO, LOAD, 1) PANELS(NAME, T, PRO, LOAD, 2) PANELS(NAME, T, PRO, LOAD, 3)                       \
  PANELS(NAME, T, PRO, LOAD, 4) PANELS(NAME, T, PRO, LOAD, 5) PANELS(NAME, T, PRO, LOAD, 6)                       \
  PANELS(NAME, T, PRO, LOAD, 7) PANELS(NAME, T, PRO, LOAD, 8)
EIGHT(bf16_panels, uint16_t, NO_PROLOGUE, LOAD_BF16_PAIR)
EIGHT(int8_panels, int8_t, INT8_PROLOGUE, LOAD_INT8_PAIR)
#define PASSES(NAME, T)                                                                                           \
  typedef void (*NAME##_fn)(const uint32_t *, int64_t, const T *, int64_t, const float *, const float *, float *); \
  static const NAME##_fn NAME[9] = {0, NAME##1, NAME##2, NAME##3, NAME##4, NAME##5, NAME##6, NAME##7, NAME##8};   \
  static void NAME##_passes(const float *x, int64_t M, int64_t K, const T *W, int64_t N, const float *scale,      \
                            const float *bias, float *y, uint16_t *scratch) {                                     \
    int64_t K2 = (K + 1) / 2;                                                                                     \
    to_bf16(x, M, K, scratch);                                                                                    \
    for (int64_t m = 0; m < M; m += 8) /* 8 rows per pass over the weights: 16 accumulators of 32 registers */    \
      NAME[M - m < 8 ? M - m : 8]((const uint32_t *)(scratch + m * 2 * K2), K2, W, N, scale, bias, y + m * N);    \
  }
PASSES(bf16_panels, uint16_t)
PASSES(int8_panels, int8_t)

void vimtool_bf16_linear(const float *x, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias,
                         float *y, uint16_t *scratch) {
  bf16_panels_passes(x, M, K, W, N, NULL, bias, y, scratch);
}

void vimtool_int8_linear(const float *x, int64_t M, int64_t K, const int8_t *W, int64_t N, const float *scale,
                         const float *bias, float *y, uint16_t *scratch) {
  int8_panels_passes(x, M, K, W, N, scale, bias, y, scratch);
}

#else /* portable: one weight row at a time, widened to fp32 */

#define MAX_ROWS 4 /* rows per pass over the weights; more rows take further passes */

/* Weights widened to fp32 exactly, LANES per step: bf16 (the top half of an fp32) and int8 */
static inline f32v widen_bf16(const uint16_t *w) {
  u16v h;
  memcpy(&h, w, sizeof h);
  u32v u = __builtin_convertvector(h, u32v) << 16;
  f32v f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline float widen1_bf16(uint16_t w) {
  uint32_t u = (uint32_t)w << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline f32v widen_i8(const int8_t *w) {
#if defined(__AVX512F__)
  return (f32v)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w)));
#else
  i8v q;
  memcpy(&q, w, sizeof q);
  /* one width step at a time: gcc turns int8 -> int32 or -> float in one step into scalar conversions */
  return __builtin_convertvector(__builtin_convertvector(__builtin_convertvector(q, i16v), i32v), f32v);
#endif
}

/* y[r, n] = scale[n] (1 if scale is NULL) * sum_k widen(W[n, k]) x[r, k] + bias[n] for R rows of x, fp32 sums;
   WIDEN widens LANES weights, WIDEN1 one (the tail of K) */
#define WIDEN_ROWS(NAME, T, WIDEN, WIDEN1, R)                                                                  \
  static void NAME##R(const float *x, int64_t K, const T *W, int64_t N, const float *scale, const float *bias, \
                      float *y) {                                                                              \
    int64_t body = K - K % LANES;                                                                              \
    for (int64_t n = 0; n < N; n++) {                                                                          \
      const T *w = W + n * K;                                                                                  \
      f32v acc[R];                                                                                             \
      for (int r = 0; r < R; r++) acc[r] = (f32v){0};                                                          \
      for (int64_t k = 0; k < body; k += LANES) {                                                              \
        f32v wv = WIDEN(w + k);                                                                                \
        for (int r = 0; r < R; r++) acc[r] += wv * load(x + r * K + k);                                        \
      }                                                                                                        \
      for (int r = 0; r < R; r++) {                                                                            \
        float s = hsum(acc[r]);                                                                                \
        for (int64_t k = body; k < K; k++) s += WIDEN1(w[k]) * x[r * K + k];                                   \
        y[r * N + n] = s * (scale ? scale[n] : 1.f) + (bias ? bias[n] : 0.f);                                  \
      }                                                                                                        \
    }                                                                                                          \
  }

int vimtool_skinny_path(void) { return 1; }
int vimtool_skinny_layout(void) { return 0; }

WIDEN_ROWS(rows, uint16_t, widen_bf16, widen1_bf16, 1)
WIDEN_ROWS(rows, uint16_t, widen_bf16, widen1_bf16, 2)
WIDEN_ROWS(rows, uint16_t, widen_bf16, widen1_bf16, 3)
WIDEN_ROWS(rows, uint16_t, widen_bf16, widen1_bf16, 4)
typedef void (*rows_fn)(const float *, int64_t, const uint16_t *, int64_t, const float *, const float *, float *);

void vimtool_bf16_linear(const float *x, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias,
                         float *y, uint16_t *scratch) {
  static const rows_fn by_rows[MAX_ROWS + 1] = {0, rows1, rows2, rows3, rows4};
  (void)scratch;
  for (int64_t m = 0; m < M; m += MAX_ROWS) {
    int64_t r = M - m < MAX_ROWS ? M - m : MAX_ROWS;
    by_rows[r](x + m * K, K, W, N, NULL, bias, y + m * N);
  }
}

/* Weight-only int8 (one scale per output channel): y[m, n] = scale[n] * sum_k W[n, k] x[m, k] + bias[n], int8
   widened to fp32 exactly, products and sums in fp32 with the fp32 x; LANES weights per step, widened by AVX-512
   intrinsics where there are any, else by GNU vector extensions. */
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 1)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 2)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 3)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 4)
typedef void (*int8_rows_fn)(const float *, int64_t, const int8_t *, int64_t, const float *, const float *, float *);

void vimtool_int8_linear(const float *x, int64_t M, int64_t K, const int8_t *W, int64_t N, const float *scale,
                         const float *bias, float *y, uint16_t *scratch) {
  static const int8_rows_fn by_rows[MAX_ROWS + 1] = {0, int8_rows1, int8_rows2, int8_rows3, int8_rows4};
  (void)scratch;
  for (int64_t m = 0; m < M; m += MAX_ROWS) {
    int64_t r = M - m < MAX_ROWS ? M - m : MAX_ROWS;
    by_rows[r](x + m * K, K, W, N, scale, bias, y + m * N);
  }
}
#endif

/* A decode step's self-attention over the KV cache, one query per (batch, head) row r < R, fp32 throughout:
   scores[r, j] = scale * q[r] . K[r, j] for j < S, then (after the caller's softmax) out[r] = sum_j p[r, j] V[r, j].
   q: (R, Dh) contiguous; K / V row r at k + r * ld, key j at + j * Dh (the cache's (B, H, max_len, Dh) buffer with
   ld = max_len * Dh); Dh a multiple of LANES. torch's batched GEMM runs these as R tiny GEMMs (1 x Dh x S) and read
   the cache at ~5 GB/s in a decode step; these loops stream each key and value row once. */
void vimtool_attention_scores(const float *q, const float *k, int64_t ld, int64_t R, int64_t S, int64_t Dh,
                              float scale, float *scores) {
#pragma omp parallel for schedule(static) if (R * S * Dh >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < R; r++) {
    const float *qr = q + r * Dh, *kr = k + r * ld;
    for (int64_t j = 0; j < S; j++) {
      const float *kj = kr + j * Dh;
      f32v a = (f32v){0}, b = (f32v){0}; /* two chains: the Dh / LANES products of one key overlap */
      int64_t d = 0;
      for (; d + 2 * LANES <= Dh; d += 2 * LANES) {
        a += load(qr + d) * load(kj + d);
        b += load(qr + d + LANES) * load(kj + d + LANES);
      }
      if (d < Dh) a += load(qr + d) * load(kj + d);
      scores[r * S + j] = scale * hsum(a + b);
    }
  }
}

void vimtool_attention_values(const float *p, const float *v, int64_t ld, int64_t R, int64_t S, int64_t Dh,
                              float *out) {
  enum { BLOCK = 4 }; /* output vectors per pass over the values: Dh = 64 is one pass with AVX-512 */
#pragma omp parallel for schedule(static) if (R * S * Dh >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < R; r++) {
    const float *vr = v + r * ld, *pr = p + r * S;
    for (int64_t d0 = 0; d0 < Dh; d0 += BLOCK * LANES) {
      int n = (Dh - d0) / LANES < BLOCK ? (int)((Dh - d0) / LANES) : BLOCK;
      f32v acc[BLOCK] = {{0}};
      for (int64_t j = 0; j < S; j++) {
        const float *vj = vr + j * Dh + d0;
        f32v pj = (f32v){0} + pr[j];
        for (int i = 0; i < BLOCK; i++)
          if (i < n) acc[i] += pj * load(vj + i * LANES);
      }
      for (int i = 0; i < n; i++) memcpy(out + r * Dh + d0 + i * LANES, &acc[i], sizeof acc[i]);
    }
  }
}
