/* Bit-plane packing, portable reference: plane i, word w, bit t = bit i of src[64 w + t].
 * Codes past k and words past ceil(k / 64) are zero. dst is [bits][words]. */
#include <string.h>

#include "soniq_cpu.h"

int64_t soniq_pack_planes_scalar(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                                 int64_t words) {
    int64_t sum = 0;
    memset(dst, 0, sizeof(uint64_t) * (size_t)(bits * words));
    for (int64_t t = 0; t < k; t++) {
        unsigned code = src[t];
        sum += code;
        for (int i = 0; i < bits; i++)
            dst[i * words + t / 64] |= (uint64_t)((code >> i) & 1u) << (t % 64);
    }
    return sum;
}
