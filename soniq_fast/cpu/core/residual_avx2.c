/* The residual tail (residual.h) with AVX2, 8 elements per step, the float32 steps of
 * residual_scalar.c. AVX2 has no int64 -> float conversion: a group of 8 goes through int32
 * (vcvtdq2ps rounds to nearest even, as the int64 conversion does) when every |acc| < 2^31,
 * otherwise it takes the scalar path; the tail takes the scalar path too. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "requantize_avx2.h"
#include "residual.h"

/* 8 int64 as 8 int32 when all |v| < 2^31; 0 if any is outside. */
static inline __attribute__((always_inline)) int narrow8(const int64_t *acc, __m256i *out) {
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
    a = _mm256_permutevar8x32_epi32(a, even);
    b = _mm256_permutevar8x32_epi32(b, even);
    *out = _mm256_permute2x128_si256(a, b, 0x20);
    return 1;
}

void soniq_residual_span_avx2(const int64_t *acc, const float *skip, int64_t n,
                              const soniq_residual_params *p, uint8_t *k) {
    const __m256 s = _mm256_set1_ps(p->scale), b = _mm256_set1_ps(p->bias);
    const __m256 r = _mm256_set1_ps(p->ratio), top = _mm256_set1_ps(p->top);
    int64_t j = 0;
    __m256i v;
    for (; j + 8 <= n; j += 8) {
        if (!narrow8(acc + j, &v)) {
            soniq_residual_span_scalar(acc + j, skip + j, 8, p, k + j);
            continue;
        }
        __m256 t = _mm256_mul_ps(s, _mm256_cvtepi32_ps(v));
        __m256 sum = _mm256_add_ps(_mm256_add_ps(t, b), _mm256_loadu_ps(skip + j));
        __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(sum, r), _mm256_setzero_ps()),
                                 top);
        q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        store_codes(k + j, _mm256_cvtps_epi32(q));
    }
    soniq_residual_span_scalar(acc + j, skip + j, n - j, p, k + j);
}

void soniq_residual_codes_span_avx2(const int64_t *acc, const uint8_t *codes, float factor,
                                    int64_t n, const soniq_residual_params *p, uint8_t *k) {
    const __m256 s = _mm256_set1_ps(p->scale), b = _mm256_set1_ps(p->bias);
    const __m256 r = _mm256_set1_ps(p->ratio), top = _mm256_set1_ps(p->top);
    const __m256 f = _mm256_set1_ps(factor);
    int64_t j = 0;
    __m256i v;
    for (; j + 8 <= n; j += 8) {
        if (!narrow8(acc + j, &v)) {
            soniq_residual_codes_span_scalar(acc + j, codes + j, factor, 8, p, k + j);
            continue;
        }
        const __m256 skip = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
            _mm_loadl_epi64((const __m128i *)(codes + j)))), f);
        __m256 t = _mm256_mul_ps(s, _mm256_cvtepi32_ps(v));
        __m256 sum = _mm256_add_ps(_mm256_add_ps(t, b), skip);
        __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(sum, r), _mm256_setzero_ps()),
                                 top);
        q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        store_codes(k + j, _mm256_cvtps_epi32(q));
    }
    soniq_residual_codes_span_scalar(acc + j, codes + j, factor, n - j, p, k + j);
}
