import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Mamba-2's structured state space duality (SSD) in its chunked matrix-multiplication form.
///
/// Per batch element and head `h` (state `S ∈ ℝ^{P×N}`, `A_h < 0` a scalar):
///
///     Δ_t  = softplus(dt_t + b_h)
///     S_t  = exp(Δ_t·A_h)·S_{t−1} + (Δ_t·x_t) ⊗ B_t
///     y_t  = S_t·C_t + D_h·x_t
///
/// Time is cut into chunks of `Q` steps. Inside a chunk the outputs are the masked quadratic
/// form `(C·Bᵀ ∘ L)·X̄` (step 1); each chunk's own contribution to the state is `(w∘X̄)ᵀ·B`
/// (step 2); states pass between chunks by one scalar decay each (step 3); and the state entering
/// a chunk reaches its outputs through `C·Sᵀ` (step 4). Steps 1, 2 and 4 are `sgemm` calls.
/// `Docs/Models.md` §2.3–§2.6 and <doc:ChunkedSSDKernel> have the derivation.
///
/// **Packed batches.** With `sequenceIndex` (per-token segment ids, non-decreasing), each
/// segment runs from a zero state as if alone: cross-segment terms are masked in every step
/// (SSD4Rec's "sequence registers"). An initial state only reaches tokens whose id is 0 at the
/// start of a row.
public enum ChunkedSSD {
  /// The inputs of one SSD, shapes checked at construction.
  public struct Inputs {
    /// Per-head inputs `x`, shape `[B, L, H, P]`.
    public var x: Tensor
    /// Raw step sizes, shape `[B, L, H]`.
    public var dt: Tensor
    /// The scalar decay rate of each head (negative), shape `[H]`.
    public var A: Tensor
    /// Input projections, shape `[B, L, G, N]` (head `h` uses group `h·G/H`).
    public var B: Tensor
    /// Output projections, shape `[B, L, G, N]`.
    public var C: Tensor
    /// Skip weights per head, shape `[H]`, or `nil`.
    public var D: Tensor?
    /// Bias added to `dt` before the softplus, shape `[H]`, or `nil`.
    public var dtBias: Tensor?
    /// Whether `Δ = softplus(dt + b)` (Mamba-2) or `Δ = dt + b`.
    public var dtSoftplus: Bool
    /// The state before the first token, shape `[B, H, P, N]`, or `nil` for zeros.
    public var initialState: Tensor?
    /// Segment ids of packed sequences, shape `[B, L]`, or `nil`.
    public var sequenceIndex: IndexTensor?
    /// The chunk length `Q`. The result does not depend on it; 32–64 is fastest on a CPU
    /// (measured: Q = 64 beats the sequential scan by 1.35–1.76× at L = 50–1000, while the
    /// official Q = 256, chosen for GPU tensor cores, loses from L = 200 on).
    public var chunkSize: Int

    /// - Precondition: shapes as documented; `chunkSize ≥ 1`; `G` divides `H`.
    public init(
      x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor? = nil, dtBias: Tensor? = nil,
      dtSoftplus: Bool = true, initialState: Tensor? = nil, sequenceIndex: IndexTensor? = nil, chunkSize: Int = 64
    ) {
      precondition(x.rank == 4, "ChunkedSSD: x must be [B, L, H, P], got \(x.shape)")
      let (batch, length, heads, headDim) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
      precondition(dt.shape == [batch, length, heads], "ChunkedSSD: dt \(dt.shape) must be [B, L, H] for x \(x.shape)")
      precondition(A.shape == [heads], "ChunkedSSD: A \(A.shape) must be [H] for x \(x.shape)")
      precondition(
        B.rank == 4 && B.shape[0] == batch && B.shape[1] == length,
        "ChunkedSSD: B \(B.shape) must be [B, L, G, N] for x \(x.shape)")
      precondition(C.shape == B.shape, "ChunkedSSD: C \(C.shape) must match B \(B.shape)")
      precondition(B.shape[2] > 0 && heads % B.shape[2] == 0, "ChunkedSSD: groups \(B.shape[2]) must divide heads \(heads)")
      if let D { precondition(D.shape == [heads], "ChunkedSSD: D \(D.shape) must be [H] for x \(x.shape)") }
      if let dtBias { precondition(dtBias.shape == [heads], "ChunkedSSD: dtBias \(dtBias.shape) must be [H] for x \(x.shape)") }
      if let initialState {
        precondition(
          initialState.shape == [batch, heads, headDim, B.shape[3]],
          "ChunkedSSD: initial state \(initialState.shape) must be [B, H, P, N]")
      }
      if let sequenceIndex {
        precondition(
          sequenceIndex.shape == [batch, length],
          "ChunkedSSD: sequence index \(sequenceIndex.shape) must be [B, L] for x \(x.shape)")
      }
      precondition(chunkSize >= 1, "ChunkedSSD: chunk size must be positive, got \(chunkSize)")
      self.x = x
      self.dt = dt
      self.A = A
      self.B = B
      self.C = C
      self.D = D
      self.dtBias = dtBias
      self.dtSoftplus = dtSoftplus
      self.initialState = initialState
      self.sequenceIndex = sequenceIndex
      self.chunkSize = chunkSize
    }

