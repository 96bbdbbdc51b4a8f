/* A decode step's kernels on CPU: the attention (one query token per row, grouped-query heads,
 * fused) and the greedy choice (the first index of each row's largest logit).
 *
 * Attention:
 * For every (row, KV head) pair, in parallel: scores of the G query heads sharing that KV head
 * against [shared prefix | the row's own valid cache columns], a float32 softmax, and the weighted
 * sum of the values, with each key and value row read once for all G queries. Masked value rows
 * are never read; masked key rows are read only inside a block of four that holds a valid one, and
 * their scores are overwritten. The torch form of the same arithmetic (pspo_eval.generation.engine,
 * FastDecoder._decode_attention) makes several small batched matrix products, a masked fill, a
 * softmax and casts, and read the cache at about a fifth of this CPU's memory bandwidth.
 *
 * Built by pspo_eval/generation/native.py with the system C compiler (compiled with -O3
 * -march=native -ffast-math -fopenmp, linked without -ffast-math, see FLAGS there) and called
 * through ctypes. Scores, softmax and the accumulation are in float32; the output is rounded once
 * to the cache's dtype. Every value that reaches the softmax or the output is finite, which
 * -ffast-math assumes (masked columns hold -1e30 and get a probability of 0).
 *
 * Layouts (element strides): q [B, KV*G, D] contiguous; k, v [B, KV, S, D] with the given batch and
 * head strides and contiguous rows of D; valid [B, S] bytes (nonzero = attend); prefix keys and
 * values [KV, P, D] contiguous (P may be 0); out [B, KV*G, D] contiguous; live [B] bytes or NULL:
 * a row whose byte is 0 (it has finished and waits to be compacted away) reads nothing and gets
 * zeros. q may have any strides and kn, vn (the step's new key and value, [B, KV, D], any
 * strides, or NULL) are written into the cache at column col before it is read, saving torch two
 * strided copies a call: st = {q's strides (b, head, d), kn's (b, h, d), vn's (b, h, d), col}.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* Software prefetch, two distances. Each (row, KV head) reads two short streams (~23 KB each for
 * 180 columns) that the hardware prefetcher picks up late, restarting at every item:
 * - the key and value rows 16 ahead of the ones being read, into L1. Measured: 30 layers of a
 *   256-row cache in DRAM, 74 -> 62 ms; 256 GSM8K prompts decoding in one batch, 20.8-20.9 -> 19.5 s
 *   of decode steps, the same tokens;
 * - the next item's key and value rows into L2, spread over this item's passes (its key row s while
 *   this item's scores read row s, its value row j while the values pass reads row j), so its
 *   streams are on their way while this item computes. Measured (30 layers of 256 rows, 180
 *   columns, interleaved runs, min of 12): 80.0-83.6 -> 70.0-73.5 ms, the same bits; two items
 *   ahead, or 8 or 32 rows ahead for the first distance, were level with it. */
#define PREFETCH_AHEAD 16
static inline void prefetch_bytes(const void *p, int64_t n) { /* into L1, one 64-byte line at a time */
    for (int64_t i = 0; i < n; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
}
static inline void prefetch_l2(const void *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 64) __builtin_prefetch((const char *)p + i, 0, 2);
}

static inline float bf16_load(const uint16_t *p, int64_t i) {
    uint32_t u = (uint32_t)p[i] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_round(float f) { /* round to nearest even, as torch's cast */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float f32_round(float f) { return f; }

#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512 bf16x16_load(const uint16_t *p) { /* 16 bf16 -> 16 float32 (exact) */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
/* 32 bf16 -> float32 in the lanes the dot product pairs them in: lane i of *even holds element 2i,
 * of *odd element 2i + 1 (exact; a shift and a mask, two operations for 32 elements). */
static inline void bf16x32_split(const uint16_t *p, __m512 *even, __m512 *odd) {
    const __m512i x = _mm512_loadu_si512(p);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u)));
}
#endif

