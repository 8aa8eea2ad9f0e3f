#ifndef SSMREC_CKERNELS_H
#define SSMREC_CKERNELS_H

// Hot loops of SSMRec in C. Every kernel is compiled three times (portable, AVX2+FMA, AVX-512)
// from one body (kernels_body.inc) and the widest variant the CPU supports is chosen at run time,
// because SwiftPM cannot pass -mavx2 to a dependency (it would need unsafe build flags). Swift
// code splits large work across cores and calls these on disjoint ranges, so every function here
// is single-threaded and pure.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Elementwise functions y = f(x).
typedef enum {
  SSM_UNARY_EXP = 0,
  SSM_UNARY_LOG,
  SSM_UNARY_LOG1P,
  SSM_UNARY_EXPM1,
  SSM_UNARY_SQRT,
  SSM_UNARY_RSQRT,
  SSM_UNARY_TANH,
  SSM_UNARY_SIGMOID,
  SSM_UNARY_SILU,
  SSM_UNARY_SOFTPLUS,
  SSM_UNARY_GELU,
  SSM_UNARY_RELU,
  SSM_UNARY_ABS,
  SSM_UNARY_NEG,
  SSM_UNARY_SQUARE,
  SSM_UNARY_RECIPROCAL,
  SSM_UNARY_COUNT
} ssm_unary_op;

/// Elementwise binary operations y = a (op) b.
typedef enum {
  SSM_BINARY_ADD = 0,
  SSM_BINARY_SUB,
  SSM_BINARY_MUL,
  SSM_BINARY_DIV,
  SSM_BINARY_MAX,
  SSM_BINARY_MIN,
  SSM_BINARY_COUNT
} ssm_binary_op;

/// Row reductions along the last axis.
typedef enum {
  SSM_REDUCE_SUM = 0,
  SSM_REDUCE_MAX,
  SSM_REDUCE_LOGSUMEXP,
} ssm_reduce_op;

/// y[i] = f(x[i]); x and y may alias exactly.
void ssm_unary(int op, const float *x, float *y, long n);
/// out[i] = g[i] * f'(x[i]) (the pullback of `ssm_unary`); out may alias g or x.
void ssm_unary_backward(int op, const float *x, const float *g, float *out, long n);
/// y[i] = a[i*sa] (op) b[i*sb] with sa, sb in {0, 1}; y may alias a or b when its stride is 1.
void ssm_binary(int op, const float *a, long sa, const float *b, long sb, float *y, long n);
/// y[i] = min(max(x[i], lo), hi).
void ssm_clamp(const float *x, float lo, float hi, float *y, long n);
/// y[i] = alpha * x[i] + beta * y[i] (beta == 0 ignores the old y).
void ssm_axpby(float alpha, const float *x, float beta, float *y, long n);
/// acc[i] += x[i].
void ssm_accumulate(float *acc, const float *x, long n);
/// Where x[i] > acc[i]: acc[i] = x[i], index[i] = position (the first maximum wins).
void ssm_max_accumulate(float *acc, int32_t *index, const float *x, int32_t position, long n);
/// Σ x[i], accumulated in float blocks and double across blocks.
double ssm_sum(const float *x, long n);
/// Σ (x[i] − shift)².
double ssm_sum_squared_deviation(const float *x, float shift, long n);
/// out[r] = reduce(x[r, 0..<cols]) for each row.
void ssm_reduce_rows(int op, const float *x, long rows, long cols, float *out);
/// y[r, :] = softmax(x[r, :]) or log_softmax, numerically stable; y may alias x.
void ssm_softmax_rows(const float *x, long rows, long cols, float *y);
void ssm_log_softmax_rows(const float *x, long rows, long cols, float *y);

/// Σ a[i]·b[i] (float blocks, double across blocks).
double ssm_dot(const float *a, const float *b, long n);
/// Layer normalisation of each row of x [rows, n]: y = (x − μ)/√(σ² + eps)·γ + β, biased σ²;
/// writes the per-row mean and 1/√(σ² + eps) for the backward pass.
void ssm_layer_norm_rows(const float *x, const float *gamma, const float *beta, float eps, long rows,
                         long n, float *y, float *mean, float *rstd);
/// The backward of ssm_layer_norm_rows: writes dx, ADDS into dgamma and dbeta.
void ssm_layer_norm_backward_rows(const float *x, const float *mean, const float *rstd,
                                  const float *gamma, const float *g, long rows, long n, float *dx,
                                  float *dgamma, float *dbeta);
