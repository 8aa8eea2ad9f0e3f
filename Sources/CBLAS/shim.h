#ifndef SSMREC_CBLAS_SHIM_H
#define SSMREC_CBLAS_SHIM_H
// Debian's OpenBLAS cblas.h declares openblas_set_num_threads; lapacke.h comes from liblapacke-dev
// (Debian builds OpenBLAS without LAPACKE, so lapacke is linked separately).
#include <cblas.h>
#include <lapacke.h>
#endif