#if defined(__AVX512BF16__)
/* The four horizontal sums of a0..a3 in one vector: a transpose-and-add instead of four reductions. */
static inline __m128 sum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512d x = _mm512_castps_pd(s01), y = _mm512_castps_pd(s23);
    const __m512 t = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    const __m256 u = _mm256_add_ps(_mm512_castps512_ps256(t), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

/* Which instructions compute the bf16 scores for D = 64. Where the CPU has AMX (Intel Sapphire
 * Rapids and later), float32 FMAs on keys widened to float32: measured there, vdpbf16ps on 512-bit
 * registers ran at ~1.8 G instructions/s against 4.6-7 G/s for vfmadd231ps (twice the multiplies a
 * second in float32), and the scores went 5.2-5.7 -> 3.9-4.2 ns a key row in L1; 30 layers of a
 * 256-row cache in DRAM, with the value pass's cheaper widening below, 70.0-74.4 -> 69.3-71.8 ms
 * (interleaved, min and median of 12; memory bounds the rest). Elsewhere (AMD Zen 4 runs
 * the 512-bit dot product at full rate), the dot-product instruction. Both give the same bits:
 * vdpbf16ps adds the odd then the even product of each pair to its float32 lane, one rounding each,
 * and a product of two bf16 numbers is exact in float32, so one FMA per element in that order
 * computes the same sums (tests/test_native.py builds both and compares). -DPSPO_SCORES_FMA=0/1
 * chooses by hand. */
#if !defined(PSPO_SCORES_FMA)
#if defined(__AMX_BF16__)
#define PSPO_SCORES_FMA 1
#else
#define PSPO_SCORES_FMA 0
#endif
#endif

/* scores4_bf16's sums for D = 64 with FMAs (see PSPO_SCORES_FMA): the four key rows are widened once
 * for all G queries. */
static inline void scores4_fma_d64(const float *qf, const uint16_t *kr, int64_t G, float scale, float *sc,
                                   int64_t W, int64_t j) {
    __m512 ke[4][2], ko[4][2];
    for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++) bf16x32_split(kr + r * 64 + 32 * h, &ke[r][h], &ko[r][h]);
    for (int64_t g = 0; g < G; g++) {
        const float *qg = qf + g * 64;
        const __m512 qe0 = _mm512_loadu_ps(qg), qo0 = _mm512_loadu_ps(qg + 16);
        const __m512 qe1 = _mm512_loadu_ps(qg + 32), qo1 = _mm512_loadu_ps(qg + 48);
        __m512 a[4];
        for (int r = 0; r < 4; r++) {
            a[r] = _mm512_fmadd_ps(ko[r][0], qo0, _mm512_setzero_ps());
            a[r] = _mm512_fmadd_ps(ke[r][0], qe0, a[r]);
            a[r] = _mm512_fmadd_ps(ko[r][1], qo1, a[r]);
            a[r] = _mm512_fmadd_ps(ke[r][1], qe1, a[r]);
        }
        _mm_storeu_ps(sc + g * W + j, _mm_mul_ps(_mm_set1_ps(scale), sum4(a[0], a[1], a[2], a[3])));
    }
}

/* Scores of four consecutive key rows (D % 32 == 0): sc[g * W + j .. j + 3]. */
static inline void scores4_bf16(const uint16_t *q, const uint16_t *kr, int64_t G, int64_t D, float scale,
                                float *sc, int64_t W, int64_t j) {
    for (int64_t g = 0; g < G; g++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t d = 0; d < D; d += 32) {
            const __m512bh x = (__m512bh)_mm512_loadu_si512(q + g * D + d);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(kr + d), x);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(kr + D + d), x);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(kr + 2 * D + d), x);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(kr + 3 * D + d), x);
        }
        _mm_storeu_ps(sc + g * W + j, _mm_mul_ps(_mm_set1_ps(scale), sum4(a0, a1, a2, a3)));
    }
}
/* Four key rows by whichever path runs: qf (the split queries) or NULL. */
#define SCORES4_BF16(q, kr, G, D, scale, sc, W, j)                                                 \
    (qf ? scores4_fma_d64(qf, kr, G, scale, sc, W, j) : scores4_bf16(q, kr, G, D, scale, sc, W, j))
#endif

/* G queries of 64 elements, split once per item for scores4_fma_d64: qf [G][4][16] = even and odd
 * lanes of the first, then of the second 32 elements. NULL where that path does not run. */
static inline float *split_queries_bf16(const uint16_t *q, int64_t G, int64_t D, float *qf) {
#if defined(__AVX512BF16__)
    if (PSPO_SCORES_FMA && D == 64) {
        for (int64_t g = 0; g < G; g++)
            for (int h = 0; h < 2; h++) {
                __m512 e, o;
                bf16x32_split(q + g * 64 + 32 * h, &e, &o);
                _mm512_storeu_ps(qf + (g * 4 + 2 * h) * 16, e);
                _mm512_storeu_ps(qf + (g * 4 + 2 * h + 1) * 16, o);
            }
        return qf;
    }
#endif
    (void)q, (void)G, (void)D, (void)qf;
    return NULL;
}
static inline float *split_queries_f32(const float *q, int64_t G, int64_t D, float *qf) {
    (void)q, (void)G, (void)D, (void)qf;
    return NULL;
}

/* sc[g * W + j] = scale * <q_g, key row> for the G queries q [G, D]: 16 lanes at a time where
 * there is AVX-512 and D % 16 == 0, else one element at a time. */
#if defined(__AVX512F__)
static inline __m512 f32x16_load(const float *p) { return _mm512_loadu_ps(p); }
#define SCORES_AVX512(LOAD16)                                                                  \
    if (D % 16 == 0) {                                                                         \
        for (int64_t g = 0; g < G; g++) {                                                      \
            __m512 a = _mm512_setzero_ps();                                                    \
            for (int64_t d = 0; d < D; d += 16)                                                \
                a = _mm512_fmadd_ps(LOAD16(kr + d), LOAD16(q + g * D + d), a);                 \
            sc[g * W + j] = scale * _mm512_reduce_add_ps(a);                                   \
        }                                                                                      \
        return;                                                                                \
    }
#else
#define SCORES_AVX512(LOAD16)
#endif
#define DEFINE_SCORES(NAME, T, LOAD, LOAD16)                                                   \
static inline void NAME(const T *q, const T *kr, int64_t G, int64_t D, float scale, float *sc, \
                        int64_t W, int64_t j) {                                                \
    SCORES_AVX512(LOAD16)                                                                      \
    for (int64_t g = 0; g < G; g++) {                                                          \
        float a = 0.0f;                                                                        \
        for (int64_t d = 0; d < D; d++) a += LOAD(q, g * D + d) * LOAD(kr, d);                 \
        sc[g * W + j] = scale * a;                                                             \
    }                                                                                          \
}

