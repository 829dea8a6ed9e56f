/* Which code paths this CPU can run (checked once, at run time; nothing is built with -march). */
#include "soniq_cpu.h"

int soniq_cpu_has(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case SONIQ_SCALAR:
        return 1;
    case SONIQ_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case SONIQ_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512dq")
               && __builtin_cpu_supports("avx512vpopcntdq")
               && __builtin_cpu_supports("avx512vnni");
    case SONIQ_FEATURE_VBMI:    /* not a code path: the avx512 path's 64-entry lut tables */
        return soniq_cpu_has(SONIQ_AVX512) && __builtin_cpu_supports("avx512vbmi");
    default:
        return 0;
    }
}
