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
/// Each step is one product `h[t−1]·W_hhᵀ` (with `W_hhᵀ` formed once per pass) and one SIMD pass over the gates (a C kernel with
/// AVX2/AVX-512 variants chosen at run time), each worker running all steps of its own band of
/// rows; the backward pass runs the steps in reverse and forms `∂W_hh` as one product over all
/// steps. A plain Double reference (`package` access) backs the tests.
public enum GRURecurrence {
  /// The inputs of one recurrence, shapes checked at construction.
  ///
  /// The projections come in one of two layouts: padded, `[B, L, 3H]` (optionally with each
  /// row's `lengths`), or packed time-major, `[T, 3H]` with ``stepSizes`` (PyTorch's
  /// `PackedSequence`): the rows of step 0, then those of step 1, and so on, each step's rows
  /// being the histories longer than it, longest first. The outputs and gradients follow the
  /// inputs' layout.
  public struct Inputs {
    /// The input projections `[B, L, 3H]`, or `[T, 3H]` packed, gate order r, z, n, input biases
    /// included.
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
    /// For packed time-major projections `[T, 3H]`, the number of rows at each step
    /// (non-increasing, summing to T); `nil` for the padded layout. Step `t`'s rows are the first
    /// `stepSizes[t]` histories, which the padded layout with those histories' lengths computes
    /// the same way, so both give the same states and gradients; no padding is stored.
    public var stepSizes: [Int]?

    /// Checks `W_hh`, `b_hh` and the lengths against the projections' `[B, L, 3H]`.
    /// - Precondition: shapes as documented on each property, lengths in `0...L` and
    ///   non-increasing; the message names what is wrong.
    public init(inputProjection: Tensor, hiddenWeight: Tensor, hiddenBias: Tensor? = nil, lengths: [Int]? = nil) {
      precondition(
        inputProjection.rank == 3 && inputProjection.shape[2] % 3 == 0,
        "GRURecurrence: input projections must be [B, L, 3H], got \(inputProjection.shape)")
      if let lengths {
        precondition(
          lengths.count == inputProjection.shape[0] && lengths.allSatisfy({ (0...inputProjection.shape[1]).contains($0) })
            && zip(lengths, lengths.dropFirst()).allSatisfy({ $0 >= $1 }),
          "GRURecurrence: lengths \(lengths) must be one per row of \(inputProjection.shape), in 0...L and longest first")
      }
      self.init(checking: inputProjection, hiddenWeight, hiddenBias)
      self.lengths = lengths
    }

    /// Packed time-major projections `[T, 3H]` whose step `t` has `stepSizes[t]` rows.
    /// - Precondition: `stepSizes` positive, non-increasing and summing to T; `W_hh` and `b_hh`
    ///   as documented on each property.
    public init(packedInputProjection: Tensor, stepSizes: [Int], hiddenWeight: Tensor, hiddenBias: Tensor? = nil) {
      precondition(
        packedInputProjection.rank == 2 && packedInputProjection.shape[1] % 3 == 0,
        "GRURecurrence: packed input projections must be [T, 3H], got \(packedInputProjection.shape)")
      precondition(
        !stepSizes.isEmpty && stepSizes.allSatisfy({ $0 > 0 }) && zip(stepSizes, stepSizes.dropFirst()).allSatisfy({ $0 >= $1 })
          && stepSizes.reduce(0, +) == packedInputProjection.shape[0],
        "GRURecurrence: step sizes \(stepSizes) must be positive, non-increasing and sum to T = \(packedInputProjection.shape[0])"
      )
      self.init(checking: packedInputProjection, hiddenWeight, hiddenBias)
      self.stepSizes = stepSizes
    }

    private init(checking inputProjection: Tensor, _ hiddenWeight: Tensor, _ hiddenBias: Tensor?) {
      let threeH = inputProjection.shape[inputProjection.rank - 1]
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

    /// `(B, L, H)`; packed, B is the rows of step 0 and L the number of steps.
    public var dimensions: (batch: Int, length: Int, hidden: Int) {
      let hidden = inputProjection.shape[inputProjection.rank - 1] / 3
      if let stepSizes { return (stepSizes[0], stepSizes.count, hidden) }
      return (inputProjection.shape[0], inputProjection.shape[1], hidden)
    }

    /// Where each step's rows are, in either layout.
    package var layout: StepLayout { StepLayout(self) }
  }