/// dx = y∘(g − ⟨g, y⟩) per row, the backward of a row softmax y.
void ssm_softmax_backward_rows(const float *y, const float *g, long rows, long n, float *dx);
/// In place, rows `ld` apart: x[r][j] = softmax over j < cols of x[r][j] + mask[r][j] (mask rows
/// `mask_ld` apart). Returns the smallest of the rows' largest masked scores.
float ssm_masked_softmax_rows(float *x, const float *mask, long rows, long cols, long ld, long mask_ld);
/// The largest entry of rows × cols floats, rows `ld` apart (−∞ when there are none).
float ssm_max_rows(const float *x, long rows, long cols, long ld);
/// out[r] = the Euclidean norm of row r of rows × cols floats, rows `ld` apart.
void ssm_row_norms(const float *x, long rows, long cols, long ld, float *out);
/// Per row: loss[r] = logsumexp(x_r) − x_r[target_r] and grad_r = scale·(softmax(x_r) − onehot).
void ssm_softmax_cross_entropy_rows(const float *logits, const int32_t *targets, long rows, long n,
                                    float scale, float *loss, float *grad);
/// Per row of a block of logits for the classes first_class..<first_class + n, given the row's
/// logsumexp over every class: grad = scale·(softmax − onehot(target)) on the block (the
/// second pass of a cross-entropy blocked over classes).
void ssm_softmax_cross_entropy_block(const float *logits, const float *lse, const int32_t *targets, long rows,
                                     long n, long first_class, float scale, float *grad);
/// One Adam (decoupled = 0, L2 decay) or AdamW (decoupled = 1) step, PyTorch semantics.
void ssm_adam_update(float *p, const float *g, float *m, float *v, long n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, int decoupled, float bias_correction1,
                     float bias_correction2);

/// Inputs of the selective scan (Mamba-1), all row-major Float32:
/// u, delta, z: [B, L, E]; A_t: A transposed to [N, E]; B, C: [B, L, N]; D, delta_bias: [E].
/// D, z and delta_bias may be NULL. With softplus, Δ = softplus(delta + delta_bias), else
/// Δ = delta + delta_bias. seq: segment ids [B, L] of packed sequences, or NULL; the state
/// restarts from zero wherever the id changes from one step to the next.
typedef struct {
  const float *u, *delta, *A_t, *B, *C, *D, *z, *delta_bias;
  int softplus;
  long batch, length, channels, state;
  const int32_t *seq;
} ssm_scan_args;

/// Gradient outputs of the selective scan. du, ddelta (w.r.t. the raw delta) and dz are written;
/// dA_t ([N, E]), dB, dC ([B, L, N]), dD and ddelta_bias ([E]) are accumulated (+=). dz, dD and
/// ddelta_bias may be NULL when the corresponding input is absent.
typedef struct {
  float *du, *ddelta, *dz;
  float *dA_t;
  float *dB, *dC;
  float *dD, *ddelta_bias;
} ssm_scan_grads;

/// Channels per block of the scan kernels (the SIMD width in floats of the variant in use).
long ssm_scan_lanes(void);
/// Floats of scratch one worker needs for ssm_scan_forward / ssm_scan_backward.
long ssm_scan_forward_scratch(long length, long state);
long ssm_scan_backward_scratch(long length, long state);
/// Forward scan over tasks [begin, end), a task being (batch element, block of
/// ssm_scan_lanes() channels) in row-major order. scratch: ssm_scan_forward_scratch floats. Writes y [B, L, E]
/// (with D·u and the silu(z) gate applied) and, if last_state is not NULL, the final state [B, E, N] (with segment ids, that of the last packed sequence of each row).
void ssm_scan_forward(const ssm_scan_args *args, long begin, long end, float *scratch, float *y,
                      float *last_state);
/// Backward scan over tasks [begin, end) given dy [B, L, E]; recomputes the states per block,
/// one packed sequence at a time. scratch: ssm_scan_backward_scratch(longest sequence, N) floats,
/// the longest sequence being L without segment ids.
void ssm_scan_backward(const ssm_scan_args *args, const float *dy, long begin, long end,
                       float *scratch, const ssm_scan_grads *grads);
/// Causal depthwise convolution of batch elements [begin, end); x, y [B, L, C]; weight_t [K, C];
/// bias [C] or NULL; seq_idx [B, L] or NULL (taps from another segment count as zero).
void ssm_conv_forward(const float *x, const float *weight_t, const float *bias, const int32_t *seq_idx,
                      long begin, long end, long L, long C, long K, float *y);
/// Its adjoint: writes dx; accumulates dweight_t [K, C] and dbias [C] (dbias may be NULL).
void ssm_conv_backward(const float *x, const float *weight_t, const int32_t *seq_idx, const float *g,
                       long begin, long end, long L, long C, long K, float *dx, float *dweight_t,
                       float *dbias);

/// Chunked SSD's decay mask: L[l·ld + s] = exp(cs[l] − cs[s]) when s ≤ l and seq[s] == seq[l],
/// else 0, for l, s < q. With M non-NULL also the masked scores M = scores ∘ L, 0 wherever L is 0
/// (selected, so ∞ or NaN in a masked score stays out); scores has row stride ld too.
void ssm_ssd_decay_mask(const float *cs, const int32_t *seq, const float *scores, long q, long ld, float *L,
                        float *M);