static inline float f32_load(const float *p, int64_t i) { return p[i]; }
DEFINE_SCORES(scores_plain_bf16, uint16_t, bf16_load, bf16x16_load)
DEFINE_SCORES(scores_f32, float, f32_load, f32x16_load)

static inline void scores_bf16(const uint16_t *q, const uint16_t *kr, int64_t G, int64_t D, float scale,
                               float *sc, int64_t W, int64_t j) {
#if defined(__AVX512BF16__)
    if (D % 32 == 0) { /* bf16 pair products are exact in float32; native dot-product instructions */
        for (int64_t g = 0; g < G; g++) {
            __m512 a = _mm512_setzero_ps();
            for (int64_t d = 0; d < D; d += 32)
                a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(kr + d), (__m512bh)_mm512_loadu_si512(q + g * D + d));
            sc[g * W + j] = scale * _mm512_reduce_add_ps(a);
        }
        return;
    }
#endif
    scores_plain_bf16(q, kr, G, D, scale, sc, W, j);
}

/* All scores of one (row, KV head): the P prefix rows, then the row's own S columns (masked ones
 * get -1e30, a probability of exactly 0). In bf16, blocks of four key rows share one reduction; a
 * block is read even where some of its columns are masked (their scores are overwritten). qf: the
 * queries as split_queries_bf16 leaves them, or NULL. nk: the next item's keys (or NULL), prefetched
 * into L2 row for row. */
#define DEFINE_SCORES_ALL(NAME, T, ONE, HAS_FOUR, FOUR)                                            \
static inline void NAME(const T *q, const float *qf, const T *pkh, const T *kb, const uint8_t *ok, \
                        int64_t P, int64_t S, int64_t G, int64_t D, float scale, float *sc,     \
                        const T *nk) {                                                          \
    (void)qf;                                                                                   \
    const int64_t row = D * (int64_t)sizeof(T);                                                 \
    const int64_t W = P + S;                                                                    \
    int64_t j = 0, s = 0;                                                                       \
    if (HAS_FOUR && D % 32 == 0) {                                                              \
        for (; j + 4 <= P; j += 4) FOUR(q, pkh + j * D, G, D, scale, sc, W, j);                 \
        for (; s + 4 <= S; s += 4) {                                                            \
            if (s + PREFETCH_AHEAD + 4 <= S) prefetch_bytes(kb + (s + PREFETCH_AHEAD) * D, 4 * row); \
            if (nk) prefetch_l2(nk + s * D, 4 * row);                                           \
            if (ok[s] | ok[s + 1] | ok[s + 2] | ok[s + 3]) FOUR(q, kb + s * D, G, D, scale, sc, W, P + s); \
            for (int64_t i = s; i < s + 4; i++)                                                 \
                if (!ok[i]) for (int64_t g = 0; g < G; g++) sc[g * W + P + i] = -1.0e30f;       \
        }                                                                                       \
    }                                                                                           \
    for (; j < P; j++) ONE(q, pkh + j * D, G, D, scale, sc, W, j);                              \
    for (; s < S; s++) {                                                                        \
        if (nk) prefetch_l2(nk + s * D, row);                                                   \
        if (ok[s]) ONE(q, kb + s * D, G, D, scale, sc, W, P + s);                               \
        else for (int64_t g = 0; g < G; g++) sc[g * W + P + s] = -1.0e30f;                      \
    }                                                                                           \
}

#if defined(__AVX512BF16__)
DEFINE_SCORES_ALL(scores_all_bf16, uint16_t, scores_bf16, 1, SCORES4_BF16)
#else
DEFINE_SCORES_ALL(scores_all_bf16, uint16_t, scores_bf16, 0, scores_bf16) /* FOUR unused */
#endif
DEFINE_SCORES_ALL(scores_all_f32, float, scores_f32, 0, scores_f32) /* FOUR unused */

/* acc [G, D] += p_g * value row, p_g = sc[g * W + j]: the row is converted once for all G. */
static inline void add_row_bf16(const uint16_t *vr, int64_t G, int64_t D, const float *sc, int64_t W,
                                int64_t j, float *acc) {
#if defined(__AVX512F__)
    if (D % 16 == 0) {
        for (int64_t d = 0; d < D; d += 16) {
            const __m512 x = bf16x16_load(vr + d);
            for (int64_t g = 0; g < G; g++)
                _mm512_storeu_ps(acc + g * D + d, _mm512_fmadd_ps(_mm512_set1_ps(sc[g * W + j]), x, _mm512_loadu_ps(acc + g * D + d)));
        }
        return;
    }
#endif
    for (int64_t g = 0; g < G; g++)
        for (int64_t d = 0; d < D; d++) acc[g * D + d] += sc[g * W + j] * bf16_load(vr, d);
}

#if defined(__AVX512F__)
/* The whole value pass for D = 64 and G <= 4 (SmolLM2, Llama-3.2-1B, Qwen2.5-0.5B's shapes) with the
 * G x 4 accumulators held in registers: acc = sum_j p[g][j] * value row j over the prefix's P rows
 * and the row's valid columns. nv: the next item's values (or NULL), prefetched into L2. */
