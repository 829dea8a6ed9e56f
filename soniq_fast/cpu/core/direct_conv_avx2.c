/* Direct convolution with the requantize fused, for first layers: a few input channels, so
 * K = C kh kw <= SONIQ_DIRECT_MAX_K (e.g. 9 for one grey channel, 27 for RGB), stride 1.
 * Such a layer has many output positions and little work per position, so the GEMM path's
 * per-row costs (im2col, packing, micro-tile set-up, transposing sums into channel planes)
 * are most of its time. Here the vector lanes are 8 output positions of one image row
 * instead: for a K position (c, r, s) their codes are 8 consecutive bytes of the padded
 * image, so no im2col is built, and the sums of one output channel come out as 8
 * consecutive positions -- exactly the layout of the codes, so they are requantized and
 * stored 8 at a time.
 *
 *     acc[pos, o] = sum_k (q[o, k] << (A - ba[k])) * a[pos, k]      (int32, exact: |q| <=
 *     255 and a << (A - ba) <= 255, so |acc| <= 64 * 255 * 255)
 *
 * with the weights prepared once (job->direct, int16) and vpmaddwd adding two K positions
 * per int32 lane. Requantize: requantize_avx2.h, the same float32 steps as every path. */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <stdlib.h>

#include "requantize_avx2.h"
#include "soniq_cpu.h"

#define CHUNK_BLOCKS 64      /* blocks of 8 positions gathered before the channels go out */

typedef struct {
    const soniq_gemm_job *job;
    const soniq_requant_out *rq;
    int failed;
} direct_ctx;

/* Codes of channel o at the positions of nb blocks (pos[i] .. pos[i] + n[i] - 1, n <= 8)
 * from their pairs of K positions a[i * pairs + p] (int16 pairs per lane). */
static inline __attribute__((always_inline))
void put_channel(const soniq_gemm_job *job, const soniq_requant_out *rq, int64_t o,
                 const __m256i *a, int64_t pairs, const int64_t *pos, const int64_t *n,
                 int64_t nb, uint8_t *codes) {
    /* A block whose 8 lanes stay within the chunk's positions reads and writes all 8 even
     * when it has fewer (the last of a row): the lanes past it are the next blocks' first
     * positions, which those blocks -- later in this loop, on this thread -- overwrite. Only
     * a short block at the chunk's end takes the careful path (a call to memcpy there cost
     * the whole layer about a third of its time). */
    const int64_t end = nb > 0 ? pos[nb - 1] + n[nb - 1] : 0;
    const int32_t *w = (const int32_t *)(const void *)job->direct + o * pairs;
    const int64_t rpi = job->layout.rows_per_image;
    const __m256 scale = param(rq->scale + o, 0), bias = param(rq->bias + o, 0);
    __m256 r = param(rq->ratio + o, 0), top = tops(rq->bits + o, 0);
    float ratio[8];
    uint8_t bits[8], tail[8];
    __m256i wp[SONIQ_DIRECT_MAX_K / 2];
    for (int64_t p = 0; p < pairs; p++)
        wp[p] = _mm256_set1_epi32(w[p]);
    for (int64_t i = 0; i < nb; i++, a += pairs) {
        /* two chains of adds, so consecutive products overlap */
        __m256i acc = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256();
        int64_t p = 0;
        for (; p + 2 <= pairs; p += 2) {
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256(a + p), wp[p]));
            acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(_mm256_loadu_si256(a + p + 1), wp[p + 1]));
        }
        if (p < pairs)
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256(a + p), wp[p]));
        acc = _mm256_add_epi32(acc, acc2);
        const int full = pos[i] + 8 <= end;
        if (rq->per_position && full) {
            r = param(rq->ratio + o * rpi + pos[i], 1);
            top = tops(rq->bits + o * rpi + pos[i], 1);
        } else if (rq->per_position) {   /* the last positions of a row: no reads past them */
            for (int j = 0; j < 8; j++) {
                ratio[j] = j < n[i] ? rq->ratio[o * rpi + pos[i] + j] : 0.0f;
                bits[j] = j < n[i] ? rq->bits[o * rpi + pos[i] + j] : 0;
            }
            r = param(ratio, 1);
            top = tops(bits, 1);
        }
        const __m256i k = soniq_requantize8_avx2(acc, scale, bias, r, top);
        if (full) {
            store_codes(codes + pos[i], k);
        } else {
            store_codes(tail, k);
            for (int64_t j = 0; j < n[i]; j++)
                codes[pos[i] + j] = tail[j];
        }
    }
}