/// Backward of M = scores ∘ L over the lower triangle (row stride ld, l, s < q), where L is the
/// decay mask exp(cs[l] − cs[s]): dG[l, s] += dM·L and, with dLL = dM·L·scores,
/// dcs[l] += Σ_s dLL[l, s], dcs[s] −= Σ_l dLL[l, s]. Entries whose L is 0 contribute nothing.
void ssm_ssd_scores_backward(const float *dM, const float *L, const float *scores, long q, long ld, float *dG,
                             float *dcs);

/// out[r] = Σ_i a[r·lda + i]·b[r·ldb + i] for r < rows, i < n (Float32 sums, summed in vectors).
void ssm_row_dots(const float *a, long lda, const float *b, long ldb, long rows, long n, float *out);

/// The longest short dimension the ssm_gemm_short_* kernels take.
#define SSM_SHORT_DIMENSION_MAX 8
/// C = alpha·A·btᵀ + beta·C for A [m, k] (row stride lda), bt [n, k] (row stride ldbt), C [m, n]
/// (row stride ldc), n ≤ SSM_SHORT_DIMENSION_MAX; beta == 0 ignores C's old contents.
void ssm_gemm_short_n(long m, long n, long k, float alpha, const float *a, long lda, const float *bt, long ldbt,
                      float beta, float *c, long ldc);
/// C = alpha·Aᵀ·B + beta·C for A stored [k, m] (row stride lda), B [k, n], m ≤ SSM_SHORT_DIMENSION_MAX.
void ssm_gemm_short_m_transposed_a(long m, long n, long k, float alpha, const float *a, long lda, const float *b,
                                   long ldb, float beta, float *c, long ldc);

/// C = alpha·op(A)·B + beta·C for B [k, n] (row stride ldb) and op(A) [m, k]: A stored [m, k]
/// (transpose_a 0) or [k, m] (transpose_a 1), row stride lda; C [m, n], row stride ldc. For a
/// narrow B (n up to a few hundred) with a short k or a short m, where it reads op(A) in place
/// instead of packing it as sgemm does; beta == 0 ignores C's old contents.
void ssm_gemm_panel(int transpose_a, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
                    long ldb, float beta, float *c, long ldc);

/// One GRU time step's gates (order r, z, n) for `rows` sequences: xw [rows, 3H] with row stride
/// xw_stride, hw [rows, 3H] (h_{t−1}·W_hhᵀ + b_hh), h_prev [rows, H] or NULL; writes r, z, n, hn
/// and h, each [rows, H].
void ssm_gru_forward_step(const float *xw, long xw_stride, const float *hw, const float *h_prev, long rows,
                         long H, float *r, float *z, float *n, float *hn, float *h);
/// The backward of one GRU step given dh [rows, H]: writes dxw (row stride dxw_stride), dhw
/// [rows, 3H] and the direct part of dh_{t−1} (z∘dh).
void ssm_gru_backward_step(const float *dh, const float *r, const float *z, const float *n, const float *hn,
                          const float *h_prev, long rows, long H, float *dxw, long dxw_stride, float *dhw,
                          float *dh_prev);

/// Inverted dropout of elements [begin, end): element i is kept (mask[i] = scale, else 0) when
/// a 32-bit counter-based hash of (key, i) is ≥ probability·2³²; writes mask and y = x∘mask.
/// Any split of the range gives the same result.
void ssm_dropout(uint64_t key, float probability, float scale, const float *x, float *y, float *mask,
                 long begin, long end);

/// A spin-wait hint to the processor (x86 `pause`, Arm `yield`).
void ssm_cpu_relax(void);
/// Turns on flush-to-zero and denormals-are-zero on the calling thread (x86 MXCSR FTZ and DAZ,
/// Arm FPCR FZ) and returns the previous mode for ssm_subnormals_restore.
unsigned long ssm_subnormals_off(void);
/// Restores the floating-point mode ssm_subnormals_off returned, on the same thread.
void ssm_subnormals_restore(unsigned long saved);
/// The calling thread's floating-point mode (MXCSR or FPCR), for ssm_subnormals_restore on
/// another thread: how a worker pool runs a region in its caller's mode.
unsigned long ssm_fp_mode(void);
/// Returns freed heap memory to the system (glibc's malloc_trim); 1 if any was released.
int ssm_release_free_memory(void);
/// Tunes glibc malloc for large, repeatedly allocated tensors (no-op elsewhere); returns 1 if
/// applied. Only `AllocatorTuning.applyForTraining()` calls it, when an application asks.
int ssm_configure_allocator(void);

/// The instruction-set level in use: 0 portable, 1 AVX2+FMA, 2 AVX-512.
int ssm_isa_level(void);
/// The widest level this CPU supports.
int ssm_isa_supported(void);

/// The processors this process may run on: its CPU affinity mask's size on Linux (so `taskset`
/// and container CPU sets count), else the online processor count; at least 1.
long ssm_available_processors(void);
/// Forces a level (clamped to what the CPU supports); returns the level now in use. For tests.
int ssm_isa_force(int level);

#ifdef __cplusplus
}
#endif
#endif
