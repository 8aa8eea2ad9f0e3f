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

  /// What a recorded attention keeps for its backward pass: the softmax probabilities and, with
  /// dropout on them, the keep mask (`1/(1 − p)` or 0), both `[B, heads, Lq, L]`.
  package struct AttentionRecord {
    package var probabilities: Tensor
    package var dropoutMask: Tensor?
    package init(probabilities: Tensor, dropoutMask: Tensor?) {
      self.probabilities = probabilities
      self.dropoutMask = dropoutMask
    }
  }

  /// The dropout on a recorded attention's probabilities: the key and probability of
  /// `Variable.dropout`, so that the mask is the one the separate dropout op would draw on the
  /// `[B, heads, Lq, L]` probabilities.
  package struct AttentionDropout {
    package var key: UInt64
    package var probability: Float
    package init(key: UInt64, probability: Float) {
      self.key = key
      self.probability = probability
    }
  }

  /// ``attention(queries:keys:values:heads:mask:scale:)`` that can also keep the probabilities
  /// (and apply dropout to them) for a backward pass.
  package static func attention(
    queries: Tensor, keys: Tensor, values: Tensor, heads: Int, mask: Tensor, scale: Float,
    keeping record: UnsafeMutablePointer<AttentionRecord>?, dropout: AttentionDropout? = nil
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
    FLOPCounter.addExponentials(b * heads * block)
    // Every (row, head) block of both is written below (the scores with beta 0, the mask by the
    // dropout kernel), so neither is zero-filled first.
    var kept = record == nil ? nil : Tensor(uninitializedShape: [b, heads, lq, l])
    var keepMask = dropout == nil ? nil : Tensor(uninitializedShape: [b, heads, lq, l])
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
                withOptionalMutablePointer(&keepMask) { maskP in
                  nonisolated(unsafe) let (q, k, v, m, y, keptP, maskP) = (
                    q.baseAddress!, k.baseAddress!, v.baseAddress!, m.baseAddress!, out.baseAddress!, keptP, maskP
                  )
                  // One (row, head) pair is two products of 2·Lq·L·size operations each.
                  let pairFlops = 4 * lq * l * size
                  Parallel.forEachChunk(
                    count: b * heads, minimumPerWorker: Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(pairFlops, 1))
                  ) { pairs in
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block)
                    defer { scratch.deallocate() }
                    for pair in pairs {
                      let (row, head) = pair.quotientAndRemainder(dividingBy: heads)
                      let offset = head * size
                      let scores = keptP.map { $0 + pair * block } ?? scratch
                      BLAS.gemmOnCurrentThread(
                        transposeA: false, transposeB: true, m: lq, n: l, k: size, alpha: scale,
                        a: q + row * lq * d + offset, lda: d, b: k + row * l * d + offset, ldb: d, beta: 0, c: scores, ldc: l)
                      ssm_binary(SSM_BINARY_ADD.rawValue.int32, scores, 1, m + row * maskStride, 1, scores, block)
                      ssm_softmax_rows(scores, lq, l, scores)
                      var weights = UnsafePointer(scores)
                      if let dropout, let keptP, let maskP {
                        // The kernel indexes its buffers by the element's place in [B, heads, Lq, L].
                        let range = (pair * block)..<((pair + 1) * block)
                        ssm_dropout(
                          dropout.key, dropout.probability, 1 / (1 - dropout.probability), keptP, scratch - range.lowerBound,
                          maskP, range.lowerBound, range.upperBound)
                        weights = UnsafePointer(scratch)
                      }
                      BLAS.gemmOnCurrentThread(
                        transposeA: false, transposeB: false, m: lq, n: size, k: l, alpha: 1, a: weights, lda: l,
                        b: v + row * l * d + offset, ldb: d, beta: 0, c: y + row * lq * d + offset, ldc: d)
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    if let kept { record?.pointee = AttentionRecord(probabilities: kept, dropoutMask: keepMask) }
    return output
  }

  /// The gradients of ``attention(queries:keys:values:heads:mask:scale:keeping:dropout:)`` with
  /// respect to its queries, keys and values, from the gradient of its output and what it kept.
  /// Per (row, head): `dV = Aᵀ·dY` with `A` the (dropped) weights, `dA = dY·Vᵀ` (times the
  /// dropout mask), the softmax's backward `dS = P ∘ (dA − ⟨dA, P⟩)`, then `dQ = scale·dS·K` and
  /// `dK = scale·dSᵀ·Q`, every product through the heads' leading dimension.
  package static func attentionBackward(
    outputGradient g: Tensor, queries: Tensor, keys: Tensor, values: Tensor, heads: Int, scale: Float,
    record: AttentionRecord
  ) -> (queries: Tensor, keys: Tensor, values: Tensor) {
    let (b, lq, d) = (queries.shape[0], queries.shape[1], queries.shape[2])
    let l = keys.shape[1]
    let size = d / heads
    let block = lq * l
    if b * lq * l * d == 0 { return (Tensor(zeros: queries.shape), Tensor(zeros: keys.shape), Tensor(zeros: values.shape)) }
    // Each (row, head) writes its slices of all three with beta 0, which covers them.
    var (dq, dk, dv) = (
      Tensor(uninitializedShape: queries.shape), Tensor(uninitializedShape: keys.shape),
      Tensor(uninitializedShape: values.shape)
    )
    g.withUnsafeBufferPointer { g in
      queries.withUnsafeBufferPointer { q in
        keys.withUnsafeBufferPointer { k in
          values.withUnsafeBufferPointer { v in
            record.probabilities.withUnsafeBufferPointer { probabilities in
              withOptionalPointer(record.dropoutMask) { maskP in
                dq.withUnsafeMutableBufferPointer { dq in
                  dk.withUnsafeMutableBufferPointer { dk in
                    dv.withUnsafeMutableBufferPointer { dv in
                      nonisolated(unsafe) let (g, q, k, v, pr, maskP) = (
                        g.baseAddress!, q.baseAddress!, k.baseAddress!, v.baseAddress!, probabilities.baseAddress!,
                        maskP
                      )
                      nonisolated(unsafe) let (dq, dk, dv) = (dq.baseAddress!, dk.baseAddress!, dv.baseAddress!)
                      let pairFlops = 8 * lq * l * size
                      Parallel.forEachChunk(
                        count: b * heads,
                        minimumPerWorker: Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(pairFlops, 1))
                      ) { pairs in
                        let weights = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block)
                        defer { weights.deallocate() }
                        let dWeights = weights + block
                        for pair in pairs {
                          let (row, head) = pair.quotientAndRemainder(dividingBy: heads)
                          let offset = head * size
                          let p = pr + pair * block
                          let (qRows, kRows, vRows) = (
                            q + row * lq * d + offset, k + row * l * d + offset, v + row * l * d + offset
                          )
                          let gRows = g + row * lq * d + offset
                          var used = p
                          if let maskP {
                            ssm_binary(SSM_BINARY_MUL.rawValue.int32, p, 1, maskP + pair * block, 1, weights, block)
                            used = UnsafePointer(weights)
                          }
                          BLAS.gemmOnCurrentThread(
                            transposeA: true, transposeB: false, m: l, n: size, k: lq, alpha: 1, a: used, lda: l,
                            b: gRows, ldb: d, beta: 0, c: dv + row * l * d + offset, ldc: d)
                          BLAS.gemmOnCurrentThread(
                            transposeA: false, transposeB: true, m: lq, n: l, k: size, alpha: 1, a: gRows, lda: d,
                            b: vRows, ldb: d, beta: 0, c: dWeights, ldc: l)
                          if let maskP {
                            ssm_binary(SSM_BINARY_MUL.rawValue.int32, dWeights, 1, maskP + pair * block, 1, dWeights, block)
                          }
                          ssm_softmax_backward_rows(p, dWeights, lq, l, dWeights)
                          BLAS.gemmOnCurrentThread(
                            transposeA: false, transposeB: false, m: lq, n: size, k: l, alpha: scale, a: dWeights, lda: l,
                            b: kRows, ldb: d, beta: 0, c: dq + row * lq * d + offset, ldc: d)
                          BLAS.gemmOnCurrentThread(
                            transposeA: true, transposeB: false, m: l, n: size, k: lq, alpha: scale, a: dWeights, lda: l,
                            b: qRows, ldb: d, beta: 0, c: dk + row * l * d + offset, ldc: d)
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
