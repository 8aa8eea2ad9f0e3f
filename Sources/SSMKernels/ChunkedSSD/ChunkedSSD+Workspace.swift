import CKernels
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One worker's scratch for chunked SSD, allocated once per parallel region and reused for every
/// (batch element, head) task and chunk.
final class Workspace {
  let plan: Plan
  // Per-position vectors of one chunk.
  let dtv, cs, e, w, dcs: UnsafeMutablePointer<Float>
  /// Per-position dot products of one chunk (backward).
  let dots, dots2: UnsafeMutablePointer<Float>
  let seq: UnsafeMutablePointer<Int32>
  // Q×P, Q×Q, Q×N and P×N blocks.
  let xb, dxb, qp1, qp2: UnsafeMutablePointer<Float>
  /// The decay mask L (exp of Δ·A sums within a segment, 0 elsewhere), M = C·Bᵀ ∘ L and its
  /// gradient.
  let decay, m, dm: UnsafeMutablePointer<Float>
  /// The current chunk's C·Bᵀ (row stride Q) in the scores shared by the heads of its group.
  var gm: UnsafePointer<Float>
  let qn1, qn2: UnsafeMutablePointer<Float>
  let hin, s, dh, dhin: UnsafeMutablePointer<Float>
  /// States entering each chunk (backward only).
  let chunkStates: UnsafeMutablePointer<Float>
  let chunkStatesZero: UnsafeMutablePointer<Bool>
  var gamma: Float = 0
  private var allocations: [UnsafeMutableRawPointer] = []