static void values_bf16_d64(const uint16_t *pvh, const uint16_t *vb, const uint8_t *ok, int64_t P,
                            int64_t G, const float *sc, int64_t W, float *acc, const uint16_t *nv) {
    /* a[g][0..3]: the even and odd elements of the first 32, then of the last 32 (bf16x32_split:
     * half the widening operations of bf16x16_load; interleaved back at the end, each sum the
     * same: 3.0 -> 2.5 ns a row, measured in L1) */
    __m512 a[4][4];
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < 4; i++) a[g][i] = _mm512_setzero_ps();
    for (int64_t j = 0; j < W; j++) {
        if (j >= P && j + PREFETCH_AHEAD < W) prefetch_bytes(vb + (j - P + PREFETCH_AHEAD) * 64, 128);
        if (nv && j >= P) prefetch_l2(nv + (j - P) * 64, 128);
        const uint16_t *row;
        if (j < P) row = pvh + j * 64;
        else if (ok[j - P]) row = vb + (j - P) * 64;
        else continue;
        __m512 x0, x1, x2, x3;
        bf16x32_split(row, &x0, &x1);
        bf16x32_split(row + 32, &x2, &x3);
        for (int g = 0; g < 4; g++) {
            if (g >= G) break;
            const __m512 w = _mm512_set1_ps(sc[g * W + j]);
            a[g][0] = _mm512_fmadd_ps(w, x0, a[g][0]);
            a[g][1] = _mm512_fmadd_ps(w, x1, a[g][1]);
            a[g][2] = _mm512_fmadd_ps(w, x2, a[g][2]);
            a[g][3] = _mm512_fmadd_ps(w, x3, a[g][3]);
        }
    }
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int64_t g = 0; g < G; g++)
        for (int h = 0; h < 2; h++) {
            _mm512_storeu_ps(acc + g * 64 + 32 * h, _mm512_permutex2var_ps(a[g][2 * h], first, a[g][2 * h + 1]));
            _mm512_storeu_ps(acc + g * 64 + 32 * h + 16, _mm512_permutex2var_ps(a[g][2 * h], second, a[g][2 * h + 1]));
        }
}
#endif

/* acc [G, D] = the probability-weighted sum of the value rows (prefix, then the valid columns),
 * one row at a time through ADD_ROW; nv as in values_bf16_d64. */
#define DEFINE_VALUES(NAME, T, ADD_ROW)                                                         \
static inline void NAME(const T *pvh, const T *vb, const uint8_t *ok, int64_t P, int64_t S,     \
                        int64_t G, int64_t D, const float *sc, float *acc, const T *nv) {       \
    const int64_t W = P + S;                                                                    \
    memset(acc, 0, sizeof(float) * G * D);                                                      \
    for (int64_t j = 0; j < P; j++) ADD_ROW(pvh + j * D, G, D, sc, W, j, acc);                  \
    for (int64_t s = 0; s < S; s++) {                                                           \
        if (nv) prefetch_l2(nv + s * D, D * (int64_t)sizeof(T));                                \
        if (ok[s]) ADD_ROW(vb + s * D, G, D, sc, W, P + s, acc);                                \
    }                                                                                           \
}

DEFINE_VALUES(values_rows_bf16, uint16_t, add_row_bf16)

static inline void values_bf16(const uint16_t *pvh, const uint16_t *vb, const uint8_t *ok, int64_t P,
                               int64_t S, int64_t G, int64_t D, const float *sc, float *acc, const uint16_t *nv) {
#if defined(__AVX512F__)
    if (D == 64 && G <= 4) {
        values_bf16_d64(pvh, vb, ok, P, G, sc, P + S, acc, nv);
        return;
    }
#endif
    values_rows_bf16(pvh, vb, ok, P, S, G, D, sc, acc, nv);
}

static inline void add_row_f32(const float *vr, int64_t G, int64_t D, const float *sc, int64_t W,
                               int64_t j, float *acc) {
    for (int64_t g = 0; g < G; g++) {
        const float p = sc[g * W + j];
        float *ag = acc + g * D;
        _Pragma("omp simd")
        for (int64_t d = 0; d < D; d++) ag[d] += p * vr[d];
    }
}

DEFINE_VALUES(values_f32, float, add_row_f32)

/* Each query's scores over the W columns -> probabilities; masked columns (a score of -1e30) get 0. */
static inline void softmax_rows(float *sc, int64_t G, int64_t W) {
    for (int64_t g = 0; g < G; g++) {
        float *r = sc + g * W, m = -3.0e38f, total = 0.0f;
        for (int64_t j = 0; j < W; j++) m = r[j] > m ? r[j] : m;
        _Pragma("omp simd reduction(+:total)")
        for (int64_t j = 0; j < W; j++) { r[j] = expf(r[j] - m); total += r[j]; }
        const float inv = 1.0f / total;
        _Pragma("omp simd")
        for (int64_t j = 0; j < W; j++) r[j] *= inv;
    }
}

