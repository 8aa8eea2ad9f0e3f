#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif
#include "kernels_table.h"
#include <stdatomic.h>
#include <unistd.h>

static int supported_level(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

// -1 until first use. Races are benign: every thread computes the same value.
static _Atomic int current_level = -1;

static const ssm_kernel_table *table_for(int level) {
  switch (level) {
  case 2: return &ssm_table_avx512;
  case 1: return &ssm_table_avx2;
  default: return &ssm_table_portable;
  }
}

static inline const ssm_kernel_table *table(void) {
  int level = atomic_load_explicit(&current_level, memory_order_relaxed);
  if (level < 0) {
    level = supported_level();
    atomic_store_explicit(&current_level, level, memory_order_relaxed);
  }
  return table_for(level);
}

int ssm_isa_supported(void) { return supported_level(); }

long ssm_available_processors(void) {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}
int ssm_isa_level(void) { table(); return atomic_load(&current_level); }
int ssm_isa_force(int level) {
  int best = supported_level();
  if (level > best) level = best;
  if (level < 0) level = best;
  atomic_store(&current_level, level);
  return level;
}

void ssm_unary(int op, const float *x, float *y, long n) { table()->unary(op, x, y, n); }
void ssm_unary_backward(int op, const float *x, const float *g, float *out, long n) {
  table()->unary_backward(op, x, g, out, n);
}
void ssm_binary(int op, const float *a, long sa, const float *b, long sb, float *y, long n) {
  table()->binary(op, a, sa, b, sb, y, n);
}
void ssm_clamp(const float *x, float lo, float hi, float *y, long n) { table()->clamp(x, lo, hi, y, n); }
void ssm_axpby(float alpha, const float *x, float beta, float *y, long n) {
  table()->axpby(alpha, x, beta, y, n);
}
void ssm_accumulate(float *acc, const float *x, long n) { table()->accumulate(acc, x, n); }
void ssm_max_accumulate(float *acc, int32_t *index, const float *x, int32_t position, long n) {
  table()->max_accumulate(acc, index, x, position, n);
}
double ssm_sum(const float *x, long n) { return table()->sum(x, n); }
double ssm_sum_squared_deviation(const float *x, float shift, long n) {
  return table()->sum_squared_deviation(x, shift, n);
}
void ssm_reduce_rows(int op, const float *x, long rows, long cols, float *out) {
  table()->reduce_rows(op, x, rows, cols, out);
}
void ssm_softmax_rows(const float *x, long rows, long cols, float *y) {
  table()->softmax_rows(x, rows, cols, y);
}
void ssm_log_softmax_rows(const float *x, long rows, long cols, float *y) {
  table()->log_softmax_rows(x, rows, cols, y);
}
double ssm_dot(const float *a, const float *b, long n) { return table()->dot(a, b, n); }
void ssm_layer_norm_rows(const float *x, const float *gamma, const float *beta, float eps, long rows,
                         long n, float *y, float *mean, float *rstd) {
  table()->layer_norm_rows(x, gamma, beta, eps, rows, n, y, mean, rstd);
}
void ssm_layer_norm_backward_rows(const float *x, const float *mean, const float *rstd,
                                  const float *gamma, const float *g, long rows, long n, float *dx,
                                  float *dgamma, float *dbeta) {
  table()->layer_norm_backward_rows(x, mean, rstd, gamma, g, rows, n, dx, dgamma, dbeta);
}
void ssm_softmax_backward_rows(const float *y, const float *g, long rows, long n, float *dx) {
  table()->softmax_backward_rows(y, g, rows, n, dx);
}

float ssm_masked_softmax_rows(float *x, const float *mask, long rows, long cols, long ld, long mask_ld) {
  return table()->masked_softmax_rows(x, mask, rows, cols, ld, mask_ld);
}

float ssm_max_rows(const float *x, long rows, long cols, long ld) { return table()->max_rows(x, rows, cols, ld); }

void ssm_row_norms(const float *x, long rows, long cols, long ld, float *out) { table()->row_norms(x, rows, cols, ld, out); }
void ssm_softmax_cross_entropy_rows(const float *logits, const int32_t *targets, long rows, long n,
                                    float scale, float *loss, float *grad) {
  table()->softmax_cross_entropy_rows(logits, targets, rows, n, scale, loss, grad);
}

void ssm_softmax_cross_entropy_block(const float *logits, const float *lse, const int32_t *targets, long rows,
                                     long n, long first_class, float scale, float *grad) {
  table()->softmax_cross_entropy_block(logits, lse, targets, rows, n, first_class, scale, grad);
}
void ssm_adam_update(float *p, const float *g, float *m, float *v, long n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, int decoupled, float bias_correction1,
                     float bias_correction2) {
  table()->adam_update(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, decoupled,
                       bias_correction1, bias_correction2);
}
long ssm_scan_lanes(void) { return table()->scan_lanes(); }
long ssm_scan_forward_scratch(long length, long state) {
  return table()->scan_forward_scratch(length, state);
}
long ssm_scan_backward_scratch(long length, long state) {
  return table()->scan_backward_scratch(length, state);
}
void ssm_scan_forward(const ssm_scan_args *args, long begin, long end, float *scratch, float *y,
                      float *last_state) {
  table()->scan_forward(args, begin, end, scratch, y, last_state);
}
void ssm_scan_backward(const ssm_scan_args *args, const float *dy, long begin, long end,
                       float *scratch, const ssm_scan_grads *grads) {
  table()->scan_backward(args, dy, begin, end, scratch, grads);
}
void ssm_conv_forward(const float *x, const float *weight_t, const float *bias, const int32_t *seq_idx,
                      long begin, long end, long L, long C, long K, float *y) {
  table()->conv_forward(x, weight_t, bias, seq_idx, begin, end, L, C, K, y);
}
void ssm_ssd_decay_mask(const float *cs, const int32_t *seq, const float *scores, long q, long ld, float *L,
                        float *M) {
  table()->ssd_decay_mask(cs, seq, scores, q, ld, L, M);
}
void ssm_ssd_scores_backward(const float *dM, const float *L, const float *scores, long q, long ld, float *dG,
                             float *dcs) {
  table()->ssd_scores_backward(dM, L, scores, q, ld, dG, dcs);
}
void ssm_row_dots(const float *a, long lda, const float *b, long ldb, long rows, long n, float *out) {
  table()->row_dots(a, lda, b, ldb, rows, n, out);
}
void ssm_gemm_short_n(long m, long n, long k, float alpha, const float *a, long lda, const float *bt, long ldbt,
                      float beta, float *c, long ldc) {
  table()->gemm_short_n(m, n, k, alpha, a, lda, bt, ldbt, beta, c, ldc);
}
void ssm_gemm_short_m_transposed_a(long m, long n, long k, float alpha, const float *a, long lda, const float *b,
                                   long ldb, float beta, float *c, long ldc) {
  table()->gemm_short_m_transposed_a(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void ssm_gemm_panel(int transpose_a, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
                    long ldb, float beta, float *c, long ldc) {
  table()->gemm_panel(transpose_a, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void ssm_conv_backward(const float *x, const float *weight_t, const int32_t *seq_idx, const float *g,
                       long begin, long end, long L, long C, long K, float *dx, float *dweight_t,
                       float *dbias) {
  table()->conv_backward(x, weight_t, seq_idx, g, begin, end, L, C, K, dx, dweight_t, dbias);
}
void ssm_gru_forward_step(const float *xw, long xw_stride, const float *hw, const float *h_prev, long rows,
                         long H, float *r, float *z, float *n, float *hn, float *h) {
  table()->gru_forward_step(xw, xw_stride, hw, h_prev, rows, H, r, z, n, hn, h);
}
void ssm_gru_backward_step(const float *dh, const float *r, const float *z, const float *n, const float *hn,
                          const float *h_prev, long rows, long H, float *dxw, long dxw_stride, float *dhw,
                          float *dh_prev) {
  table()->gru_backward_step(dh, r, z, n, hn, h_prev, rows, H, dxw, dxw_stride, dhw, dh_prev);
}
void ssm_dropout(uint64_t key, float probability, float scale, const float *x, float *y, float *mask,
                 long begin, long end) {
  double t = (double)probability * 4294967296.0;
  uint32_t threshold = t >= 4294967295.0 ? 4294967295u : (uint32_t)t;
  table()->dropout(key, threshold, scale, x, y, mask, begin, end);
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

unsigned long ssm_subnormals_off(void) {
#if defined(__x86_64__) || defined(__i386__)
  const unsigned saved = __builtin_ia32_stmxcsr();
  __builtin_ia32_ldmxcsr(saved | 0x8040);  // FTZ (bit 15) and DAZ (bit 6)
  return saved;
#elif defined(__aarch64__)
  unsigned long saved;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
  __asm__ __volatile__("msr fpcr, %0" ::"r"(saved | (1UL << 24)));  // FZ
  return saved;
#else
  return 0;
#endif
}

unsigned long ssm_fp_mode(void) {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_ia32_stmxcsr();
#elif defined(__aarch64__)
  unsigned long mode;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(mode));
  return mode;
#else
  return 0;
#endif
}

void ssm_subnormals_restore(unsigned long saved) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_ldmxcsr((unsigned)saved);
#elif defined(__aarch64__)
  __asm__ __volatile__("msr fpcr, %0" ::"r"(saved));
#else
  (void)saved;
#endif
}

void ssm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int ssm_release_free_memory(void) {
#if defined(__GLIBC__)
  return malloc_trim(0);
#else
  return 0;
#endif
}

int ssm_configure_allocator(void) {
#if defined(__GLIBC__)
  // Every tensor comes from the heap instead of a fresh mmap (a threshold alone stops at glibc's
  // 32 MB cap, and a step's logits or padded projections are larger), and freed heap memory is
  // kept for reuse instead of trimmed: a training step allocates the same buffer sizes every
  // time, and re-faulting and zeroing their pages cost more than the math. Trimming is off (-1)
  // rather than at a threshold: a step of several GB frees more than any threshold at the top of
  // the heap, and the next step faults it all in again; ssm_release_free_memory trims on request.
  int ok = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  ok &= mallopt(M_MMAP_MAX, 0);
  ok &= mallopt(M_TRIM_THRESHOLD, -1);
  return ok;
#else
  return 0;
#endif
}
