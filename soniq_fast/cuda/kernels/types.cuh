// Fixed-width names for kernel code. NVRTC ships no <stdint.h>, so spell them out.
#pragma once

typedef unsigned char u8;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long long u64;
