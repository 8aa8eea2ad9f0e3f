import CKernels
import SSMTensor

/// The selective-scan recurrence of Mamba (S6), fused with its discretisation.
///
/// For each batch element, channel `e` and state index `n`, at every step `t`:
///
///     Δ[t,e]   = softplus(δ[t,e] + b[e])          (or δ + b without softplus)
///     h[t,e,n] = exp(Δ[t,e]·A[e,n])·h[t−1,e,n] + Δ[t,e]·B[t,n]·u[t,e]
///     y[t,e]   = Σₙ C[t,n]·h[t,e,n] + D[e]·u[t,e]
///     out[t,e] = y[t,e]·silu(z[t,e])              (when a gate z is given)
///
/// `B` and `C` are input-dependent and shared by all channels of a batch element (one group).
/// See `Docs/Models.md` §1.4–§1.5 and <doc:SelectiveScanKernel>.
///
/// The fast path is a C kernel with AVX2/AVX-512 variants chosen at run time; each SIMD lane
/// runs one channel, and work is split over (batch element, channel block) pairs on all cores.
/// A plain Double reference of the same function (`package` access) backs the tests.
public enum SelectiveScan {
  /// The inputs of one scan, shapes checked at construction.
  public struct Inputs {
    /// The input sequence `u`, shape `[B, L, E]`.
    public var u: Tensor
    /// The raw step sizes `δ`, shape `[B, L, E]` (before bias and softplus).
    public var delta: Tensor
    /// The state matrix `A` (negative for a stable scan), shape `[E, N]`.
    public var A: Tensor
    /// Input projections `B`, shape `[B, L, N]`.
    public var B: Tensor
    /// Output projections `C`, shape `[B, L, N]`.
    public var C: Tensor
    /// The skip connection `D`, shape `[E]`, or `nil`.
    public var D: Tensor?
    /// The gate `z`, shape `[B, L, E]`, or `nil`.
    public var z: Tensor?
    /// A bias added to `δ` before the softplus, shape `[E]`, or `nil`.
    public var deltaBias: Tensor?
    /// Whether `Δ = softplus(δ + b)` (Mamba) or `Δ = δ + b`.
    public var deltaSoftplus: Bool
    /// Segment ids `[B, L]` of sequences packed end to end in a row, or `nil`: the state restarts
    /// from zero wherever the id changes, so each sequence is scanned as if alone.
    public var sequenceIndex: IndexTensor?

    /// Checks every shape against `u`'s `[B, L, E]` and `A`'s `[E, N]`.
    /// - Precondition: shapes as documented on each property; the message names both shapes.
    public init(
      u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor? = nil, z: Tensor? = nil,
      deltaBias: Tensor? = nil, deltaSoftplus: Bool = true, sequenceIndex: IndexTensor? = nil
    ) {
      precondition(u.rank == 3, "SelectiveScan: u must be [B, L, E], got \(u.shape)")
      precondition(A.rank == 2 && A.shape[0] == u.shape[2], "SelectiveScan: A \(A.shape) must be [E, N] for u \(u.shape)")
      let (batch, length, state) = (u.shape[0], u.shape[1], A.shape[1])
      precondition(delta.shape == u.shape, "SelectiveScan: delta \(delta.shape) must match u \(u.shape)")
      precondition(
        B.shape == [batch, length, state],
        "SelectiveScan: B \(B.shape) must be [\(batch), \(length), \(state)] for u \(u.shape) and A \(A.shape)")
      precondition(C.shape == B.shape, "SelectiveScan: C \(C.shape) must match B \(B.shape)")
      if let D { precondition(D.shape == [u.shape[2]], "SelectiveScan: D \(D.shape) must be [E] for u \(u.shape)") }
      if let z { precondition(z.shape == u.shape, "SelectiveScan: z \(z.shape) must match u \(u.shape)") }
      if let deltaBias {
        precondition(deltaBias.shape == [u.shape[2]], "SelectiveScan: deltaBias \(deltaBias.shape) must be [E] for u \(u.shape)")
      }
      self.u = u
      self.delta = delta
      self.A = A
      self.B = B
      self.C = C
      self.D = D
      self.z = z
      self.deltaBias = deltaBias
      self.deltaSoftplus = deltaSoftplus
      if let sequenceIndex {
        precondition(
          sequenceIndex.shape == [batch, length],
          "SelectiveScan: sequenceIndex \(sequenceIndex.shape) must be [\(batch), \(length)] for u \(u.shape)")
      }
      self.sequenceIndex = sequenceIndex
    }

    /// The longest run of equal segment ids in a row (`L` without segment ids): the states
    /// the backward pass keeps at once.
    public var longestSequence: Int {
      let (batch, length, _, _) = dimensions
      guard let sequenceIndex, length > 0 else { return length }
      var longest = 0
      sequenceIndex.values.withUnsafeBufferPointer { ids in
        for b in 0..<batch {
          var run = 0
          for t in 0..<length {
            run = t > 0 && ids[b * length + t] == ids[b * length + t - 1] ? run + 1 : 1
            longest = Swift.max(longest, run)
          }
        }
      }
      return longest
    }