  /// Where step `t`'s rows live. Rows of the inputs, the outputs and their gradients (widths 3H
  /// or H) are at `row(t, b) = ioStart[t] + b · ioStride`; rows of the saved gates and states at
  /// `stateStart[t] + b`.
  package struct StepLayout {
    /// Rows computed at each step (a prefix of the rows, longest first).
    package let rows: [Int]
    let ioStart: [Int]
    let ioStride: Int
    let stateStart: [Int]
    /// Rows of a saved region: L·B padded, T packed.
    let stateRows: Int
    /// Whether rows past their length are stored (and written as 0): the padded layout.
    let isPadded: Bool
    /// B, the rows of step 0 (the padded layout's batch).
    let batch: Int

    init(_ inputs: Inputs) {
      let (batch, length, _) = inputs.dimensions
      self.batch = batch
      if let sizes = inputs.stepSizes {
        var starts = [Int]()
        var total = 0
        for size in sizes {
          starts.append(total)
          total += size
        }
        (rows, ioStart, ioStride, stateStart, stateRows, isPadded) = (sizes, starts, 1, starts, total, false)
        return
      }
      var active = [Int](repeating: batch, count: length)
      if let lengths = inputs.lengths {
        var rows = batch
        for t in 0..<length {
          while rows > 0 && lengths[rows - 1] <= t { rows -= 1 }
          active[t] = rows
        }
      }
      (rows, ioStart, ioStride) = (active, Array(0..<length), length)
      (stateStart, stateRows, isPadded) = ((0..<length).map { $0 * batch }, length * batch, true)
    }

    /// Rows that step `t` stores but does not compute (padded layout only).
    func idleRows(_ t: Int) -> Int { isPadded ? batch - rows[t] : 0 }

    /// Contiguous bands of rows, at most `workers` and none under `minimumRows` rows, each
    /// with about the same number of row-steps to compute (rows are longest first, so the
    /// first bands are the narrower).
    package func rowBands(workers: Int, minimumRows: Int = 8) -> [Range<Int>] {
      let count = Swift.min(workers, batch / minimumRows)
      if count <= 1 { return [0..<batch] }
      // Steps of row b: how many steps compute more than b rows.
      var steps = [Int](repeating: 0, count: batch + 1)
      for r in rows {
        steps[0] += 1
        steps[r] -= 1
      }
      for b in 1...batch { steps[b] += steps[b - 1] }
      var remaining = rows.reduce(0, +)
      var bands = [Range<Int>]()
      var (start, work) = (0, 0)
      for b in 0..<batch {
        work += steps[b]
        // Cut when this band holds its share of what is left, leaving each later band its minimum.
        let left = count - bands.count
        let end = b + 1
        if left > 1 && end - start >= minimumRows && batch - end >= minimumRows * (left - 1) && work * left >= remaining {
          bands.append(start..<end)
          (start, remaining, work) = (end, remaining - work, 0)
        }
      }
      bands.append(start..<batch)
      return bands
    }
  }

  /// What the forward pass keeps for the backward pass: r, z, n, `W_hn·h + b_hn` and h of every
  /// step, `[L, B, H]` each (5·B·L·H floats), or `[T, H]` each packed.
  public struct Saved: Sendable {
    let values: [Float]
  }

  /// The gradients of a recurrence's inputs.
  public struct Gradients {
    /// `∂/∂xw`, in the projections' layout (`[B, L, 3H]` or `[T, 3H]`).
    public var inputProjection: Tensor
    /// `∂/∂W_hh`, `[3H, H]`.
    public var hiddenWeight: Tensor
    /// `∂/∂b_hh`, `[3H]`, when the inputs have a hidden bias.
    public var hiddenBias: Tensor?
  }

