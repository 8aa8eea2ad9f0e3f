#ifndef SSMREC_KERNELS_TABLE_H
#define SSMREC_KERNELS_TABLE_H
#include "include/CKernels.h"

// One table of entry points per instruction-set variant; dispatch.c picks one at run time.
typedef struct {
  void (*unary)(int, const float *, float *, long);
  void (*unary_backward)(int, const float *, const float *, float *, long);
  void (*binary)(int, const float *, long, const float *, long, float *, long);
  void (*clamp)(const float *, float, float, float *, long);
  void (*axpby)(float, const float *, float, float *, long);
  void (*accumulate)(float *, const float *, long);
  void (*max_accumulate)(float *, int32_t *, const float *, int32_t, long);
  double (*sum)(const float *, long);
  double (*sum_squared_deviation)(const float *, float, long);
  void (*reduce_rows)(int, const float *, long, long, float *);
  void (*softmax_rows)(const float *, long, long, float *);
  void (*log_softmax_rows)(const float *, long, long, float *);
  double (*dot)(const float *, const float *, long);
  void (*layer_norm_rows)(const float *, const float *, const float *, float, long, long, float *,
                          float *, float *);
  void (*layer_norm_backward_rows)(const float *, const float *, const float *, const float *,
                                   const float *, long, long, float *, float *, float *);
  void (*softmax_backward_rows)(const float *, const float *, long, long, float *);
  float (*masked_softmax_rows)(float *, const float *, long, long, long, long);
  float (*max_rows)(const float *, long, long, long);
  void (*row_norms)(const float *, long, long, long, float *);
  void (*softmax_cross_entropy_rows)(const float *, const int32_t *, long, long, float, float *,
                                     float *);
  void (*softmax_cross_entropy_block)(const float *, const float *, const int32_t *, long, long, long, float,
                                      float *);
  void (*adam_update)(float *, const float *, float *, float *, long, float, float, float, float,
                      float, int, float, float);
  void (*scan_forward)(const ssm_scan_args *, long, long, float *, float *, float *);
  void (*scan_backward)(const ssm_scan_args *, const float *, long, long, float *, const ssm_scan_grads *);
  long (*scan_lanes)(void);
  long (*scan_forward_scratch)(long, long);
  long (*scan_backward_scratch)(long, long);
  void (*conv_forward)(const float *, const float *, const float *, const int32_t *, long, long, long,
                       long, long, float *);
  void (*conv_backward)(const float *, const float *, const int32_t *, const float *, long, long, long,
                        long, long, float *, float *, float *);
  void (*gru_forward_step)(const float *, long, const float *, const float *, long, long, float *, float *,
                           float *, float *, float *);
  void (*gru_backward_step)(const float *, const float *, const float *, const float *, const float *,
                            const float *, long, long, float *, long, float *, float *);
  void (*ssd_decay_mask)(const float *, const int32_t *, const float *, long, long, float *, float *);
  void (*ssd_scores_backward)(const float *, const float *, const float *, long, long, float *, float *);
  void (*row_dots)(const float *, long, const float *, long, long, long, float *);
  void (*gemm_short_n)(long, long, long, float, const float *, long, const float *, long, float, float *, long);
  void (*gemm_short_m_transposed_a)(long, long, long, float, const float *, long, const float *, long, float,
                                    float *, long);
  void (*gemm_panel)(int, long, long, long, float, const float *, long, const float *, long, float, float *, long);
  void (*dropout)(uint64_t, uint32_t, float, const float *, float *, float *, long, long);
} ssm_kernel_table;

extern const ssm_kernel_table ssm_table_portable;
extern const ssm_kernel_table ssm_table_avx2;
extern const ssm_kernel_table ssm_table_avx512;
#endif
