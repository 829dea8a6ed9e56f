/* The requantize arithmetic of the AVX2 path, shared by epilogue_avx2.c and
 * direct_conv_avx2.c: the float32 steps of epilogue_scalar.c for 8 lanes at once. Include
 * after #pragma GCC target("avx2"). */
#ifndef SONIQ_REQUANTIZE_AVX2_H
#define SONIQ_REQUANTIZE_AVX2_H

#include <immintrin.h>
#include <stdint.h>

/* one parameter per lane (step 1) or one for all */
static inline __attribute__((always_inline)) __m256 param(const float *p, int step) {
    return step ? _mm256_loadu_ps(p) : _mm256_broadcast_ss(p);
}

/* 2^bits - 1 as float */
static inline __attribute__((always_inline)) __m256 tops(const uint8_t *bits, int step) {
    __m256i b = step ? _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bits))
                     : _mm256_set1_epi32(bits[0]);
    __m256i one = _mm256_set1_epi32(1);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_sllv_epi32(one, b), one));
}

/* uint8 of the low byte of each int32 lane (values 0..255), 8 bytes stored */
static inline __attribute__((always_inline)) void store_codes(uint8_t *k, __m256i v) {
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    v = _mm256_shuffle_epi8(v, pick);
    v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)k, _mm256_castsi256_si128(v));
}

/* Codes (int32 lanes, 0 .. top) of 8 sums v (int32): clip(rint((s * float32(v) + b) * r),
 * 0, top), one multiply, one add, one multiply; clip then round equals round then clip
 * because 0 and top are integers. */
static inline __attribute__((always_inline))
__m256i soniq_requantize8_avx2(__m256i v, __m256 s, __m256 b, __m256 r, __m256 top) {
    __m256 t = _mm256_mul_ps(s, _mm256_cvtepi32_ps(v));
    __m256 q = _mm256_mul_ps(_mm256_add_ps(t, b), r);
    q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), top);
    q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(q);
}

#endif