  /// The hidden states `h`, `[B, L, H]` (`[T, H]` packed), and, when `saveForBackward`, what
  /// ``backward(outputGradient:_:saved:)`` needs; without it only one step's gates are scratch
  /// (5× less memory).
  public static func forward(_ inputs: Inputs, saveForBackward: Bool) -> (output: Tensor, saved: Saved?) {
    let (batch, length, hidden) = inputs.dimensions
    let layout = inputs.layout
    let threeH = 3 * hidden
    let bhh = inputs.hiddenBias ?? Tensor(zeros: [threeH])
    let gateRegion = saveForBackward ? layout.stateRows * hidden : batch * hidden
    let stateRegion = layout.stateRows * hidden
    // Every entry is written by the step kernel before it is read, so nothing is zero-filled.
    var saved = [Float](unsafeUninitializedCapacity: 4 * gateRegion + stateRegion) { _, count in
      count = 4 * gateRegion + stateRegion
    }
    var hw = [Float](repeating: 0, count: batch * threeH)
    FLOPCounter.addExponentials(threeH * layout.rows.reduce(0, +))  // two sigmoid gates and a tanh per unit and step
    let bands = layout.rowBands(workers: Parallel.workerCount)
    // W_hhᵀ, [H, 3H], once per pass: every step multiplies by it, and a product whose op(B) is
    // stored [k, n] can take BLAS's panel kernel, which reads op(B) in place instead of
    // packing it at every step as sgemm does.
    let hiddenWeightT = inputs.hiddenWeight.transposed()
    inputs.inputProjection.withUnsafeBufferPointer { xp in
      hiddenWeightT.withUnsafeBufferPointer { wp in
        bhh.withUnsafeBufferPointer { bp in
          saved.withUnsafeMutableBufferPointer { sp in
            hw.withUnsafeMutableBufferPointer { hwp in
              // Rows are independent through time, so each worker runs every step of its own
              // band of rows: one parallel region per recurrence instead of one per step.
              nonisolated(unsafe) let (x, w, bias, base, hwBase) = (
                xp.baseAddress!, wp.baseAddress!, bp.baseAddress!, sp.baseAddress!, hwp.baseAddress!
              )
              Parallel.forEachWorker(count: bands.count, workers: bands.count) { band, _ in
                let (b0, b1) = (bands[band].lowerBound, bands[band].upperBound)
                let (r, z, n, hn, h) = (
                  base, base + gateRegion, base + 2 * gateRegion, base + 3 * gateRegion, base + 4 * gateRegion
                )
                for t in 0..<length {
                  let o = layout.stateStart[t] * hidden
                  // Rows past their length output 0 (their gates are never read).
                  let idle = Swift.max(b0, layout.rows[t])
                  if layout.isPadded && idle < b1 { (h + o + idle * hidden).update(repeating: 0, count: (b1 - idle) * hidden) }
                  let rows = Swift.min(b1, layout.rows[t]) - b0
                  if rows <= 0 { continue }
                  let previous = t > 0 ? h + layout.stateStart[t - 1] * hidden + b0 * hidden : nil
                  let hwBand = hwBase + b0 * threeH
                  for b in 0..<rows { (hwBand + b * threeH).update(from: bias, count: threeH) }
                  if let previous {
                    BLAS.gemmOnCurrentThread(
                      transposeA: false, transposeB: false, m: rows, n: threeH, k: hidden, alpha: 1, a: previous,
                      lda: hidden, b: w, ldb: threeH, beta: 1, c: hwBand, ldc: threeH)
                  }
                  let g = (saveForBackward ? o : 0) + b0 * hidden
                  ssm_gru_forward_step(
                    x + (layout.ioStart[t] + b0 * layout.ioStride) * threeH, layout.ioStride * threeH, hwBand, previous,
                    rows, hidden, r + g, z + g, n + g, hn + g, h + o + b0 * hidden)
                }
              }
            }
          }
        }
      }
    }
    // The states are time-major; the padded layout's output is batch-major, one strided copy.
    let output = saved.withUnsafeBufferPointer { sp in
      let states = sp.baseAddress! + 4 * gateRegion
      guard layout.isPadded else {
        return Tensor(shape: [layout.stateRows, hidden]) { $0.baseAddress!.update(from: states, count: stateRegion) }
      }
      return Tensor(shape: [batch, length, hidden]) { out in
        Tensor.stridedCopy(
          from: states, dimensions: [batch, length, hidden], strides: [hidden, batch * hidden, 1], to: out.baseAddress!)
      }
    }
    return (output, saveForBackward ? Saved(values: saved) : nil)
  }
}
