import CKernels
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

extension ChunkedSSD {
  /// Gradients of a scalar objective with respect to every input, given its gradient with
  /// respect to `y` (and optionally to the final state).
  ///
  /// Per (batch element, head): one forward sweep stores the state entering each chunk
  /// (chunkCount·P·N floats of scratch per worker), then chunks are processed last to first with
  /// the chunked adjoint of Docs/Models.md §2.9 — each step's gradient is an `sgemm` or a masked pass over
  /// a Q×Q block — and the per-position gradients of Δ, x, A, D and the dt bias follow from the
  /// reverse cumulative sum of the decay gradients. `B` and `C` are shared by the heads of a
  /// group, so their gradients accumulate in one buffer per worker; the gradient of each chunk's
  /// shared `C·Bᵀ` is summed over the heads first and reaches `B` and `C` through one pair of
  /// products per (batch element, group, chunk) at the end.
  public static func backward(outputGradient: Tensor, finalStateGradient: Tensor? = nil, _ inputs: Inputs) -> Gradients {
    let d = inputs.dimensions
    precondition(
      outputGradient.shape == inputs.x.shape,
      "ChunkedSSD.backward: gradient \(outputGradient.shape) must match x \(inputs.x.shape)")
    if let finalStateGradient {
      precondition(
        finalStateGradient.shape == [d.batch, d.heads, d.headDim, d.state],
        "ChunkedSSD.backward: final-state gradient \(finalStateGradient.shape) must be [B, H, P, N]")
    }
    let plan = Plan(inputs)
    let tasks = d.batch * d.heads
    var dx = Tensor(zeros: [d.batch, d.heads, d.length, d.headDim])
    var ddt = Tensor(zeros: [d.batch, d.heads, d.length])
    let dy = outputGradient.permuted(Plan.headMajor)
    var dInitial: Tensor? = inputs.initialState.map { Tensor(zeros: $0.shape) }
    let workers = Swift.max(1, Parallel.workers(count: tasks, minimumPerWorker: plan.minimumTasksPerWorker))
    let bcSize = inputs.B.elementCount
    var accB = [Float](repeating: 0, count: workers * bcSize)
    var accC = [Float](repeating: 0, count: workers * bcSize)
    var accHeads = [Float](repeating: 0, count: workers * 3 * d.heads)  // A, D, bias
    if tasks > 0 && d.length > 0 {
      withPointers(inputs) { p in
        let scores = plan.computeScores(p)
        // One C·Bᵀ gradient buffer per worker (workers · B·G·L·Q floats), zeroed by its worker.
        let dScores = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(workers * plan.scoreCount, 1))
        defer {
          scores.deallocate()
          dScores.deallocate()
        }
        nonisolated(unsafe) let (shared, dShared) = (UnsafePointer(scores), dScores)
        dy.withUnsafeBufferPointer { gy in
          withOptionalPointer(finalStateGradient) { gFinal in
            dx.withUnsafeMutableBufferPointer { dxb in
              ddt.withUnsafeMutableBufferPointer { ddtb in
                withOptionalMutablePointer(&dInitial) { dInit in
                  accB.withUnsafeMutableBufferPointer { ab in
                    accC.withUnsafeMutableBufferPointer { ac in
                      accHeads.withUnsafeMutableBufferPointer { ah in
                        nonisolated(unsafe) let out = (
                          gy.baseAddress!, gFinal, dxb.baseAddress!, ddtb.baseAddress!, dInit, ab.baseAddress!,
                          ac.baseAddress!, ah.baseAddress!
                        )
                        Parallel.forEachWorker(count: tasks, workers: workers) { worker, range in
                          let work = Workspace(plan, backward: true)
                          (dShared + worker * plan.scoreCount).initialize(repeating: 0, count: plan.scoreCount)
                          let sink = GradientSink(
                            dy: out.0, dFinal: out.1, dx: out.2, ddt: out.3, dInitial: out.4,
                            dB: out.5 + worker * bcSize, dC: out.6 + worker * bcSize,
                            dScores: dShared + worker * plan.scoreCount,
                            dA: out.7 + worker * 3 * d.heads, dD: out.7 + worker * 3 * d.heads + d.heads,
                            dBias: out.7 + worker * 3 * d.heads + 2 * d.heads)
                          for task in range {
                            work.runBackward(p, scores: shared, sink, b: task / d.heads, h: task % d.heads)
                          }
                        }
                        plan.scoreGradientsToBC(
                          p, dScores: dShared, workers: workers, dB: out.5, dC: out.6)
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
    func total(_ acc: [Float], offset: Int, stride: Int, size: Int, shape: Shape) -> Tensor {
      var sum = [Float](repeating: 0, count: size)
      for w in 0..<workers { for i in 0..<size { sum[i] += acc[w * stride + offset + i] } }
      return Tensor(shape: shape, scalars: sum)
    }
    let heads = d.heads
    return Gradients(
      x: dx.permuted(Plan.headMajor), dt: ddt.permuted([0, 2, 1]),
      A: total(accHeads, offset: 0, stride: 3 * heads, size: heads, shape: [heads]),
      B: total(accB, offset: 0, stride: bcSize, size: bcSize, shape: inputs.B.shape),
      C: total(accC, offset: 0, stride: bcSize, size: bcSize, shape: inputs.C.shape),
      D: inputs.D == nil ? nil : total(accHeads, offset: heads, stride: 3 * heads, size: heads, shape: [heads]),
      dtBias: inputs.dtBias == nil ? nil : total(accHeads, offset: 2 * heads, stride: 3 * heads, size: heads, shape: [heads]),
      initialState: dInitial)
  }
}

/// Where one worker's backward pass writes (dx, ddt, dInitial: disjoint per task) and
/// accumulates (dB, dC, the gradients of the shared `C·Bᵀ` blocks, dA, dD, dBias: private to
/// the worker).
struct GradientSink {
  let dy: UnsafePointer<Float>
  let dFinal: UnsafePointer<Float>?
  let dx, ddt: UnsafeMutablePointer<Float>
  let dInitial: UnsafeMutablePointer<Float>?
  let dB, dC, dScores, dA, dD, dBias: UnsafeMutablePointer<Float>
}

extension Plan {
  /// Sums the workers' gradients of every `C·Bᵀ` block (`workers` consecutive copies of
  /// ``scoreCount`` floats, summed into the first) and adds `dG·B` to `dC` and `dGᵀ·C` to `dB`
  /// (the first worker's accumulators). Blocks own disjoint rows, so they run in parallel.
  func scoreGradientsToBC(
    _ p: SSDPointers, dScores: UnsafeMutablePointer<Float>, workers: Int, dB: UnsafeMutablePointer<Float>,
    dC: UnsafeMutablePointer<Float>
  ) {
    let blockSize = chunk * chunk
    forEachScoreBlock(flopsPerBlock: 4 * chunk * chunk * state) { block in
      let dG = dScores + block.scoreOffset
      for w in 1..<Swift.max(workers, 1) {
        let other = dG + w * scoreCount
        for i in 0..<blockSize { dG[i] += other[i] }
      }
      let q = block.rows
      BLAS.gemmOnCurrentThread(
        transposeA: false, transposeB: false, m: q, n: state, k: q, alpha: 1, a: dG, lda: chunk,
        b: p.B + block.bcOffset, ldb: bcStride, beta: 1, c: dC + block.bcOffset, ldc: bcStride)
      BLAS.gemmOnCurrentThread(
        transposeA: true, transposeB: false, m: q, n: state, k: q, alpha: 1, a: dG, lda: chunk,
        b: p.C + block.bcOffset, ldb: bcStride, beta: 1, c: dB + block.bcOffset, ldc: bcStride)
    }
  }
}

extension Workspace {
  func runBackward(_ p: SSDPointers, scores: UnsafePointer<Float>, _ g: GradientSink, b: Int, h: Int) {
    let pl = plan
    let (P, N, Q) = (pl.headDim, pl.state, pl.chunk)
    runForward(p, scores: nil, b: b, h: h, y: nil, finalState: nil, storeChunkStates: true)
    if let dFinal = g.dFinal {
      dh.update(from: dFinal + (b * pl.heads + h) * P * N, count: P * N)
    } else {
      dh.update(repeating: 0, count: P * N)
    }
    let ah = p.A[h]
    let skip = p.D?[h] ?? 0
    let bias = p.dtBias?[h] ?? 0
    var gA: Float = 0
    var gD: Float = 0
    var gBias: Float = 0
    for c in stride(from: pl.chunkCount - 1, through: 0, by: -1) {
      let l0 = c * Q
      let q = Swift.min(Q, pl.length - l0)
      let previousEnd: Int32 = c == 0 ? 0 : (p.sequenceIndex?[b * pl.length + l0 - 1] ?? 0)
      prepareChunk(p, b: b, h: h, l0: l0, q: q, previousEnd: previousEnd, scores: scores)
      let hPrev = chunkStates + c * P * N
      let hPrevIsZero = chunkStatesZero[c]
      let cRows = p.C + pl.bcRow(b, l0, h)
      let bRows = p.B + pl.bcRow(b, l0, h)
      let dyRows = g.dy + pl.xRow(b, l0, h)
      let dBRows = g.dB + pl.bcRow(b, l0, h)
      let dCRows = g.dC + pl.bcRow(b, l0, h)
      dcs.update(repeating: 0, count: q)
      dxb.update(repeating: 0, count: q * P)
      // Step 3: H_c = γ·H_{c−1} + S_c.
      var dhDotPrev: Float = 0
      let decayFactor = gamma
      for i in 0..<(P &* N) { dhin[i] = decayFactor * dh[i] }
      ssm_row_dots(dh, 0, hPrev, 0, 1, P * N, &dhDotPrev)
      dcs[q - 1] += gamma * dhDotPrev
      // Step 2: S = Σ_s w_s X̄_s ⊗ B_s.
      gemm(false, false, q, N, P, xb, P, dh, N, 0, qn1, N)  // X̄·dS
      ssm_row_dots(qn1, N, bRows, pl.bcStride, q, N, dots)
      for s in 0..<q {
        let dbRow = dBRows + s * pl.bcStride
        let (scale, src) = (w[s], qn1 + s &* N)
        for n in 0..<N { dbRow[n] += scale * src[n] }
        dcs[q - 1] += w[s] * dots[s]
        dcs[s] -= w[s] * dots[s]
      }
      gemm(false, true, q, P, N, bRows, pl.bcStride, dh, N, 0, qp1, P)  // B·dSᵀ
      for s in 0..<q {
        let (scale, src, dst) = (w[s], qp1 + s &* P, dxb + s &* P)
        for j in 0..<P { dst[j] += scale * src[j] }
      }
      // Step 4: Y_off[l] = e_l·(H_{c−1}·C_l).
      for l in 0..<q {
        let dyRow = dyRows + l * pl.xStride
        let (scale, dst) = (e[l], qp2 + l &* P)
        for j in 0..<P { dst[j] = scale * dyRow[j] }
      }
      gemm(true, false, P, N, q, qp2, P, cRows, pl.bcStride, 1, dhin, N)
      if !hPrevIsZero {
        gemm(false, true, q, P, N, cRows, pl.bcStride, hPrev, N, 0, qp1, P)  // C·Hᵀ
        gemm(false, false, q, N, P, dyRows, pl.xStride, hPrev, N, 0, qn2, N)  // dY·H
        ssm_row_dots(dyRows, pl.xStride, qp1, P, q, P, dots)
        for l in 0..<q where e[l] != 0 {
          dcs[l] += e[l] * dots[l]
          let dcRow = dCRows + l * pl.bcStride
          let (scale, src) = (e[l], qn2 + l &* N)
          for n in 0..<N { dcRow[n] += scale * src[n] }
        }
      }
      // Step 1: Y_diag = M·X̄ with M = (C·Bᵀ) ∘ L.
      gemm(true, false, q, P, q, m, Q, dyRows, pl.xStride, 1, dxb, P)  // += Mᵀ·dY
      gemm(false, true, q, q, P, dyRows, pl.xStride, xb, P, 0, dm, Q)  // dM = dY·X̄ᵀ
      // Entries where L is 0 (outside the mask) contribute nothing, by a test rather than a
      // product with 0, so that ∞ or NaN in another position's C·Bᵀ stays out. dGm goes to the
      // group's block; its products with B and C come once per group at the end.
      let dG = g.dScores + pl.scoreOffset(b, pl.group(h), c)
      ssm_ssd_scores_backward(dm, decay, gm, q, Q, dG, dcs)
      // Per position: da = reverse cumulative sum of dcs; then Δ, x, A, D, bias.
      let xRows = p.x + pl.xRow(b, l0, h)
      ssm_row_dots(dxb, P, xRows, pl.xStride, q, P, dots)
      ssm_row_dots(dyRows, pl.xStride, xRows, pl.xStride, q, P, dots2)
      var suffix: Float = 0
      for l in stride(from: q - 1, through: 0, by: -1) {
        suffix += dcs[l]
        let dyRow = dyRows + l * pl.xStride
        let dxRow = g.dx + pl.xRow(b, l0 + l, h)
        let dDelta = ah * suffix + dots[l]
        let (delta, dxbRow) = (dtv[l], dxb + l &* P)
        for j in 0..<P { dxRow[j] = delta * dxbRow[j] + skip * dyRow[j] }
        gA += dtv[l] * suffix
        gD += dots2[l]
        let raw = p.dt[pl.dtIndex(b, l0 + l, h)] + bias
        let slope: Float = pl.softplus ? (raw > 20 ? 1 : 1 / (1 + expf(-raw))) : 1
        let dRaw = dDelta * slope
        g.ddt[pl.dtIndex(b, l0 + l, h)] = dRaw
        gBias += dRaw
      }
      swap(dh, dhin)
    }
    g.dA[h] += gA
    g.dD[h] += gD
    g.dBias[h] += gBias
    if let dInitial = g.dInitial {
      (dInitial + (b * pl.heads + h) * P * N).update(from: dh, count: P * N)
    }
  }

  private func swap(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>) {
    let n = plan.headDim * plan.state
    for i in 0..<n {
      let t = a[i]
      a[i] = b[i]
      b[i] = t
    }
  }
}
