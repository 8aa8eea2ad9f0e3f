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
  /// out into a `[B, heads, L, D / heads]` layout and back; the scale, mask and softmax are one
  /// pass over each head's scores. The same function as the separate operations (permute,
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
    let (b, lq, d) = (queries.shape[0], queries.shape[1], queries.shape[2])
    let l = keys.shape[1]
    precondition(
      queries.rank == 3 && keys.shape == [b, l, d] && values.shape == [b, l, d] && heads > 0 && d % heads == 0
        && (mask.shape == [b, 1, lq, l] || mask.shape == [1, 1, lq, l]),
      "attention: queries \(queries.shape), keys \(keys.shape), values \(values.shape), \(heads) heads, mask \(mask.shape)")
    let size = d / heads
    let maskStride = mask.shape[0] == 1 ? 0 : lq * l
    FLOPCounter.addExponentials(b * heads * lq * l)
    return Tensor(shape: [b, lq, d]) { out in
      if out.isEmpty { return }
      if l == 0 {
        out.initialize(repeating: 0)
        return
      }
      queries.withUnsafeBufferPointer { q in
        keys.withUnsafeBufferPointer { k in
          values.withUnsafeBufferPointer { v in
            mask.withUnsafeBufferPointer { m in
              nonisolated(unsafe) let (q, k, v, m, y) = (
                q.baseAddress!, k.baseAddress!, v.baseAddress!, m.baseAddress!, out.baseAddress!
              )
              // One (row, head) pair is two products of 2·Lq·L·size operations each.
              let pairFlops = 4 * lq * l * size
              Parallel.forEachChunk(
                count: b * heads, minimumPerWorker: Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(pairFlops, 1))
              ) { pairs in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: lq * l)
                defer { scores.deallocate() }
                for pair in pairs {
                  let (row, head) = pair.quotientAndRemainder(dividingBy: heads)
                  let offset = head * size
                  BLAS.gemmOnCurrentThread(
                    transposeA: false, transposeB: true, m: lq, n: l, k: size, alpha: scale,
                    a: q + row * lq * d + offset, lda: d, b: k + row * l * d + offset, ldb: d, beta: 0, c: scores, ldc: l)
                  ssm_binary(SSM_BINARY_ADD.rawValue.int32, scores, 1, m + row * maskStride, 1, scores, lq * l)
                  ssm_softmax_rows(scores, lq, l, scores)
                  BLAS.gemmOnCurrentThread(
                    transposeA: false, transposeB: false, m: lq, n: size, k: l, alpha: 1, a: scores, lda: l,
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