    /// `B`, `L`, `H`, `P`, `G`, `N`.
    public var dimensions: (batch: Int, length: Int, heads: Int, headDim: Int, groups: Int, state: Int) {
      (x.shape[0], x.shape[1], x.shape[2], x.shape[3], B.shape[2], B.shape[3])
    }
  }

  /// Gradients with respect to every input.
  public struct Gradients {
    /// With respect to `x`, shape `[B, L, H, P]`.
    public var x: Tensor
    /// With respect to the raw `dt` (through bias and softplus).
    public var dt: Tensor
    /// With respect to the decay rates `A`, shape `[H]`.
    public var A: Tensor
    /// With respect to `B`, shape `[B, L, G, N]`, summed over the heads that share each group.
    public var B: Tensor
    /// With respect to `C`, shape `[B, L, G, N]`, summed over the heads that share each group.
    public var C: Tensor
    /// With respect to the skip weights `D`, shape `[H]`, or `nil` when the inputs had no `D`.
    public var D: Tensor?
    /// With respect to the `dt` bias, shape `[H]`, or `nil` when the inputs had no bias.
    public var dtBias: Tensor?
    /// With respect to the initial state, shape `[B, H, P, N]`, or `nil` when the inputs had
    /// none (a zero start state has no gradient).
    public var initialState: Tensor?
  }

  /// Runs the chunked SSD.
  /// - Returns: `y`, shape `[B, L, H, P]`, and the final state `[B, H, P, N]` when asked for.
  /// - Complexity: O(B·L·Q·(G·N + H·P)) time; B·G·L·Q floats of shared `C·Bᵀ` blocks, and per
  ///   worker O(Q² + Q·P + P·N) scratch. Nothing is kept for the backward pass, which recomputes
  ///   the chunk states and the blocks.
  public static func forward(_ inputs: Inputs, returnFinalState: Bool = false) -> (output: Tensor, finalState: Tensor?) {
    let d = inputs.dimensions
    var y = Tensor(zeros: [d.batch, d.heads, d.length, d.headDim])
    var final: Tensor? = returnFinalState ? Tensor(zeros: [d.batch, d.heads, d.headDim, d.state]) : nil
    let tasks = d.batch * d.heads
    if tasks == 0 || d.length == 0 { return (Tensor(zeros: inputs.x.shape), final) }
    let plan = Plan(inputs)
    withPointers(inputs) { p in
      let scores = plan.computeScores(p)
      defer { scores.deallocate() }
      y.withUnsafeMutableBufferPointer { yb in
        withOptionalMutablePointer(&final) { fp in
          nonisolated(unsafe) let (yp, finalP, shared) = (yb.baseAddress!, fp, UnsafePointer(scores))
          Parallel.forEachWorker(count: tasks, minimumPerWorker: plan.minimumTasksPerWorker) { _, range in
            let work = Workspace(plan)
            for task in range {
              let (b, h) = (task / d.heads, task % d.heads)
              work.runForward(p, scores: shared, b: b, h: h, y: yp, finalState: finalP, storeChunkStates: false)
            }
          }
        }
      }
    }
    return (y.permuted(Plan.headMajor), final)
  }
}

/// Sizes shared by the forward and backward passes.
struct Plan {
  let batch, length, heads, headDim, groups, state, chunk, chunkCount: Int
  let softplus: Bool
  let minimumTasksPerWorker: Int

  init(_ inputs: ChunkedSSD.Inputs) {
    let d = inputs.dimensions
    (batch, length, heads, headDim, groups, state) = (d.batch, d.length, d.heads, d.headDim, d.groups, d.state)
    chunk = Swift.min(inputs.chunkSize, Swift.max(length, 1))
    chunkCount = (length + chunk - 1) / chunk
    softplus = inputs.dtSoftplus
    // Per head: the masked product and the state products; C·Bᵀ is shared by the group.
    let flopsPerTask = 2 * length * chunk * headDim + 4 * length * headDim * state
    minimumTasksPerWorker = Swift.max(1, 1_000_000 / Swift.max(flopsPerTask, 1))
  }

  /// The group whose `B`, `C` head `h` reads.
  func group(_ h: Int) -> Int { h * groups / heads }
  /// Floats of the `C·Bᵀ` blocks of every (batch element, group, chunk), `Q×Q` each.
  var scoreCount: Int { batch * groups * chunkCount * chunk * chunk }
  /// Where the block of (b, group g, chunk c) starts.
  func scoreOffset(_ b: Int, _ g: Int, _ c: Int) -> Int { ((b * groups + g) * chunkCount + c) * chunk * chunk }