#define DEFINE_KERNEL(NAME, T, ROUND, split_queries, scores_all, values)                        \
int NAME(const T *q, T *k, T *v, const uint8_t *valid, const uint8_t *live,                  \
         const T *pk, const T *pv, int64_t P, T *out, int64_t B, int64_t KV, int64_t G,        \
         int64_t S, int64_t D,                                                                 \
         int64_t k_sb, int64_t k_sh, int64_t v_sb, int64_t v_sh, float scale, int threads,     \
         const T *kn, const T *vn, const int64_t *st) {                                        \
    const int64_t W = P + S;                                                                   \
    int failed = 0;                                                                            \
    _Pragma("omp parallel num_threads(threads)")                                               \
    {                                                                                          \
        T *qc = malloc(sizeof(T) * G * D);                                                     \
        float *acc = malloc(sizeof(float) * G * D);                                            \
        float *qfb = malloc(sizeof(float) * G * D);                                            \
        float *sc = malloc(sizeof(float) * G * (W > 0 ? W : 1));                               \
        if (!qc || !acc || !sc || !qfb) {                                                      \
            _Pragma("omp atomic write")                                                        \
            failed = 1;                                                                        \
        }                                                                                      \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t it = 0; it < B * KV; it++) {                                              \
            if (!qc || !acc || !sc || !qfb) continue;                                          \
            const int64_t b = it / KV, h = it % KV;                                            \
            if (live && !live[b]) {                                                            \
                memset(out + it * G * D, 0, sizeof(T) * G * D);                                \
                continue;                                                                      \
            }                                                                                  \
            for (int64_t g = 0; g < G; g++) /* this item's G queries, in L1 */                 \
                for (int64_t d = 0; d < D; d++)                                                \
                    qc[g * D + d] = q[b * st[0] + (h * G + g) * st[1] + d * st[2]];            \
            const uint8_t *ok = valid + b * S;                                                 \
            T *kb = k + b * k_sb + h * k_sh, *vb = v + b * v_sb + h * v_sh;                    \
            if (kn) /* this step's key and value, written at column st[9] first */             \
                for (int64_t d = 0; d < D; d++) {                                              \
                    kb[st[9] * D + d] = kn[b * st[3] + h * st[4] + d * st[5]];                 \
                    vb[st[9] * D + d] = vn[b * st[6] + h * st[7] + d * st[8]];                 \
                }                                                                              \
            const T *nk = NULL, *nv = NULL; /* the next item's cache, if it is read */         \
            const int64_t b2 = (it + 1) / KV, h2 = (it + 1) % KV;                              \
            if (it + 1 < B * KV && (!live || live[b2])) {                                      \
                nk = k + b2 * k_sb + h2 * k_sh;                                                \
                nv = v + b2 * v_sb + h2 * v_sh;                                                \
            }                                                                                  \
            const float *qf = split_queries(qc, G, D, qfb);                                    \
            scores_all(qc, qf, pk + h * P * D, kb, ok, P, S, G, D, scale, sc, nk);             \
            softmax_rows(sc, G, W);                                                            \
            values(pv + h * P * D, vb, ok, P, S, G, D, sc, acc, nv);                           \
            T *o = out + it * G * D;                                                           \
            for (int64_t i = 0; i < G * D; i++) o[i] = ROUND(acc[i]);                          \
        }                                                                                      \
        free(qc);                                                                              \
        free(acc);                                                                             \
        free(qfb);                                                                             \
        free(sc);                                                                              \
    }                                                                                          \
    return failed;                                                                             \
}

/* One (row, KV head)'s scale * scores, sc [G, P + S], by the path decode_attention_bf16 takes here:
 * for the tests, which compare the builds' score paths bit for bit (the attention's bf16 output
 * would hide a last-bit difference). */
int decode_scores_bf16(const uint16_t *q, const uint16_t *pk, const uint16_t *kb, const uint8_t *ok, int64_t P,
                       int64_t S, int64_t G, int64_t D, float scale, float *sc) {
    float *qfb = malloc(sizeof(float) * G * D);
    if (!qfb) return 1;
    scores_all_bf16(q, split_queries_bf16(q, G, D, qfb), pk, kb, ok, P, S, G, D, scale, sc, NULL);
    free(qfb);
    return 0;
}

DEFINE_KERNEL(decode_attention_bf16, uint16_t, bf16_round, split_queries_bf16, scores_all_bf16, values_bf16)
DEFINE_KERNEL(decode_attention_f32, float, f32_round, split_queries_f32, scores_all_f32, values_f32)

/* Greedy choice: out[b] = the first v with x[v, b] the largest of column b, x [V, B] contiguous (the
 * logits as the transposed vocabulary projection leaves them, see engine.FastDecoder._lin). Each
 * thread scans a contiguous range of the vocabulary for all B columns at once; the ranges are then
 * merged in order with a strict comparison, so a tie keeps the lower index, as torch.argmax does.
 * The values are finite (logits); no infinity or NaN constant is used (-ffast-math). torch's
 * reduction over the outer dimension of a bf16 [V, B] tensor ran at ~1 GB/s here: 14.5 ms a step for
 * 128 rows (profiled), where this reads the 12.6 MB at memory speed. */
static inline void argmax_merge(float *best, int32_t *idx, const float *b2, const int32_t *i2, int64_t B) {
    for (int64_t b = 0; b < B; b++)
        if (b2[b] > best[b]) { best[b] = b2[b]; idx[b] = i2[b]; }
}

