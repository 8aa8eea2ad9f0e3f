// Portable variant: baseline x86-64 (SSE2) or whatever the target's default is.
#define SSM_ISA_NAME portable
#define SSM_LANES 4
#include "kernels_body.inc"
