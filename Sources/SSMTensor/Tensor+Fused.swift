import CKernels

extension Tensor {
  /// `x·Wᵀ + b`, the value only: the bias is written into the output first and the product
  /// added onto it (`beta = 1`), so there is no separate broadcast addition (for evaluation and
  /// serving, where nothing is differentiated).
  ///
  /// - Parameters:
  ///   - x: `[…, K]`, at least one leading axis.
  ///   - weight: `[N, K]`.
  ///   - bias: `[N]`.
  /// - Returns: `[…, N]`.
  public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor) -> Tensor {
    let (n, k) = (weight.shape[0], weight.shape[weight.rank - 1])
    precondition(
      x.rank >= 2 && weight.rank == 2 && x.shape[x.rank - 1] == k && bias.shape == [n],
      "linear: input \(x.shape), weight \(weight.shape), bias \(bias.shape)")
    var outShape = x.shape
    outShape[x.rank - 1] = n
    let rows = x.elementCount / Swift.max(k, 1)
    return Tensor(shape: outShape) { out in
      if out.isEmpty { return }
      // The first row, then the filled rows doubled: log₂(rows) copies instead of one per row.
      let total = rows * n
      bias.withUnsafeBufferPointer { b in out.baseAddress!.update(from: b.baseAddress!, count: n) }
      var filled = n
      while filled < total {
        let count = Swift.min(filled, total - filled)
        (out.baseAddress! + filled).update(from: out.baseAddress!, count: count)
        filled += count
      }
      if k == 0 { return }
      x.withUnsafeBufferPointer { a in
        weight.withUnsafeBufferPointer { w in
          BLAS.gemm(
            transposeA: false, transposeB: true, m: rows, n: n, k: k, alpha: 1, a: a.baseAddress!, lda: k,
            b: w.baseAddress!, ldb: k, beta: 1, c: out.baseAddress!, ldc: n)
        }
      }
    }
  }

  /// Multi-head scaled dot-product attention, the value only:
  /// `softmax(scale·Q_h·K_hᵀ + mask)·V_h` for each head `h`, the heads being consecutive
  /// `D / heads`-wide slices of the last axis, joined back in place.
  ///
  /// Each head's products read its slice of `queries`, `keys` and `values` through BLAS's leading
  /// dimension and write their slice of the result the same way, so the heads are never copied
  /// out into a `[B, heads, L, D / heads]` layout and back; the scale is the first product's
  /// factor and the mask and softmax work on each head's scores in place. The same function as the separate operations (permute,
  /// product, scale, mask, softmax, product, permute), with fewer intermediate tensors: for
  /// evaluation and serving, where nothing is differentiated.
  ///
  /// - Parameters:
  ///   - queries: `[B, Lq, D]`.
  ///   - keys: `[B, L, D]`.
  ///   - values: `[B, L, D]`, the rows the weights combine.
  ///   - heads: a divisor of `D`.
  ///   - mask: added to every head's scores: `[B, 1, Lq, L]`, or `[1, 1, Lq, L]` for every row.
  ///   - scale: the factor of the scores (usually `1/√(D / heads)`).
  /// - Returns: `[B, Lq, D]`.
  public static func attention(
    queries: Tensor, keys: Tensor, values: Tensor, heads: Int, mask: Tensor, scale: Float
  ) -> Tensor {
    attention(queries: queries, keys: keys, values: values, heads: heads, mask: mask, scale: scale, keeping: nil)
  }

  /// What a recorded attention keeps for its backward pass: the softmax probabilities
  /// (`[B, heads, Lq, L]`), the dropout on them (its keep mask is made again from the key, block
  /// by block, instead of being stored), and how many keys each block of queries was computed
  /// over.
  package struct AttentionRecord {
    package var probabilities: Tensor
    package var dropout: KeyedDropout?
    /// For each (row, head) pair and each block of ``attentionQueryBlock`` queries, the number of
    /// leading keys its scores were computed over; every later key has probability exactly 0.
    package var keyCounts: [Int32]
    package init(probabilities: Tensor, dropout: KeyedDropout? = nil, keyCounts: [Int32] = []) {
      self.probabilities = probabilities
      self.dropout = dropout
      self.keyCounts = keyCounts
    }
  }

  /// Queries per block of the fused attention: each block's scores are computed over the keys
  /// up to the block's last query only when the mask hides every later key from it (a causal
  /// mask), which leaves out ≈ half of a causal attention's products and exponentials.
  package static let attentionQueryBlock = 64

  /// Scores at least this far below a row's largest have a softmax weight of exactly 0 in
  /// `Float` (e⁻¹⁰⁴ is below the smallest subnormal).
  static let negligibleScoreGap: Float = 104

  /// ``attention(queries:keys:values:heads:mask:scale:)`` that can also keep the probabilities
  /// (and apply dropout to them) for a backward pass.
  ///
  /// Queries go in blocks of ``attentionQueryBlock``. A block whose mask rows are below −1,000
  /// at every key after the block's last query is computed over the keys up to that query only,
  /// unless the keys left out could still weigh anything: unless the smallest of its rows'
  /// largest scores is at least ``negligibleScoreGap`` above the mask's largest entry there plus
  /// `|scale|·max‖q‖·max‖k‖` (a bound on every score left out). A block that fails the test (one
  /// holding a row the mask hides entirely, say) is computed over every key. So the result is
  /// the full computation's, for any mask.
  package static func attention(
    queries: Tensor, keys: Tensor, values: Tensor, heads: Int, mask: Tensor, scale: Float,
    keeping record: UnsafeMutablePointer<AttentionRecord>?, dropout: KeyedDropout? = nil
  ) -> Tensor {
    let (b, lq, d) = (queries.shape[0], queries.shape[1], queries.shape[2])
    let l = keys.shape[1]
    precondition(
      queries.rank == 3 && keys.shape == [b, l, d] && values.shape == [b, l, d] && heads > 0 && d % heads == 0
        && (mask.shape == [b, 1, lq, l] || mask.shape == [1, 1, lq, l]),
      "attention: queries \(queries.shape), keys \(keys.shape), values \(values.shape), \(heads) heads, mask \(mask.shape)")
    precondition(record != nil || dropout == nil, "attention: dropout needs a record for its backward pass")
    let size = d / heads
    let maskStride = mask.shape[0] == 1 ? 0 : lq * l
    let block = lq * l
    let queryBlock = attentionQueryBlock
    let blocks = (lq + queryBlock - 1) / queryBlock
    var keyCounts = [Int32](repeating: Int32(l), count: b * heads * blocks)
    // Every (row, head) block is written below (the scores with beta 0 or zeros past a block's
    // keys), so it is not zero-filled first.
    var kept = record == nil ? nil : Tensor(uninitializedShape: [b, heads, lq, l])
    let output = Tensor(shape: [b, lq, d]) { out in
      if out.isEmpty { return }
      if l == 0 {
        out.initialize(repeating: 0)
        return
      }
      queries.withUnsafeBufferPointer { q in
        keys.withUnsafeBufferPointer { k in
          values.withUnsafeBufferPointer { v in
            mask.withUnsafeBufferPointer { m in
              withOptionalMutablePointer(&kept) { keptP in
                keyCounts.withUnsafeMutableBufferPointer { countsP in
                  nonisolated(unsafe) let (q, k, v, m, y, keptP, counts) = (
                    q.baseAddress!, k.baseAddress!, v.baseAddress!, m.baseAddress!, out.baseAddress!, keptP,
                    countsP.baseAddress!
                  )
                  // One (row, head) pair is at most two products of 2·Lq·L·size operations each.
                  let pairFlops = 4 * lq * l * size
                  Parallel.forEachChunk(
                    count: b * heads, minimumPerWorker: Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(pairFlops, 1))
                  ) { pairs in
                    // The dropped weights and their keep mask, then the norms and the mask's maxima.
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block + l + lq + blocks)
                    defer { scratch.deallocate() }
                    let (keepScratch, keyNormTail) = (scratch + block, scratch + 2 * block)
                    let (queryNorms, hiddenMaxima) = (keyNormTail + l, keyNormTail + l + lq)
                    var maskRowOfMaxima = -1
                    for pair in pairs {
                      let (row, head) = pair.quotientAndRemainder(dividingBy: heads)
                      let offset = head * size
                      let scores = keptP.map { $0 + pair * block } ?? scratch
                      let (qRows, kRows, mRows) = (q + row * lq * d + offset, k + row * l * d + offset, m + row * maskStride)
                      // The mask's largest entry after each block's last query (the heads share it).
                      if maskRowOfMaxima != row * maskStride {
                        maskRowOfMaxima = row * maskStride
                        for blockIndex in 0..<blocks {
                          let (r0, r1) = (blockIndex * queryBlock, Swift.min(lq, (blockIndex + 1) * queryBlock))
                          let n = Swift.min(r1, l)
                          hiddenMaxima[blockIndex] = ssm_max_rows(mRows + r0 * l + n, r1 - r0, l - n, l)
                        }
                      }
                      // The norms only for a pair with a block that may leave keys out.
                      var normsReady = false
                      for blockIndex in 0..<blocks {
                        let (r0, r1) = (blockIndex * queryBlock, Swift.min(lq, (blockIndex + 1) * queryBlock))
                        if !normsReady && r1 < l && hiddenMaxima[blockIndex] <= -1000 {
                          ssm_row_norms(kRows, l, size, d, keyNormTail)
                          for j in stride(from: l - 2, through: 0, by: -1) {
                            keyNormTail[j] = Swift.max(keyNormTail[j], keyNormTail[j + 1])
                          }
                          ssm_row_norms(qRows, lq, size, d, queryNorms)
                          normsReady = true
                        }
                        counts[pair * blocks + blockIndex] = Int32(
                          attentionBlockScores(
                            queries: qRows, keys: kRows, ld: d, size: size, keyCount: l, rows: r0..<r1, scale: scale,
                            mask: mRows, hiddenMaximum: hiddenMaxima[blockIndex],
                            queryNorm: normsReady ? UnsafeBufferPointer(start: queryNorms + r0, count: r1 - r0).max()! : 0,
                            keyNormTail: keyNormTail, scores: scores, keepingZeros: keptP != nil))
                      }
                      for blockIndex in 0..<blocks {
                        let (r0, r1) = (blockIndex * queryBlock, Swift.min(lq, (blockIndex + 1) * queryBlock))
                        let n = Int(counts[pair * blocks + blockIndex])
                        var weights = UnsafePointer(scores)
                        if let dropout, let keptP {
                          droppedWeights(
                            dropout, probabilities: keptP, pair: pair, block: block, rows: r0..<r1, keys: n, stride: l,
                            into: scratch, mask: keepScratch)
                          weights = UnsafePointer(scratch)
                        }
                        BLAS.gemmOnCurrentThread(
                          transposeA: false, transposeB: false, m: r1 - r0, n: size, k: n, alpha: 1, a: weights + r0 * l,
                          lda: l, b: v + row * l * d + offset, ldb: d, beta: 0, c: y + (row * lq + r0) * d + offset, ldc: d)
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
    var exponentials = 0
    for (index, count) in keyCounts.enumerated() {
      let blockIndex = index % blocks
      exponentials += (Swift.min(lq, (blockIndex + 1) * queryBlock) - blockIndex * queryBlock) * Int(count)
    }
    FLOPCounter.addExponentials(l == 0 ? 0 : exponentials)
    if let kept { record?.pointee = AttentionRecord(probabilities: kept, dropout: dropout, keyCounts: keyCounts) }
    return output
  }

  /// The softmax probabilities of queries `rows` of one (row, head) pair, written to their rows
  /// of `scores` (`[Lq, keyCount]`), and the number of leading keys they were computed over:
  /// `rows.upperBound` when the mask hides every later key from the block (`hiddenMaximum`, the
  /// mask's largest entry there, is below −1,000) and no later key can weigh anything (every
  /// row's largest score is ``negligibleScoreGap`` above `hiddenMaximum` plus
  /// `|scale|·queryNorm·keyNormTail[n]`, a bound on the later scores), else `keyCount`.
  /// With `keepingZeros`, the later keys' entries are written as 0.
  private static func attentionBlockScores(
    queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, ld: Int, size: Int, keyCount l: Int, rows: Range<Int>,
    scale: Float, mask: UnsafePointer<Float>, hiddenMaximum: Float, queryNorm: Float, keyNormTail: UnsafePointer<Float>,
    scores: UnsafeMutablePointer<Float>, keepingZeros: Bool
  ) -> Int {
    var n = Swift.min(rows.upperBound, l)
    if n < l && !(hiddenMaximum <= -1000) { n = l }
    func softmax(over n: Int) -> Float {
      BLAS.gemmOnCurrentThread(
        transposeA: false, transposeB: true, m: rows.count, n: n, k: size, alpha: scale, a: queries + rows.lowerBound * ld,
        lda: ld, b: keys, ldb: ld, beta: 0, c: scores + rows.lowerBound * l, ldc: l)
      return ssm_masked_softmax_rows(scores + rows.lowerBound * l, mask + rows.lowerBound * l, rows.count, n, l, l)
    }
    let least = softmax(over: n)
    if n < l {
      let bound = hiddenMaximum + Swift.abs(scale) * queryNorm * keyNormTail[n]
      if !(least - bound >= negligibleScoreGap) {
        n = l
        _ = softmax(over: l)
      } else if keepingZeros {
        for i in rows { (scores + i * l + n).update(repeating: 0, count: l - n) }
      }
    }
    return n
  }

  /// The gradients of ``attention(queries:keys:values:heads:mask:scale:keeping:dropout:)`` with
  /// respect to its queries, keys and values, from the gradient of its output and what it kept.
  /// Per (row, head) and block of queries, over the keys the block was computed over: `dV = Aᵀ·dY`
  /// with `A` the (dropped) weights, `dA = dY·Vᵀ` (times the dropout mask), the softmax's
  /// backward `dS = P ∘ (dA − ⟨dA, P⟩)`, then `dQ = scale·dS·K` and `dK = scale·dSᵀ·Q`, every
  /// product through the heads' leading dimension. The blocks go last to first: the last block
  /// spans the most keys (all of them, when there are as many queries as keys), so its `dV` and
  /// `dK` products write them and the others add on.
  package static func attentionBackward(
    outputGradient g: Tensor, queries: Tensor, keys: Tensor, values: Tensor, heads: Int, scale: Float,
    record: AttentionRecord
  ) -> (queries: Tensor, keys: Tensor, values: Tensor) {
    let (b, lq, d) = (queries.shape[0], queries.shape[1], queries.shape[2])
    let l = keys.shape[1]
    let size = d / heads
    let block = lq * l
    if b * lq * l * d == 0 { return (Tensor(zeros: queries.shape), Tensor(zeros: keys.shape), Tensor(zeros: values.shape)) }
    let queryBlock = attentionQueryBlock
    let blocks = (lq + queryBlock - 1) / queryBlock
    let keyCounts = record.keyCounts.isEmpty ? [Int32](repeating: Int32(l), count: b * heads * blocks) : record.keyCounts
    precondition(keyCounts.count == b * heads * blocks, "attentionBackward: \(keyCounts.count) key counts for \(b * heads) pairs")
    // Each (row, head) writes its slices of all three with beta 0 first, which covers them.
    var (dq, dk, dv) = (
      Tensor(uninitializedShape: queries.shape), Tensor(uninitializedShape: keys.shape),
      Tensor(uninitializedShape: values.shape)
    )
    g.withUnsafeBufferPointer { g in
      queries.withUnsafeBufferPointer { q in
        keys.withUnsafeBufferPointer { k in
          values.withUnsafeBufferPointer { v in
            record.probabilities.withUnsafeBufferPointer { probabilities in
              dq.withUnsafeMutableBufferPointer { dq in
                dk.withUnsafeMutableBufferPointer { dk in
                  dv.withUnsafeMutableBufferPointer { dv in
                    keyCounts.withUnsafeBufferPointer { counts in
                      nonisolated(unsafe) let (g, q, k, v, pr, counts) = (
                        g.baseAddress!, q.baseAddress!, k.baseAddress!, v.baseAddress!, probabilities.baseAddress!,
                        counts.baseAddress!
                      )
                      nonisolated(unsafe) let (dq, dk, dv) = (dq.baseAddress!, dk.baseAddress!, dv.baseAddress!)
                      let pairFlops = 8 * lq * l * size
                      Parallel.forEachChunk(
                        count: b * heads,
                        minimumPerWorker: Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(pairFlops, 1))
                      ) { pairs in
                        // The dropped weights, their gradient and the keep mask.
                        let weights = UnsafeMutablePointer<Float>.allocate(capacity: 3 * block)
                        defer { weights.deallocate() }
                        let (dWeights, keepMask) = (weights + block, weights + 2 * block)
                        for pair in pairs {
                          let (row, head) = pair.quotientAndRemainder(dividingBy: heads)
                          let offset = head * size
                          let p = pr + pair * block
                          let (qRows, kRows, vRows) = (
                            q + row * lq * d + offset, k + row * l * d + offset, v + row * l * d + offset
                          )
                          let gRows = g + row * lq * d + offset
                          let (dkRows, dvRows) = (dk + row * l * d + offset, dv + row * l * d + offset)
                          for blockIndex in stride(from: blocks - 1, through: 0, by: -1) {
                            let (r0, r1) = (blockIndex * queryBlock, Swift.min(lq, (blockIndex + 1) * queryBlock))
                            let (n, rows) = (Int(counts[pair * blocks + blockIndex]), r1 - r0)
                            let beta: Float = blockIndex == blocks - 1 ? 0 : 1
                            if beta == 0 && n < l {
                              // Fewer queries than keys: no block may reach the last keys.
                              for j in n..<l {
                                (dkRows + j * d).update(repeating: 0, count: size)
                                (dvRows + j * d).update(repeating: 0, count: size)
                              }
                            }
                            var used = p + r0 * l
                            if let dropout = record.dropout {
                              droppedWeights(
                                dropout, probabilities: pr, pair: pair, block: block, rows: r0..<r1, keys: n, stride: l,
                                into: weights, mask: keepMask)
                              used = UnsafePointer(weights + r0 * l)
                            }
                            BLAS.gemmOnCurrentThread(
                              transposeA: true, transposeB: false, m: n, n: size, k: rows, alpha: 1, a: used, lda: l,
                              b: gRows + r0 * d, ldb: d, beta: beta, c: dvRows, ldc: d)
                            BLAS.gemmOnCurrentThread(
                              transposeA: false, transposeB: true, m: rows, n: n, k: size, alpha: 1, a: gRows + r0 * d, lda: d,
                              b: vRows, ldb: d, beta: 0, c: dWeights + r0 * l, ldc: l)
                            for i in r0..<r1 {
                              let dRow = dWeights + i * l
                              if record.dropout != nil {
                                ssm_binary(SSM_BINARY_MUL.rawValue.int32, dRow, 1, keepMask + i * l, 1, dRow, n)
                              }
                              ssm_softmax_backward_rows(p + i * l, dRow, 1, n, dRow)
                            }
                            BLAS.gemmOnCurrentThread(
                              transposeA: false, transposeB: false, m: rows, n: size, k: n, alpha: scale, a: dWeights + r0 * l,
                              lda: l, b: kRows, ldb: d, beta: 0, c: dq + (row * lq + r0) * d + offset, ldc: d)
                            BLAS.gemmOnCurrentThread(
                              transposeA: true, transposeB: false, m: n, n: size, k: rows, alpha: scale, a: dWeights + r0 * l,
                              lda: l, b: qRows + r0 * d, ldb: d, beta: beta, c: dkRows, ldc: d)
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
    }
    return (dq, dk, dv)
  }

  /// Dropout on queries `rows` of one (row, head) pair's probabilities, over their first `keys`
  /// keys: the dropped weights into `weights` and the keep mask into `mask` (both laid out as
  /// the pair's `[Lq, stride]` block). The mask of each element is `Variable.dropout`'s for
  /// the key at the element's place in `[B, heads, Lq, L]`, so the forward and backward passes
  /// make the same one.
  private static func droppedWeights(
    _ dropout: KeyedDropout, probabilities: UnsafePointer<Float>, pair: Int, block: Int, rows: Range<Int>, keys: Int,
    stride: Int, into weights: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>
  ) {
    // The kernel indexes its buffers by the element's place in the whole [B, heads, Lq, L].
    let start = pair * block
    for i in rows {
      let begin = start + i * stride
      ssm_dropout(
        dropout.key, dropout.probability, 1 / (1 - dropout.probability), probabilities, weights - start, mask - start, begin,
        begin + keys)
    }
  }
}

/// Calls `body` with the tensor's base address, or `nil` for a missing tensor.
package func withOptionalPointer<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
  guard let tensor else { return body(nil) }
  return tensor.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// Calls `body` with the tensor's mutable base address, or `nil` for a missing tensor.
package func withOptionalMutablePointer<R>(_ tensor: inout Tensor?, _ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
  guard tensor != nil else { return body(nil) }
  return tensor!.withUnsafeMutableBufferPointer { body($0.baseAddress) }
}