#if defined(__AVX512F__)
#define ARGMAX_AVX512(LOAD16)                                                                  \
    if (B % 16 == 0) {                                                                         \
        for (int64_t v = v0 + 1; v < v1; v++) {                                                \
            const __m512i vi = _mm512_set1_epi32((int32_t)v);                                  \
            for (int64_t b = 0; b < B; b += 16) {                                              \
                const __m512 x16 = LOAD16(x + v * B + b), m16 = _mm512_loadu_ps(best + b);     \
                const __mmask16 gt = _mm512_cmp_ps_mask(x16, m16, _CMP_GT_OQ);                 \
                _mm512_storeu_ps(best + b, _mm512_mask_mov_ps(m16, gt, x16));                  \
                _mm512_storeu_si512(idx + b, _mm512_mask_mov_epi32(_mm512_loadu_si512(idx + b), gt, vi)); \
            }                                                                                  \
        }                                                                                      \
        return;                                                                                \
    }
#else
#define ARGMAX_AVX512(LOAD16)
#endif

#define DEFINE_ARGMAX_RANGE(NAME, T, LOAD, LOAD16)                                             \
static void NAME(const T *x, int64_t v0, int64_t v1, int64_t B, float *best, int32_t *idx) {   \
    for (int64_t b = 0; b < B; b++) { best[b] = LOAD(x, v0 * B + b); idx[b] = (int32_t)v0; }   \
    ARGMAX_AVX512(LOAD16)                                                                      \
    for (int64_t v = v0 + 1; v < v1; v++)                                                      \
        for (int64_t b = 0; b < B; b++) {                                                      \
            const float f = LOAD(x, v * B + b);                                                \
            if (f > best[b]) { best[b] = f; idx[b] = (int32_t)v; }                             \
        }                                                                                      \
}

DEFINE_ARGMAX_RANGE(argmax_range_bf16, uint16_t, bf16_load, bf16x16_load)
DEFINE_ARGMAX_RANGE(argmax_range_f32, float, f32_load, f32x16_load)

#define DEFINE_ARGMAX(NAME, T, RANGE)                                                          \
int NAME(const T *x, int64_t V, int64_t B, int64_t *out, int threads) {                        \
    if (V < 1 || B < 1) return 0;                                                              \
    if (threads < 1) threads = 1;                                                              \
    if (threads > V) threads = (int)V;                                                         \
    float *best = malloc(sizeof(float) * B * threads);                                         \
    int32_t *idx = malloc(sizeof(int32_t) * B * threads);                                      \
    if (!best || !idx) { free(best); free(idx); return 1; }                                    \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                          \
    for (int t = 0; t < threads; t++)                                                          \
        RANGE(x, V * t / threads, V * (t + 1) / threads, B, best + t * B, idx + t * B);        \
    for (int t = 1; t < threads; t++) argmax_merge(best, idx, best + t * B, idx + t * B, B);   \
    for (int64_t b = 0; b < B; b++) out[b] = idx[b];                                           \
    free(best);                                                                                \
    free(idx);                                                                                 \
    return 0;                                                                                  \
}

DEFINE_ARGMAX(argmax_columns_bf16, uint16_t, argmax_range_bf16)
DEFINE_ARGMAX(argmax_columns_f32, float, argmax_range_f32)

/* Rotary embedding of the queries and keys, bf16: for each (row, position, head) of x [B, T, N]
 * (any strides; N holds the H query heads, then the KV key heads, D each), out = x·cos +
 * rotate_half(x)·sin with every product and sum rounded to bf16, the order torch's bf16 arithmetic
 * rounds them in (engine.FastDecoder._rope and transformers' apply_rotary_pos_emb give the same
 * bits): lo = R(R(x_lo·c_lo) - R(x_hi·s_lo)), hi = R(R(x_hi·c_hi) + R(x_lo·s_hi)). Each rounding goes
 * through integer arithmetic, so no product can be fused into an FMA. cos, sin [B, T, D] contiguous;
 * q [B, H, T, D] and k [B, KV, T, D] with the given strides (the decoder lays them out as torch's
 * elementwise ops lay out their results, since the next matrix products' bits depend on their
 * operands' layout). One torch call per operation (a product, a slice
 * product and an in-place sum per half) took 7 ms of a 128-row decode step (30 layers, profiled). */
static inline float bf16_value(float f) { /* f rounded to bf16, as a float */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One head's pair of halves over n consecutive (row, position) columns, all contiguous: x_lo, x_hi,
 * c_lo, c_hi, s_lo, s_hi and the outputs are [n] arrays (the transposed layout of a decode step's
 * activations, engine.FastDecoder._lin). Plain loops the compiler vectorises. */
static void rope_columns(const uint16_t *restrict xl, const uint16_t *restrict xh, const uint16_t *restrict cl,
                         const uint16_t *restrict ch, const uint16_t *restrict sl, const uint16_t *restrict sh,
                         uint16_t *restrict ol, uint16_t *restrict oh, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float a = bf16_load(xl, i), b = bf16_load(xh, i);
        ol[i] = bf16_round(bf16_value(bf16_value(a * bf16_load(cl, i)) - bf16_value(b * bf16_load(sl, i))));
        oh[i] = bf16_round(bf16_value(bf16_value(b * bf16_load(ch, i)) + bf16_value(a * bf16_load(sh, i))));
    }
}