/* Output rows t = (image, oy) in [lo, hi), each image padded once into thread scratch. A
 * chunk of rows of one image has its pairs of K positions gathered first, then goes out
 * channel by channel: each channel's codes are consecutive bytes, written in order. */
static void run_rows(void *arg, int64_t lo, int64_t hi) {
    direct_ctx *ctx = (direct_ctx *)arg;
    const soniq_gemm_job *job = ctx->job;
    const soniq_conv_src *s = job->conv;
    const int64_t wpp = soniq_padded_row_bytes(s), plane = (s->h + 2 * s->padding) * wpp;
    const int64_t k = job->k, pairs = job->direct_k / 2, ho = s->ho, wo = s->wo;
    const int64_t row_blocks = (wo + 7) / 8;
    const int64_t chunk_rows = CHUNK_BLOCKS / row_blocks > 0 ? CHUNK_BLOCKS / row_blocks : 1;
    const int64_t max_blocks = chunk_rows * row_blocks;
    uint8_t *padded = (uint8_t *)calloc((size_t)soniq_padded_bytes(s), 1);
    __m256i *a = (__m256i *)malloc(sizeof(__m256i) * (size_t)(max_blocks * pairs + 1));
    int64_t *pos = (int64_t *)malloc(sizeof(int64_t) * (size_t)(2 * max_blocks));
    if (!padded || !a || !pos) {
        __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
        free(padded);
        free(a);
        free(pos);
        return;
    }
    int64_t *n = pos + max_blocks;
    int64_t off[SONIQ_DIRECT_MAX_K];    /* K position (c, r, s) in the padded image */
    for (int64_t t = 0; t < k; t++)
        off[t] = t / (s->kh * s->kw) * plane + t / s->kw % s->kh * wpp + t % s->kw;
    int64_t image = -1;
    for (int64_t t = lo; t < hi;) {
        const int64_t b = t / ho, oy0 = t % ho;
        int64_t rows = chunk_rows < ho - oy0 ? chunk_rows : ho - oy0;
        rows = rows < hi - t ? rows : hi - t;
        if (b != image) {
            soniq_pad_image(s, b, padded);
            image = b;
        }
        int64_t nb = 0;
        for (int64_t oy = oy0; oy < oy0 + rows; oy++) {
            const uint8_t *row = padded + oy * wpp;   /* padded row oy: image row oy - padding */
            for (int64_t ox = 0; ox < wo; ox += 8, nb++) {
                /* 8 bytes from ox + s: within the padded row and its slack (ox < wo, s < kw) */
                for (int64_t p = 0; p < pairs; p++) {
                    const __m128i x0 = _mm_loadl_epi64((const __m128i *)(row + off[2 * p] + ox));
                    const __m128i x1 = 2 * p + 1 < k
                        ? _mm_loadl_epi64((const __m128i *)(row + off[2 * p + 1] + ox))
                        : _mm_setzero_si128();
                    _mm256_storeu_si256(a + nb * pairs + p,
                                        _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1)));
                }
                pos[nb] = oy * wo + ox;
                n[nb] = wo - ox < 8 ? wo - ox : 8;
            }
        }
        uint8_t *codes = ctx->rq->codes + b * job->layout.image_stride;
        for (int64_t o = 0; o < job->n_out; o++)
            put_channel(job, ctx->rq, o, a, pairs, pos, n, nb,
                        codes + o * job->layout.col_stride);
        t += rows;
    }
    free(padded);
    free(a);
    free(pos);
}

int soniq_direct_conv_requantize_avx2(const soniq_gemm_job *job, const soniq_requant_out *rq,
                                      int n_threads) {
    direct_ctx ctx = {job, rq, 0};
    const soniq_conv_src *s = job->conv;
    if (!s || s->stride != 1 || job->k > SONIQ_DIRECT_MAX_K || job->direct_k < job->k
        || job->layout.row_stride != 1)
        return -3;
    const int64_t batch = s->ho > 0 ? job->m / (s->ho * s->wo) : 0;
    if (soniq_parallel_for(n_threads, batch * s->ho, run_rows, &ctx) != 0)
        return -1;
    return ctx.failed ? -1 : 0;
}
