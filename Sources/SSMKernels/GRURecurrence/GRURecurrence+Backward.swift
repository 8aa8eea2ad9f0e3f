import CKernels
import SSMTensor

extension GRURecurrence {
  /// The gradients of the recurrence's inputs given `∂L/∂h`, `[B, L, H]`, and what
  /// ``forward(_:saveForBackward:)`` saved.
  ///
  /// Backpropagation through time: per step, one SIMD pass over the gates and one product
  /// `dh[t−1] = z∘dh + ∂c[t]·W_hh`; then `∂W_hh = Σ_{t≥1} ∂c[t]ᵀ·h[t−1]` as one product over all
  /// steps and `∂b_hh = Σ_t ∂c[t]` as one column sum.
  ///
  /// Runs with subnormals flushed to zero: over a few hundred steps the gradient carried back
  /// through `z` and `W_hh` decays into the subnormal range, where every operation on it (here
  /// and in the products that read `∂xw`) took a microcode assist; at B = 32, L = 500 the
  /// backward took 896 ms instead of ≈ 100.
  public static func backward(outputGradient g: Tensor, _ inputs: Inputs, saved: Saved) -> Gradients {
    withSubnormalsFlushed { backwardThroughTime(outputGradient: g, inputs, saved: saved) }
  }

  private static func backwardThroughTime(outputGradient g: Tensor, _ inputs: Inputs, saved: Saved) -> Gradients {
    let (batch, length, hidden) = inputs.dimensions
    precondition(
      g.shape == [batch, length, hidden], "GRURecurrence.backward: gradient \(g.shape) must be [\(batch), \(length), \(hidden)]")
    precondition(saved.values.count == 5 * length * batch * hidden, "GRURecurrence.backward: saved state of another recurrence")
    let threeH = 3 * hidden
    let step = batch * hidden
    let xStride = length * threeH
    // The backward step writes every entry of both.
    var dxw = Tensor(uninitializedShape: [batch, length, threeH])
    var dW = Tensor(zeros: [threeH, hidden])
    var dh = [Float](repeating: 0, count: step)
    var carry = [Float](repeating: 0, count: step)
    // ∂c for every step, [L, B, 3H]: the weight and bias gradients are then one long product and
    // one column sum after the loop instead of a small product per step.
    var dhwAll = Tensor(uninitializedShape: [length * batch, threeH])
    let active = inputs.activeRows
    saved.values.withUnsafeBufferPointer { sp in
      let base = sp.baseAddress!
      let (r, z, n, hn, h) = (
        base, base + length * step, base + 2 * length * step, base + 3 * length * step, base + 4 * length * step
      )
      g.withUnsafeBufferPointer { gp in
        inputs.hiddenWeight.withUnsafeBufferPointer { wp in
          dxw.withUnsafeMutableBufferPointer { dxp in
            dhwAll.withUnsafeMutableBufferPointer { dhwp in
              for t in stride(from: length - 1, through: 0, by: -1) {
                let (rows, o) = (active[t], t * step)
                let dhw = dhwp.baseAddress! + t * batch * threeH
                // Rows past their length: no gradient into their inputs or the hidden weights.
                if rows < batch {
                  (dhw + rows * threeH).update(repeating: 0, count: (batch - rows) * threeH)
                  for b in rows..<batch { (dxp.baseAddress! + b * xStride + t * threeH).update(repeating: 0, count: threeH) }
                }
                dh.withUnsafeMutableBufferPointer { dhp in
                  for b in 0..<rows {
                    ssm_accumulate(dhp.baseAddress! + b * hidden, gp.baseAddress! + (b * length + t) * hidden, hidden)
                  }
                  carry.withUnsafeMutableBufferPointer { cp in
                    // A row that ends at this step starts the reverse sweep with nothing carried.
                    if rows < batch { (cp.baseAddress! + rows * hidden).update(repeating: 0, count: (batch - rows) * hidden) }
                    if rows == 0 { return }
                    ssm_gru_backward_step(
                      dhp.baseAddress!, r + o, z + o, n + o, hn + o, t > 0 ? h + o - step : nil, rows, hidden,
                      dxp.baseAddress! + t * threeH, xStride, dhw, cp.baseAddress!)
                    BLAS.gemm(
                      transposeA: false, transposeB: false, m: rows, n: hidden, k: threeH, alpha: 1, a: dhw, lda: threeH,
                      b: wp.baseAddress!, ldb: hidden, beta: 1, c: cp.baseAddress!, ldc: hidden)
                  }
                }
                swap(&dh, &carry)
              }
              // Rows t ≥ 1 of ∂c against rows t ≤ L−2 of h.
              if length > 1 {
                dW.withUnsafeMutableBufferPointer { dwp in
                  BLAS.gemm(
                    transposeA: true, transposeB: false, m: threeH, n: hidden, k: (length - 1) * batch, alpha: 1,
                    a: dhwp.baseAddress! + batch * threeH, lda: threeH, b: h, ldb: hidden, beta: 0, c: dwp.baseAddress!,
                    ldc: hidden)
                }
              }
            }
          }
        }
      }
    }
    return Gradients(
      inputProjection: dxw, hiddenWeight: dW, hiddenBias: inputs.hiddenBias == nil ? nil : dhwAll.sum(alongAxis: 0))
  }
}