/* x: strides sb, st, sn; cs = 1: cos and sin are [D, B*T] (transposed), and x, q and k hold their
 * B*T columns contiguously (stride 1 along t, T along b): each (head, d) pair is a vector loop over
 * the columns. Else cos, sin are [B, T, D] and each (row, position, head) is done on its own. */
int rope_bf16(const uint16_t *x, int64_t sb, int64_t st, int64_t sn, const uint16_t *cos, const uint16_t *sin,
              int64_t cs, uint16_t *q, const int64_t *qs, uint16_t *k, const int64_t *ks, int64_t B, int64_t T,
              int64_t H, int64_t KV, int64_t D, int threads) {
    if (D % 2 || D > 1024) return 1;
    const int64_t half = D / 2, heads = H + KV, n = B * T;
    if (cs) {
        _Pragma("omp parallel for num_threads(threads) schedule(static)")
        for (int64_t it = 0; it < heads * half; it++) {
            const int64_t h = it / half, d = it % half;
            const int64_t *os = h < H ? qs : ks;
            uint16_t *o = h < H ? q + h * os[1] : k + (h - H) * os[1];
            const uint16_t *xr = x + h * D * sn;
            rope_columns(xr + d * sn, xr + (d + half) * sn, cos + d * n, cos + (d + half) * n, sin + d * n,
                         sin + (d + half) * n, o + d * os[3], o + (d + half) * os[3], n);
        }
        return 0;
    }
    _Pragma("omp parallel for num_threads(threads) schedule(static)")
    for (int64_t it = 0; it < B * T * heads; it++) {
        const int64_t h = it % heads, bt = it / heads, b = bt / T, t = bt % T;
        float xf[1024], o[1024];
        const uint16_t *xr = x + b * sb + t * st + h * D * sn;
        for (int64_t d = 0; d < D; d++) xf[d] = bf16_load(xr, d * sn);
        const uint16_t *cr = cos + bt * D, *sr = sin + bt * D;
        for (int64_t d = 0; d < half; d++)
            o[d] = bf16_value(bf16_value(xf[d] * bf16_load(cr, d)) - bf16_value(xf[d + half] * bf16_load(sr, d)));
        for (int64_t d = half; d < D; d++)
            o[d] = bf16_value(bf16_value(xf[d] * bf16_load(cr, d)) + bf16_value(xf[d - half] * bf16_load(sr, d)));
        const int64_t *os = h < H ? qs : ks; /* strides of [B, heads, T, D] */
        uint16_t *out = h < H ? q + b * qs[0] + h * qs[1] + t * qs[2] : k + b * ks[0] + (h - H) * ks[1] + t * ks[2];
        for (int64_t d = 0; d < D; d++) out[d * os[3]] = bf16_round(o[d]);
    }
    return 0;
}

/* Residual add and RMS norm, fused: for each of the R rows of x [R, N] (contiguous, updated in
 * place), x = R(x + y) when y is given (any strides: sr between rows, sc between columns), then
 * h = R(w * R(x * 1/sqrt(sum(x^2) / N + eps))), R rounding to the tensor's dtype, with exactly the
 * operations and the summation order of torch's CPU kernels for FastDecoder._rms (float32 math):
 * sum(x^2) as torch's cascade sum of a contiguous row (ATen SumKernel: vectors of 8 lanes, four
 * of them interleaved, levels of 16, partials added in order), 1/sqrt as a correctly rounded
 * square root and division. Those (and the float32 scaling) are compiled without -ffast-math (the
 * pragmas below), which would reorder the sum and the products and use an approximate reciprocal
 * square root; the bf16 passes round through integer arithmetic between operations, which it
 * cannot change. native.add_rms checks the bits
 * against torch's at first use and keeps the torch form where they differ. Replaces ten torch calls
 * per norm (a float copy, pow, sum, div, add, rsqrt, mul, a cast, mul, and the add before it). */
#if defined(__clang__)
#pragma float_control(precise, on, push)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("no-fast-math", "fp-contract=off")
#endif

#define SUM_LANES 8
#define SUM_ILP 4
#define SUM_LEVELS 4

static int64_t ceil_log2(int64_t x) { /* ATen's utils::CeilLog2 */
    if (x <= 2) return 1;
    int64_t b = 0;
    for (uint64_t v = (uint64_t)(x - 1); v; v >>= 1) b++;
    return b;
}

/* torch's float sum of a contiguous row r [n] (vectorized_inner_sum -> row_sum -> multi_row_sum),
 * its 8 lanes as one vector of the compiler's vector extension (lane-wise, so exact as written). */
typedef float lanes8 __attribute__((vector_size(32)));
static inline lanes8 lanes8_load(const float *p) { lanes8 v; memcpy(&v, p, sizeof v); return v; }

