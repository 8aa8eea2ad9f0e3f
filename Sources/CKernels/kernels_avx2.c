#if defined(__x86_64__) || defined(__i386__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define SSM_ISA_NAME avx2
// Two 8-float registers per scan block: the constants of the exponential and the broadcast B, C
// values are then shared by twice the channels (measured 15–30 % faster than one register).
#define SSM_LANES 16
#pragma clang diagnostic ignored "-Wpsabi"
#include "kernels_body.inc"
#pragma clang attribute pop
#else
#include "kernels_table.h"
const ssm_kernel_table ssm_table_avx2 = {0};
#endif
