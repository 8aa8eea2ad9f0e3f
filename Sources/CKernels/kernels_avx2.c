#if defined(__x86_64__) || defined(__i386__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define SSM_ISA_NAME avx2
#define SSM_LANES 8
#include "kernels_body.inc"
#pragma clang attribute pop
#else
#include "kernels_table.h"
const ssm_kernel_table ssm_table_avx2 = {0};
#endif