  /// `C·Bᵀ` of every chunk, once per group: the heads of a group share `B` and `C`, so computing
  /// it per head (as the chunked form is usually written) repeats the largest product H/G times.
  /// A partial last chunk fills the top-left `q×q` of its block. The caller deallocates.
  func computeScores(_ p: SSDPointers) -> UnsafeMutablePointer<Float> {
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(scoreCount, 1))
    nonisolated(unsafe) let out = scores
    forEachScoreBlock(flopsPerBlock: 2 * chunk * chunk * state) { block in
      BLAS.gemmOnCurrentThread(
        transposeA: false, transposeB: true, m: block.rows, n: block.rows, k: state, alpha: 1,
        a: p.C + block.bcOffset, lda: bcStride, b: p.B + block.bcOffset, ldb: bcStride, beta: 0,
        c: out + block.scoreOffset, ldc: chunk)
    }
    return scores
  }

  /// One (batch element, group, chunk) block of the shared `C·Bᵀ`.
  struct ScoreBlock {
    /// Positions in the chunk (`Q`, or fewer for a partial last chunk).
    let rows: Int
    /// Offset of the chunk's first row in `B` and `C`.
    let bcOffset: Int
    /// Offset of the block in the scores (``Plan/scoreOffset(_:_:_:)``).
    let scoreOffset: Int
  }

  /// Runs `body` on every block, in parallel when blocks of `flopsPerBlock` are worth it.
  /// Blocks own disjoint rows of `B`, `C` and the scores.
  func forEachScoreBlock(flopsPerBlock: Int, _ body: (ScoreBlock) -> Void) {
    let minimum = Swift.max(1, 1_000_000 / Swift.max(flopsPerBlock, 1))
    Parallel.forEachChunk(count: batch * groups * chunkCount, minimumPerWorker: minimum) { range in
      for block in range {
        let (bg, c) = (block / chunkCount, block % chunkCount)
        let (b, g) = (bg / groups, bg % groups)
        let l0 = c * chunk
        body(
          ScoreBlock(
            rows: Swift.min(chunk, length - l0), bcOffset: groupRow(b, l0, g), scoreOffset: scoreOffset(b, g, c)))
      }
    }
  }

  /// The kernels read `x`, `dt` and the output gradient, and write `y`, `dx` and `ddt`, head-major
  /// (`[B, H, L, P]` and `[B, H, L]`): each (batch element, head) task then walks contiguous
  /// rows. In the inputs' `[B, L, H, P]` a task's rows lie `H·P` floats apart, one cache line
  /// per position, and the hardware prefetcher stops at every page; the transposes (x, dt and y
  /// forward; x, dt, the output gradient, dx and ddt backward), one memory pass each, cost less
  /// than those misses.
  static let headMajor = [0, 2, 1, 3]  // its own inverse: [B, L, H, P] ↔ [B, H, L, P]

  /// Element offsets and row strides of the head-major `x`, `y` and their gradients.
  func xRow(_ b: Int, _ l: Int, _ h: Int) -> Int { ((b * heads + h) * length + l) * headDim }
  var xStride: Int { headDim }
  func bcRow(_ b: Int, _ l: Int, _ h: Int) -> Int { groupRow(b, l, group(h)) }
  func groupRow(_ b: Int, _ l: Int, _ g: Int) -> Int { ((b * length + l) * groups + g) * state }
  var bcStride: Int { groups * state }
  func dtIndex(_ b: Int, _ l: Int, _ h: Int) -> Int { (b * heads + h) * length + l }
}

/// Raw pointers to the inputs, valid inside `ChunkedSSD.withPointers`.
struct SSDPointers: @unchecked Sendable {
  let x, dt, A, B, C: UnsafePointer<Float>
  let D, dtBias, initialState: UnsafePointer<Float>?
  let sequenceIndex: UnsafePointer<Int32>?
}

extension ChunkedSSD {
  /// Runs `body` with pointers to the inputs, `x` and `dt` head-major (``Plan/xRow(_:_:_:)``).
  static func withPointers<R>(_ inputs: Inputs, _ body: (SSDPointers) -> R) -> R {
    let x = inputs.x.permuted(Plan.headMajor)
    let dt = inputs.dt.permuted([0, 2, 1])
    return x.withUnsafeBufferPointer { x in
      dt.withUnsafeBufferPointer { dt in
        inputs.A.withUnsafeBufferPointer { a in
          inputs.B.withUnsafeBufferPointer { b in
            inputs.C.withUnsafeBufferPointer { c in
              withOptionalPointer(inputs.D) { d in
                withOptionalPointer(inputs.dtBias) { bias in
                  withOptionalPointer(inputs.initialState) { initial in
                    withOptionalIndexPointer(inputs.sequenceIndex) { seq in
                      body(
                        SSDPointers(
                          x: x.baseAddress!, dt: dt.baseAddress!, A: a.baseAddress!, B: b.baseAddress!, C: c.baseAddress!,
                          D: d, dtBias: bias, initialState: initial, sequenceIndex: seq))
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
