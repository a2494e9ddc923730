/* y = x W^T + b for a few rows of x: the decode step's linears with bf16 weights (vimtool/sampling/skinny_gemv.py).

   x: (M, K) fp32, W: (N, K) bf16 as raw uint16, bias: (N,) fp32 or NULL, y: (M, N) fp32, all row-major and
   contiguous; scratch: M * K uint16 (the bf16 copy of x on the AVX512-BF16 path). Any M, K, N >= 1.

   A cached decode step multiplies 1-4 rows by every weight, so it is a stream over the weights: the loop reads
   each weight row once, front to back, and keeps one dependency chain per activation row. Two or more weight
   rows read side by side measured ~2x SLOWER on the AMD Zen 4 this was tuned on (both paths), hence one row.

   Two builds of one source, chosen by the compiler's target (-march=native):
   - AVX512-BF16 (`vimtool_skinny_path() == 2`): x is rounded to bf16 once per call (round to nearest even, as
     torch's .to(torch.bfloat16)), then vdpbf16ps takes 32 weights per instruction with fp32 sums; the same
     products as oneDNN's bf16 inner product, which also rounds its input to bf16.
   - anywhere else (`== 1`): each bf16 weight is widened to fp32 exactly (bf16 is the top half of an fp32) and
     multiplied with the fp32 x; GNU vector extensions, so gcc or clang vectorize it for AVX2, AVX-512 or NEON. */
#include <stdint.h>
#include <string.h>

#define MAX_ROWS 4 /* rows per pass over the weights; more rows take further passes */

/* fp32 lanes per vector of the portable loops: 16 where AVX-512 holds them in one register; 8 elsewhere, since gcc
   splits 64-byte vectors badly on AVX2 (measured 1.1 GB/s at 16 lanes against 13 GB/s at 8 on an AVX2 build) */
#if defined(__AVX512F__)
#include <immintrin.h>
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

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512F__)
int vimtool_skinny_path(void) { return 2; }

static void to_bf16(const float *x, int64_t n, uint16_t *out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

#define ROWS(R)                                                                                                  \
  static void rows##R(const uint16_t *x, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *y) { \
    int64_t tail = K % 32, body = K - tail;                                                                      \
    __mmask32 tail_mask = (__mmask32)((1ull << tail) - 1);                                                       \
    for (int64_t n = 0; n < N; n++) {                                                                            \
      const uint16_t *w = W + n * K;                                                                             \
      __m512 acc[R];                                                                                             \
      for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();                                                  \
      for (int64_t k = 0; k < body; k += 32) {                                                                   \
        __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k);                                                       \
        for (int r = 0; r < R; r++)                                                                              \
          acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_loadu_si512(x + r * K + k));                   \
      }                                                                                                          \
      if (tail) {                                                                                                \
        __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, w + body);                                   \
        for (int r = 0; r < R; r++)                                                                              \
          acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, x + r * K + body)); \
      }                                                                                                          \
      for (int r = 0; r < R; r++) y[r * N + n] = _mm512_reduce_add_ps(acc[r]) + (bias ? bias[n] : 0.f);       \
    }                                                                                                            \
  }
ROWS(1)
ROWS(2)
ROWS(3)
ROWS(4)
typedef void (*rows_fn)(const uint16_t *, int64_t, const uint16_t *, int64_t, const float *, float *);

void vimtool_bf16_linear(const float *x, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias,
                         float *y, uint16_t *scratch) {
  static const rows_fn by_rows[MAX_ROWS + 1] = {0, rows1, rows2, rows3, rows4};
  to_bf16(x, M * K, scratch);
  for (int64_t m = 0; m < M; m += MAX_ROWS) {
    int64_t r = M - m < MAX_ROWS ? M - m : MAX_ROWS;
    by_rows[r](scratch + m * K, K, W, N, bias, y + m * N);
  }
}

#else /* portable: widen bf16 -> fp32 and multiply in fp32 */

int vimtool_skinny_path(void) { return 1; }

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
#endif

/* Weight-only int8 (one scale per output channel): y[m, n] = scale[n] * sum_k W[n, k] x[m, k] + bias[n]. The same
   on every CPU: int8 widened to fp32 exactly, products and sums in fp32 with the fp32 x (torch's own int8 kernel
   rounds x to bf16); LANES weights per step, widened by AVX-512 intrinsics where there are any, else by GNU vector
   extensions. */
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 1)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 2)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 3)
WIDEN_ROWS(int8_rows, int8_t, widen_i8, (float), 4)
typedef void (*int8_rows_fn)(const float *, int64_t, const int8_t *, int64_t, const float *, const float *, float *);

void vimtool_int8_linear(const float *x, int64_t M, int64_t K, const int8_t *W, int64_t N, const float *scale,
                         const float *bias, float *y) {
  static const int8_rows_fn by_rows[MAX_ROWS + 1] = {0, int8_rows1, int8_rows2, int8_rows3, int8_rows4};
  for (int64_t m = 0; m < M; m += MAX_ROWS) {
    int64_t r = M - m < MAX_ROWS ? M - m : MAX_ROWS;
    by_rows[r](x + m * K, K, W, N, scale, bias, y + m * N);
  }
}
