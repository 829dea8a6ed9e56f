/* Epilogue and requantize of one span with AVX2, 8 elements per step, same float32 steps as
 * epilogue_scalar.c (one multiply, one add; then one multiply, clip, round half to even):
 * - (float)acc: AVX2 has no int64 -> float conversion, so a group of 8 is converted through
 *   int32 (vcvtdq2ps, round to nearest even like the int64 conversion) only when every
 *   |acc| < 2^31 (checked); otherwise the group takes the scalar path.
 * - clip then round (vroundps nearest even) equals round then clip: 0 and top are integers. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "requantize_avx2.h"
#include "soniq_cpu.h"

/* 8 int64 as 8 int32 when all |v| < 2^31; returns 0 if any is outside. */
static inline __attribute__((always_inline)) int narrow(const int64_t *acc, __m256i *out) {
    const __m256i hi = _mm256_set1_epi64x(2147483647), lo = _mm256_set1_epi64x(-2147483647);
    __m256i a = _mm256_loadu_si256((const __m256i *)acc);
    __m256i b = _mm256_loadu_si256((const __m256i *)(acc + 4));
    __m256i bad = _mm256_or_si256(_mm256_or_si256(_mm256_cmpgt_epi64(a, hi),
                                                  _mm256_cmpgt_epi64(lo, a)),
                                  _mm256_or_si256(_mm256_cmpgt_epi64(b, hi),
                                                  _mm256_cmpgt_epi64(lo, b)));
    if (!_mm256_testz_si256(bad, bad))
        return 0;
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    a = _mm256_permutevar8x32_epi32(a, even);     /* low dwords of a in the low 128 bits */
    b = _mm256_permutevar8x32_epi32(b, even);
    *out = _mm256_permute2x128_si256(a, b, 0x20);
    return 1;
}

/* Elements j0 .. j1-1 on the scalar path: the tail, or a group needing the int64 conversion. */
static void epilogue_rest(const int64_t *acc, int64_t j0, int64_t j1, const soniq_epi_params *p,
                          float *y, int ss) {
    soniq_epi_params rest = *p;
    rest.scale += j0 * ss;
    rest.bias += j0 * ss;
    soniq_epilogue_span_scalar(acc + j0, j1 - j0, &rest, y + j0);
}

static void requantize_rest(const int64_t *acc, int64_t j0, int64_t j1,
                            const soniq_epi_params *p, uint8_t *k, int ss, int rs) {
    soniq_epi_params rest = *p;
    rest.scale += j0 * ss;
    rest.bias += j0 * ss;
    rest.ratio += j0 * rs;
    rest.bits += j0 * rs;
    soniq_requantize_span_scalar(acc + j0, j1 - j0, &rest, k + j0);
}

static inline __attribute__((always_inline))
void epilogue_span(const int64_t *acc, int64_t n, const soniq_epi_params *p, float *y, int ss) {
    int64_t j = 0;
    __m256i v;
    for (; j + 8 <= n; j += 8) {
        if (!narrow(acc + j, &v)) {
            epilogue_rest(acc, j, j + 8, p, y, ss);
            continue;
        }
        __m256 t = _mm256_mul_ps(param(p->scale + j * ss, ss), _mm256_cvtepi32_ps(v));
        _mm256_storeu_ps(y + j, _mm256_add_ps(t, param(p->bias + j * ss, ss)));
    }
    epilogue_rest(acc, j, n, p, y, ss);
}

void soniq_epilogue_span_avx2(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                              float *y) {
    if (p->scale_step)
        epilogue_span(acc, n, p, y, 1);
    else
        epilogue_span(acc, n, p, y, 0);
}

static inline __attribute__((always_inline))
void requantize_span(const int64_t *acc, int64_t n, const soniq_epi_params *p, uint8_t *k,
                     int ss, int rs) {
    __m256 s = param(p->scale, 0), b = param(p->bias, 0);
    __m256 r = param(p->ratio, 0), top = tops(p->bits, 0);
    int64_t j = 0;
    __m256i v;
    for (; j + 8 <= n; j += 8) {
        if (!narrow(acc + j, &v)) {
            requantize_rest(acc, j, j + 8, p, k, ss, rs);
            continue;
        }
        if (ss) {
            s = param(p->scale + j, 1);
            b = param(p->bias + j, 1);
        }
        if (rs) {
            r = param(p->ratio + j, 1);
            top = tops(p->bits + j, 1);
        }
        store_codes(k + j, soniq_requantize8_avx2(v, s, b, r, top));
    }
    requantize_rest(acc, j, n, p, k, ss, rs);
}

void soniq_requantize_span_avx2(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                uint8_t *k) {
    if (p->scale_step)
        requantize_span(acc, n, p, k, 1, 1);
    else if (p->ratio_step)
        requantize_span(acc, n, p, k, 0, 1);
    else
        requantize_span(acc, n, p, k, 0, 0);
}

/* 8 int64 known to satisfy |v| < 2^31 as 8 int32, in the order 0 1 4 5 2 3 6 7 (low dwords
 * gathered with one shuffle; store_codes_mixed puts the codes back in order). */
static inline __attribute__((always_inline)) __m256i narrow_mixed(const int64_t *acc) {
    __m256 a = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)acc));
    __m256 b = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(acc + 4)));
    return _mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
}

static inline __attribute__((always_inline)) void store_codes_mixed(uint8_t *k, __m256i v) {
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    /* dword 0 holds elements 0 1 4 5, dword 4 holds 2 3 6 7: bytes back in order */
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    v = _mm256_shuffle_epi8(v, pick);
    v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)k, _mm_shuffle_epi8(_mm256_castsi256_si128(v), order));
}

/* per-element parameters in the same mixed order as narrow_mixed */
static inline __attribute__((always_inline)) __m256 mixed(__m256 v) {
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
}

/* soniq_requantize_columns on the AVX2 path, for sums of the GEMM: every |acc| < 2^31 (the
 * sums are bounded by K * 255 * 255 < 2^31 for K <= SONIQ_MAX_EXACT_K), so no group needs the
 * int64 conversion. Per-column set-up (broadcasts, the top code) is done once per column. */
void soniq_requantize_columns_avx2(const int64_t *acc, int64_t ld, int64_t cols, int64_t n,
                                   const soniq_epi_params *p, int64_t param_ld, uint8_t *k,
                                   int64_t ks, const int32_t *perm) {
    const int rs = p->ratio_step;
    for (int64_t i = 0; i < cols; i++) {
        const int64_t o = perm ? perm[i] : i;
        const int64_t *a = acc + i * ld;
        uint8_t *out = k + o * ks;
        soniq_epi_params col = {p->scale + o, p->bias + o, p->ratio + o * param_ld,
                                p->bits + o * param_ld, 0, rs};
        const __m256 s = param(col.scale, 0), b = param(col.bias, 0);
        __m256 r = param(col.ratio, 0), top = tops(col.bits, 0);
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            if (rs) {
                r = mixed(param(col.ratio + j, 1));
                top = mixed(tops(col.bits + j, 1));
            }
            store_codes_mixed(out + j, soniq_requantize8_avx2(narrow_mixed(a + j), s, b, r, top));
        }
        if (j < n)
            requantize_rest(a, j, n, &col, out, 0, rs);
    }
}