static float torch_row_sum(const float *r, int64_t n) {
    const int64_t nv = n / SUM_LANES, size = nv / SUM_ILP;
    const int64_t power = ceil_log2(size) / SUM_LEVELS > 4 ? ceil_log2(size) / SUM_LEVELS : 4;
    const int64_t step = (int64_t)1 << power, mask = step - 1;
    const lanes8 zero = {0};
    lanes8 acc[SUM_LEVELS][SUM_ILP];
    for (int j = 0; j < SUM_LEVELS; j++)
        for (int k = 0; k < SUM_ILP; k++) acc[j][k] = zero;
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < SUM_ILP; k++) acc[0][k] += lanes8_load(r + (i * SUM_ILP + k) * SUM_LANES);
        for (int j = 1; j < SUM_LEVELS; j++) {
            for (int k = 0; k < SUM_ILP; k++) { acc[j][k] += acc[j - 1][k]; acc[j - 1][k] = zero; }
            if ((i & (mask << (j * power))) != 0) break;
        }
    }
    for (; i < size; i++)
        for (int k = 0; k < SUM_ILP; k++) acc[0][k] += lanes8_load(r + (i * SUM_ILP + k) * SUM_LANES);
    for (int j = 1; j < SUM_LEVELS; j++)
        for (int k = 0; k < SUM_ILP; k++) acc[0][k] += acc[j][k];
    for (int64_t v = size * SUM_ILP; v < nv; v++) acc[0][0] += lanes8_load(r + v * SUM_LANES); /* past the last four */
    for (int k = 1; k < SUM_ILP; k++) acc[0][0] += acc[0][k];
    float total = 0.0f;
    for (int64_t e = nv * SUM_LANES; e < n; e++) total += r[e]; /* the scalar tail first, then the lanes */
    for (int l = 0; l < SUM_LANES; l++) total += acc[0][0][l];
    return 0.0f + total;
}

/* 1 / sqrt(mean(sq) + eps) for a row's squares, as torch computes it. */
static float rms_inverse(const float *sq, int64_t n, float eps) {
    return 1.0f / sqrtf(torch_row_sum(sq, n) / (float)n + eps);
}

/* h = w * (x * inv) in float32 (the product first, as torch's two calls): here, since -ffast-math
 * would reassociate it; in bf16 the rounding between the two products keeps them apart. */
static void scale_f32(float *h, const float *w, const float *xf, float inv, int64_t n) {
    for (int64_t c = 0; c < n; c++) h[c] = w[c] * (xf[c] * inv);
}

#if defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

static inline void scale_bf16(uint16_t *h, const uint16_t *w, const float *xf, float inv, int64_t n) {
    for (int64_t c = 0; c < n; c++) h[c] = bf16_round(bf16_load(w, c) * bf16_value(xf[c] * inv));
}

/* x, h [R, N]; y gathered 16 rows at a time into contiguous float rows (a transposed y, sr == 1,
 * is then read along its contiguous columns). Plain loops the compiler vectorises. */
#define DEFINE_ADD_RMS(NAME, T, LOAD, VALUE, ROUND, SCALE)                                       \
int NAME(T *x, int64_t R, int64_t N, const T *y, int64_t sr, int64_t sc, const T *w, float eps, \
         T *h, int threads) {                                                                    \
    const int64_t BLK = 16;                                                                      \
    int failed = 0;                                                                              \
    _Pragma("omp parallel num_threads(threads)")                                                 \
    {                                                                                            \
        const int64_t n1 = N > 0 ? N : 1;                                                        \
        float *xf = malloc(sizeof(float) * n1), *sq = malloc(sizeof(float) * n1);                \
        float *yb = malloc(sizeof(float) * n1 * BLK);                                            \
        if (!xf || !sq || !yb) {                                                                 \
            _Pragma("omp atomic write")                                                          \
            failed = 1;                                                                          \
        }                                                                                        \
        _Pragma("omp for schedule(static)")                                                      \
        for (int64_t r0 = 0; r0 < R; r0 += BLK) {                                                \
            if (!xf || !sq || !yb) continue;                                                     \
            const int64_t nb = R - r0 < BLK ? R - r0 : BLK;                                      \
            if (y && sr == 1)                                                                    \
                for (int64_t c = 0; c < N; c++)                                                  \
                    for (int64_t b = 0; b < nb; b++) yb[b * N + c] = LOAD(y, (r0 + b) + c * sc); \
            else if (y)                                                                          \
                for (int64_t b = 0; b < nb; b++)                                                 \
                    for (int64_t c = 0; c < N; c++) yb[b * N + c] = LOAD(y, (r0 + b) * sr + c * sc); \
            for (int64_t b = 0; b < nb; b++) {                                                   \
                T *xr = x + (r0 + b) * N, *hr = h + (r0 + b) * N;                                \
                const float *yr = yb + b * N;                                                    \
                if (y)                                                                           \
                    for (int64_t c = 0; c < N; c++) { xf[c] = VALUE(LOAD(xr, c) + yr[c]); xr[c] = ROUND(xf[c]); } \
                else                                                                             \
                    for (int64_t c = 0; c < N; c++) xf[c] = LOAD(xr, c);                         \
                for (int64_t c = 0; c < N; c++) sq[c] = xf[c] * xf[c];                           \
                SCALE(hr, w, xf, rms_inverse(sq, N, eps), N);                                    \
            }                                                                                    \
        }                                                                                        \
        free(xf);                                                                                \
        free(sq);                                                                                \
        free(yb);                                                                                \
    }                                                                                            \
    return failed;                                                                               \
}

static inline float f32_value(float f) { return f; }
DEFINE_ADD_RMS(add_rms_bf16, uint16_t, bf16_load, bf16_value, bf16_round, scale_bf16)
DEFINE_ADD_RMS(add_rms_f32, float, f32_load, f32_value, f32_round, scale_f32)
