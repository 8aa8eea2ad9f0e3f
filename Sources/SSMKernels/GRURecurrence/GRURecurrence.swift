import CKernels
import SSMTensor

/// The recurrence of a GRU layer, PyTorch's gate order (r, z, n), given the input projections of
/// every step:
///
///     a[t] = xw[t]                                 (W_ih·x_t + b_ih, computed beforehand)
///     c[t] = W_hh·h[t−1] + b_hh
///     r[t] = σ(a_r[t] + c_r[t]),   z[t] = σ(a_z[t] + c_z[t])
///     n[t] = tanh(a_n[t] + r[t] ∘ c_n[t])
///     h[t] = (1 − z[t]) ∘ n[t] + z[t] ∘ h[t−1],    h[−1] = 0
///
/// Each step is one `sgemm` for `h[t−1]·W_hhᵀ` and one SIMD pass over the gates (a C kernel with
/// AVX2/AVX-512 variants chosen at run time); the backward pass runs the steps in reverse and
/// forms `∂W_hh` as one product over all steps. A plain Double reference (`package` access)
/// backs the tests.
public enum GRURecurrence {
  /// The inputs of one recurrence, shapes checked at construction.
  public struct Inputs {
    /// The input projections `[B, L, 3H]`, gate order r, z, n, input biases included.
    public var inputProjection: Tensor
    /// `W_hh`, `[3H, H]`, rows in gate order r, z, n.
    public var hiddenWeight: Tensor
    /// `b_hh`, `[3H]`, or `nil` (no hidden bias).
    public var hiddenBias: Tensor?

    /// Checks `W_hh` and `b_hh` against the projections' `[B, L, 3H]`.
    /// - Precondition: shapes as documented on each property; the message names both shapes.
    public init(inputProjection: Tensor, hiddenWeight: Tensor, hiddenBias: Tensor? = nil) {
      precondition(
        inputProjection.rank == 3 && inputProjection.shape[2] % 3 == 0,
        "GRURecurrence: input projections must be [B, L, 3H], got \(inputProjection.shape)")
      let threeH = inputProjection.shape[2]
      precondition(
        hiddenWeight.shape == [threeH, threeH / 3],
        "GRURecurrence: W_hh \(hiddenWeight.shape) must be [3H, H] for projections \(inputProjection.shape)")
      if let hiddenBias {
        precondition(
          hiddenBias.shape == [threeH],
          "GRURecurrence: b_hh \(hiddenBias.shape) must be [3H] for projections \(inputProjection.shape)")
      }
      (self.inputProjection, self.hiddenWeight, self.hiddenBias) = (inputProjection, hiddenWeight, hiddenBias)
    }

    /// `(B, L, H)`.
    public var dimensions: (batch: Int, length: Int, hidden: Int) {
      (inputProjection.shape[0], inputProjection.shape[1], inputProjection.shape[2] / 3)
    }
  }

  /// What the forward pass keeps for the backward pass: r, z, n, `W_hn·h + b_hn` and h of every
  /// step, `[L, B, H]` each (5·B·L·H floats).
  public struct Saved: Sendable {
    let values: [Float]
  }

  /// The gradients of a recurrence's inputs.
  public struct Gradients {
    /// `∂/∂xw`, `[B, L, 3H]`.
    public var inputProjection: Tensor
    /// `∂/∂W_hh`, `[3H, H]`.
    public var hiddenWeight: Tensor
    /// `∂/∂b_hh`, `[3H]`, when the inputs have a hidden bias.
    public var hiddenBias: Tensor?
  }

  /// The hidden states `h`, `[B, L, H]`, and, when `saveForBackward`, what ``backward(outputGradient:_:saved:)``
  /// needs; without it only one step's gates are scratch (5× less memory).
  public static func forward(_ inputs: Inputs, saveForBackward: Bool) -> (output: Tensor, saved: Saved?) {
    let (batch, length, hidden) = inputs.dimensions
    let threeH = 3 * hidden
    FLOPCounter.addExponentials(threeH * batch * length)  // two sigmoid gates and a tanh per unit and step
    let step = batch * hidden
    let bhh = inputs.hiddenBias ?? Tensor(zeros: [threeH])
    let gateRegion = saveForBackward ? length * step : step
    // Every entry is written by the step kernel before it is read, so nothing is zero-filled.
    var saved = [Float](unsafeUninitializedCapacity: 4 * gateRegion + length * step) { _, count in
      count = 4 * gateRegion + length * step
    }
    var hw = [Float](repeating: 0, count: batch * threeH)
    let xStride = length * threeH
    inputs.inputProjection.withUnsafeBufferPointer { xp in
      inputs.hiddenWeight.withUnsafeBufferPointer { wp in
        bhh.withUnsafeBufferPointer { bp in
          saved.withUnsafeMutableBufferPointer { sp in
            hw.withUnsafeMutableBufferPointer { hwp in
              let base = sp.baseAddress!
              let (r, z, n, hn, h) = (
                base, base + gateRegion, base + 2 * gateRegion, base + 3 * gateRegion, base + 4 * gateRegion
              )
              for t in 0..<length {
                for b in 0..<batch { (hwp.baseAddress! + b * threeH).update(from: bp.baseAddress!, count: threeH) }
                if t > 0 {
                  BLAS.gemm(
                    transposeA: false, transposeB: true, m: batch, n: threeH, k: hidden, alpha: 1, a: h + (t - 1) * step,
                    lda: hidden, b: wp.baseAddress!, ldb: hidden, beta: 1, c: hwp.baseAddress!, ldc: threeH)
                }
                let o = t * step
                let g = saveForBackward ? o : 0
                ssm_gru_forward_step(
                  xp.baseAddress! + t * threeH, xStride, hwp.baseAddress!, t > 0 ? h + o - step : nil, batch, hidden,
                  r + g, z + g, n + g, hn + g, h + o)
              }
            }
          }
        }
      }
    }
    let output = Tensor(shape: [length, batch, hidden], scalars: Array(saved[(4 * gateRegion)...])).permuted([1, 0, 2])
    return (output, saveForBackward ? Saved(values: saved) : nil)
  }
}