    /// `B`, `L`, `E`, `N`.
    public var dimensions: (batch: Int, length: Int, channels: Int, state: Int) {
      (u.shape[0], u.shape[1], u.shape[2], A.shape[1])
    }
  }

  /// Gradients of a scalar objective with respect to every input of a scan.
  public struct Gradients {
    /// `∂/∂u`, `[B, L, E]`.
    public var u: Tensor
    /// `∂/∂δ` (the raw step sizes, through bias and softplus), `[B, L, E]`.
    public var delta: Tensor
    /// `∂/∂A`, `[E, N]`.
    public var A: Tensor
    /// `∂/∂B`, `[B, L, N]`.
    public var B: Tensor
    /// `∂/∂C`, `[B, L, N]`.
    public var C: Tensor
    /// `∂/∂D`, `[E]`, when `D` was given.
    public var D: Tensor?
    /// `∂/∂z`, `[B, L, E]`, when `z` was given.
    public var z: Tensor?
    /// `∂/∂b`, `[E]`, when a delta bias was given.
    public var deltaBias: Tensor?
  }

  /// Runs the scan.
  /// - Parameters:
  ///   - inputs: the sequences and parameters of the scan.
  ///   - returnLastState: whether to return the final state `h[L−1]`, shape `[B, E, N]`.
  /// - Returns: `out`, shape `[B, L, E]`, and the final state when asked for.
  /// - Complexity: O(B·L·E·N) time; O(N) scratch per worker; nothing is kept for the backward
  ///   pass, which recomputes the states.
  public static func forward(_ inputs: Inputs, returnLastState: Bool = false) -> (output: Tensor, lastState: Tensor?) {
    let (batch, length, channels, state) = inputs.dimensions
    let lanes = ssm_scan_lanes()
    let blocks = (channels + lanes - 1) / lanes
    let tasks = batch * blocks
    var lastState = returnLastState ? Tensor(zeros: [batch, channels, state]) : nil
    let aTransposed = inputs.A.transposed()
    if tasks == 0 || length == 0 { return (Tensor(zeros: inputs.u.shape), lastState) }
    // The kernel writes every output element.
    var output = Tensor(uninitializedShape: inputs.u.shape)
    FLOPCounter.add(forwardOperationsPerStateElement * batch * length * channels * state)
    FLOPCounter.addExponentials(batch * length * channels * state)  // exp(Δ·A) per state element
    let perTask = length * state * lanes * 20  // ≈ flops of one task
    let workers = Parallel.workers(count: tasks, minimumPerWorker: Swift.max(1, 2_000_000 / Swift.max(perTask, 1)))
    let scratchPerWorker = ssm_scan_forward_scratch(length, state)
    var scratch = [Float](repeating: 0, count: workers * scratchPerWorker)
    withArguments(inputs, aTransposed) { args in
      output.withUnsafeMutableBufferPointer { y in
        scratch.withUnsafeMutableBufferPointer { s in
          withOptionalMutablePointer(&lastState) { last in
            nonisolated(unsafe) let p = (args, y.baseAddress!, s.baseAddress!, last)
            // Pieces claimed one at a time: a static half each left one core waiting for the
            // other at the end of most scans.
            Parallel.forEachPiece(count: tasks, workers: workers, pieces: Self.piecesPerWorker * workers) { worker, range in
              var a = p.0
              ssm_scan_forward(&a, range.lowerBound, range.upperBound, p.2 + worker * scratchPerWorker, p.1, p.3)
            }
          }
        }
      }
    }
    return (output, lastState)
  }

  /// How many pieces per worker the forward and backward scans are cut into.
  static let piecesPerWorker = 8

  /// Calls `body` with the C argument block pointing into the inputs' storage.
  /// Operations per (batch, time, channel, state) element counted in ``FLOPCounter``: the
  /// exponent product, the exponential (as one), the decay multiply, the input multiply-add and
  /// the output multiply-add.
  static let forwardOperationsPerStateElement = 7
  /// The backward pass: the forward recomputed (7) and 15 for the reverse sweep.
  static let backwardOperationsPerStateElement = 22

  static func withArguments<R>(_ inputs: Inputs, _ aTransposed: Tensor, _ body: (ssm_scan_args) -> R) -> R {
    let (batch, length, channels, state) = inputs.dimensions
    return inputs.u.withUnsafeBufferPointer { u in
      inputs.delta.withUnsafeBufferPointer { delta in
        aTransposed.withUnsafeBufferPointer { a in
          inputs.B.withUnsafeBufferPointer { b in
            inputs.C.withUnsafeBufferPointer { c in
              withOptionalPointer(inputs.D) { d in
                withOptionalPointer(inputs.z) { z in
                  withOptionalPointer(inputs.deltaBias) { bias in
                    withOptionalIndexPointer(inputs.sequenceIndex) { seq in
                      body(
                        ssm_scan_args(
                          u: u.baseAddress, delta: delta.baseAddress, A_t: a.baseAddress, B: b.baseAddress,
                          C: c.baseAddress, D: d, z: z, delta_bias: bias, softplus: inputs.deltaSoftplus ? 1 : 0,
                          batch: batch, length: length, channels: channels, state: state, seq: seq))
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}
