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
    /// Each row's length when the rows are histories of different lengths sorted longest first
    /// (PyTorch's packed sequence), or `nil` when every row runs all `L` steps. Step `t` then
    /// computes only the rows longer than `t`; the outputs past a row's length are 0 and no
    /// gradient flows through them, so every output within a row's length, and every gradient
    /// when the output gradient past the lengths is 0, equals that of the full recurrence.
    public var lengths: [Int]?

    /// Checks `W_hh`, `b_hh` and the lengths against the projections' `[B, L, 3H]`.
    /// - Precondition: shapes as documented on each property, lengths in `0...L` and
    ///   non-increasing; the message names what is wrong.
    public init(inputProjection: Tensor, hiddenWeight: Tensor, hiddenBias: Tensor? = nil, lengths: [Int]? = nil) {
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
      if let lengths {
        precondition(
          lengths.count == inputProjection.shape[0] && lengths.allSatisfy({ (0...inputProjection.shape[1]).contains($0) })
            && zip(lengths, lengths.dropFirst()).allSatisfy({ $0 >= $1 }),
          "GRURecurrence: lengths \(lengths) must be one per row of \(inputProjection.shape), in 0...L and longest first")
      }
      (self.inputProjection, self.hiddenWeight, self.hiddenBias) = (inputProjection, hiddenWeight, hiddenBias)
      self.lengths = lengths
    }

    /// For each step `t`, how many rows (a prefix, the rows being longest first) it computes.
    var activeRows: [Int] {
      let (batch, length, _) = dimensions
      guard let lengths else { return Array(repeating: batch, count: length) }
      var active = [Int](repeating: 0, count: length)
      var rows = batch
      for t in 0..<length {
        while rows > 0 && lengths[rows - 1] <= t { rows -= 1 }
        active[t] = rows
      }
      return active
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
    let step = batch * hidden
    let bhh = inputs.hiddenBias ?? Tensor(zeros: [threeH])
    let gateRegion = saveForBackward ? length * step : step
    // Every entry is written by the step kernel before it is read, so nothing is zero-filled.
    var saved = [Float](unsafeUninitializedCapacity: 4 * gateRegion + length * step) { _, count in
      count = 4 * gateRegion + length * step
    }
    var hw = [Float](repeating: 0, count: batch * threeH)
    let xStride = length * threeH
    let active = inputs.activeRows
    FLOPCounter.addExponentials(threeH * active.reduce(0, +))  // two sigmoid gates and a tanh per unit and step
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
                let (rows, o) = (active[t], t * step)
                // Rows past their length output 0 (their gates are never read).
                if rows < batch { (h + o + rows * hidden).update(repeating: 0, count: (batch - rows) * hidden) }
                if rows == 0 { continue }
                for b in 0..<rows { (hwp.baseAddress! + b * threeH).update(from: bp.baseAddress!, count: threeH) }
                if t > 0 {
                  BLAS.gemm(
                    transposeA: false, transposeB: true, m: rows, n: threeH, k: hidden, alpha: 1, a: h + (t - 1) * step,
                    lda: hidden, b: wp.baseAddress!, ldb: hidden, beta: 1, c: hwp.baseAddress!, ldc: threeH)
                }
                let g = saveForBackward ? o : 0
                ssm_gru_forward_step(
                  xp.baseAddress! + t * threeH, xStride, hwp.baseAddress!, t > 0 ? h + o - step : nil, rows, hidden,
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
