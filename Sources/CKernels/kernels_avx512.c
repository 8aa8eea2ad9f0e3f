#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SSM_AVX512_SCALEF 1
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#define SSM_ISA_NAME avx512
#define SSM_LANES 16
#include "kernels_body.inc"
#pragma clang attribute pop
#else
#include "kernels_table.h"
const ssm_kernel_table ssm_table_avx512 = {0};
#endif