  init(_ plan: Plan, backward: Bool = false) {
    self.plan = plan
    let (q, p, n) = (plan.chunk, plan.headDim, plan.state)
    var list: [UnsafeMutableRawPointer] = []
    func f(_ count: Int) -> UnsafeMutablePointer<Float> {
      let ptr = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(count, 1))
      ptr.initialize(repeating: 0, count: Swift.max(count, 1))
      list.append(UnsafeMutableRawPointer(ptr))
      return ptr
    }
    dtv = f(q)
    cs = f(q)
    e = f(q)
    w = f(q)
    dcs = f(q)
    dots = f(q)
    dots2 = f(q)
    let seqPtr = UnsafeMutablePointer<Int32>.allocate(capacity: q)
    seqPtr.initialize(repeating: 0, count: q)
    seq = seqPtr
    list.append(UnsafeMutableRawPointer(seqPtr))
    xb = f(q * p)
    dxb = f(q * p)
    qp1 = f(q * p)
    qp2 = f(q * p)
    decay = f(q * q)
    m = f(q * q)
    dm = f(q * q)
    gm = UnsafePointer(decay)
    qn1 = f(q * n)
    qn2 = f(q * n)
    hin = f(p * n)
    s = f(p * n)
    dh = f(p * n)
    dhin = f(p * n)
    chunkStates = f(backward ? plan.chunkCount * p * n : 0)
    let zeros = UnsafeMutablePointer<Bool>.allocate(capacity: Swift.max(plan.chunkCount, 1))
    zeros.initialize(repeating: true, count: Swift.max(plan.chunkCount, 1))
    chunkStatesZero = zeros
    list.append(UnsafeMutableRawPointer(zeros))
    allocations = list
  }

  deinit {
    for a in allocations { a.deallocate() }
  }

  @inline(__always)
  func gemm(
    _ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
    _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
  ) {
    if k == 0 {
      if beta == 0 { for r in 0..<m { (c + r * ldc).update(repeating: 0, count: n) } }
      return
    }
    BLAS.gemmOnCurrentThread(
      transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
  }

  /// Fills the per-position vectors of chunk rows `[l0, l0 + q)` for task (b, h), `X̄`, the
  /// masks `e`, `w`, `γ`, and with `scores` (the group's `C·Bᵀ` blocks, ``Plan/computeScores``)
  /// points `gm` at this chunk's block and fills the decay mask L (decay) and the masked
  /// `M = C·Bᵀ ∘ L` (m). The softplus and the exponentials run through the vector kernels.
  func prepareChunk(
    _ p: SSDPointers, b: Int, h: Int, l0: Int, q: Int, previousEnd: Int32, scores: UnsafePointer<Float>?
  ) {
    let pl = plan
    let (P, Q) = (pl.headDim, pl.chunk)
    let ah = p.A[h]
    let bias = p.dtBias?[h] ?? 0
    for l in 0..<q { dtv[l] = p.dt[pl.dtIndex(b, l0 + l, h)] + bias }
    if pl.softplus { ssm_unary(Int32(SSM_UNARY_SOFTPLUS.rawValue), dtv, dtv, q) }
    var running: Float = 0
    for l in 0..<q {
      let d = dtv[l]
      running += d * ah
      cs[l] = running
      seq[l] = p.sequenceIndex?[b * pl.length + l0 + l] ?? 0
      let xRow = p.x + pl.xRow(b, l0 + l, h)
      let xbRow = xb + l &* P
      for j in 0..<P { xbRow[j] = d * xRow[j] }
    }
    let last = seq[q - 1]
    let total = cs[q - 1]
    for l in 0..<q { w[l] = total - cs[l] }
    ssm_unary(Int32(SSM_UNARY_EXP.rawValue), cs, e, q)
    ssm_unary(Int32(SSM_UNARY_EXP.rawValue), w, w, q)
    for l in 0..<q {
      if seq[l] != previousEnd { e[l] = 0 }
      if seq[l] != last { w[l] = 0 }
    }
    gamma = last == previousEnd ? expf(total) : 0
    guard let scores else { return }
    gm = scores + pl.scoreOffset(b, pl.group(h), l0 / Q)
    ssm_ssd_decay_mask(cs, seq, gm, q, Q, decay, m)
  }

  /// Computes the outputs of all chunks of task (b, h) and, optionally, stores the state entering
  /// each chunk. With `y == nil` only the states are computed (the backward pass's first sweep).
  func runForward(
    _ p: SSDPointers, scores: UnsafePointer<Float>?, b: Int, h: Int, y: UnsafeMutablePointer<Float>?,
    finalState: UnsafeMutablePointer<Float>?, storeChunkStates: Bool
  ) {
    let pl = plan
    let (P, N, Q) = (pl.headDim, pl.state, pl.chunk)
    var hinIsZero = true
    if let initial = p.initialState {
      hin.update(from: initial + (b * pl.heads + h) * P * N, count: P * N)
      hinIsZero = false
    } else {
      hin.update(repeating: 0, count: P * N)
    }
    var previousEnd: Int32 = 0
    let skip = p.D?[h] ?? 0
    for c in 0..<pl.chunkCount {
      let l0 = c * Q
      let q = Swift.min(Q, pl.length - l0)
      if storeChunkStates {
        (chunkStates + c * P * N).update(from: hin, count: P * N)
        chunkStatesZero[c] = hinIsZero
      }
      prepareChunk(p, b: b, h: h, l0: l0, q: q, previousEnd: previousEnd, scores: y == nil ? nil : scores)
      let cRows = p.C + pl.bcRow(b, l0, h)
      let bRows = p.B + pl.bcRow(b, l0, h)
      if let y {
        let yRows = y + pl.xRow(b, l0, h)
        // Step 1: intra-chunk outputs M·X̄, written straight into the output rows.
        gemm(false, false, q, P, q, m, Q, xb, P, 0, yRows, pl.xStride)
        // Step 4: the entering state's contribution e ∘ (C·Hᵀ).
        if !hinIsZero {
          gemm(false, true, q, P, N, cRows, pl.bcStride, hin, N, 0, qp1, P)
          for l in 0..<q where e[l] != 0 {
            let row = yRows + l * pl.xStride
            let (scale, offRow) = (e[l], qp1 + l &* P)
            for j in 0..<P { row[j] += scale * offRow[j] }
          }
        }
        if skip != 0 {
          for l in 0..<q {
            let row = yRows + l * pl.xStride
            let xRow = p.x + pl.xRow(b, l0 + l, h)
            for j in 0..<P { row[j] += skip * xRow[j] }
          }
        }
      }
      // Steps 2–3: the chunk's own state (w ∘ X̄)ᵀ·B, then H ← γ·H + S.
      for l in 0..<q {
        let (scale, src, dst) = (w[l], xb + l &* P, qp2 + l &* P)
        for j in 0..<P { dst[j] = scale * src[j] }
      }
      gemm(true, false, P, N, q, qp2, P, bRows, pl.bcStride, 0, s, N)
      let decayFactor = gamma
      for i in 0..<(P &* N) { hin[i] = decayFactor * hin[i] + s[i] }
      hinIsZero = false
      previousEnd = seq[q - 1]
    }
    if let finalState {
      (finalState + (b * pl.heads + h) * P * N).update(from: hin, count: P * N)
    }
  }
}
