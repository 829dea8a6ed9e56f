/* One activation row for the int8 engine: dst = a << shift (uint8, zero tail to kpad), and
 * when wide != NULL the same values as int16; returns sum a. int8_prepare_avx2.c: the same
 * with AVX2. */
#include <string.h>

#include "soniq_cpu.h"

int64_t soniq_int8_prepare_scalar(const uint8_t *src, int64_t k, int shift, uint8_t *dst,
                                  int16_t *wide, int64_t kpad) {
    uint32_t sum = 0;   /* <= 33025 * 255 */
    for (int64_t t = 0; t < k; t++) {
        sum += src[t];
        dst[t] = (uint8_t)(src[t] << shift);
    }
    memset(dst + k, 0, (size_t)(kpad - k));
    if (wide)
        for (int64_t t = 0; t < kpad; t++)
            wide[t] = dst[t];
    return sum;
}
