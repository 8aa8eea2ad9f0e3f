import CKernels
import SSMTensor

// Cross-entropy over a whole catalogue without its logits: `hidden·Wᵀ` is formed a block of rows
// at a time, each block's loss and gradient taken and the block's contributions to ∂hidden and ∂W
// accumulated before the next block is formed (the idea of Cut Cross-Entropy). Memory: two
// blocks of `[rows, V]`, never `[N, V]`.

extension Variable {
  /// The rows of `[rows, V]` logits that one block of ``linearSoftmaxCrossEntropy(hidden:weight:targets:rowsPerBlock:)``
  /// forms by default: as many as keep a block near 2M floats (8 MB), at least one.
  public static func defaultCrossEntropyBlockRows(classes: Int) -> Int { Swift.max(1, (1 << 21) / Swift.max(classes, 1)) }

  /// The mean over rows of `logsumexp(hidden_r·Wᵀ) − hidden_r·W[target_r]`, the softmax
  /// cross-entropy of the logits `hidden·Wᵀ`, without materialising them.
  ///
  /// The value equals `softmaxCrossEntropy(logits: matmul(hidden, weight, transposeB: true), targets:)`.
  /// When recording, the gradients of `hidden` and `weight` are accumulated block by block in
  /// the forward pass (three matrix products per block in all) and only scaled in the backward.
  ///
  /// - Parameters:
  ///   - hidden: the row representations, `[N, D]`.
  ///   - weight: the class table, `[V, D]` (an item embedding).
  ///   - targets: the class of each row, `[N]`, values in `0..<V`.
  ///   - rowsPerBlock: rows of logits formed at a time; by default
  ///     ``defaultCrossEntropyBlockRows(classes:)``.
  /// - Precondition: shapes as above and every target in range.
  public static func linearSoftmaxCrossEntropy(
    hidden: Variable, weight: Variable, targets: IndexTensor, rowsPerBlock: Int? = nil
  ) -> Variable {
    precondition(
      hidden.shape.rank == 2 && weight.shape.rank == 2,
      "linearSoftmaxCrossEntropy: hidden \(hidden.shape) and weight \(weight.shape) must be matrices")
    let (rows, width) = (hidden.shape[0], hidden.shape[1])
    let classes = weight.shape[0]
    precondition(
      weight.shape[1] == width, "linearSoftmaxCrossEntropy: weight \(weight.shape) does not match hidden \(hidden.shape)")
    precondition(
      targets.shape == [rows], "linearSoftmaxCrossEntropy: targets \(targets.shape) do not match hidden \(hidden.shape)")
    precondition(
      targets.values.allSatisfy { $0 >= 0 && Int($0) < classes }, "linearSoftmaxCrossEntropy: a target is outside 0..<\(classes)")
    let block = Swift.max(1, Swift.min(rowsPerBlock ?? defaultCrossEntropyBlockRows(classes: classes), Swift.max(rows, 1)))
    let recording = GradientMode.isEnabled && (hidden.requiresGradient || weight.requiresGradient)
    let scale = 1 / Float(Swift.max(rows, 1))
    var rowLoss = [Float](repeating: 0, count: rows)
    var dHidden = recording ? Tensor(zeros: hidden.shape) : Tensor(zeros: [0])
    var dWeight = recording ? Tensor(zeros: weight.shape) : Tensor(zeros: [0])
    var logits = [Float](repeating: 0, count: block * classes)
    FLOPCounter.addExponentials(rows * classes)
    var gradient = [Float](repeating: 0, count: block * classes)
    hidden.value.withUnsafeBufferPointer { hp in
      weight.value.withUnsafeBufferPointer { wp in
        targets.values.withUnsafeBufferPointer { tp in
          rowLoss.withUnsafeMutableBufferPointer { lp in
            logits.withUnsafeMutableBufferPointer { zp in
              gradient.withUnsafeMutableBufferPointer { gp in
                dHidden.withUnsafeMutableBufferPointer { dhp in
                  dWeight.withUnsafeMutableBufferPointer { dwp in
                    var start = 0
                    while start < rows {
                      let count = Swift.min(block, rows - start)
                      let h = hp.baseAddress! + start * width
                      BLAS.gemm(
                        transposeA: false, transposeB: true, m: count, n: classes, k: width, alpha: 1, a: h, lda: width,
                        b: wp.baseAddress!, ldb: width, beta: 0, c: zp.baseAddress!, ldc: classes)
                      nonisolated(unsafe) let p = (
                        zp.baseAddress!, tp.baseAddress! + start, lp.baseAddress! + start, gp.baseAddress!
                      )
                      Parallel.forEachChunk(
                        count: count, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(classes, 1))
                      ) { r in
                        let o = r.lowerBound
                        ssm_softmax_cross_entropy_rows(
                          p.0 + o * classes, p.1 + o, r.count, classes, scale, p.2 + o, p.3 + o * classes)
                      }
                      if recording {
                        // ∂hidden_block = G·W, ∂W += Gᵀ·hidden_block.
                        BLAS.gemm(
                          transposeA: false, transposeB: false, m: count, n: width, k: classes, alpha: 1, a: gp.baseAddress!,
                          lda: classes, b: wp.baseAddress!, ldb: width, beta: 0, c: dhp.baseAddress! + start * width, ldc: width)
                        BLAS.gemm(
                          transposeA: true, transposeB: false, m: classes, n: width, k: count, alpha: 1, a: gp.baseAddress!,
                          lda: classes, b: h, ldb: width, beta: 1, c: dwp.baseAddress!, ldc: width)
                      }
                      start += count
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    let loss = Tensor(Float(rowLoss.reduce(0.0) { $0 + Double($1) } / Double(Swift.max(rows, 1))))
    return record(value: loss, inputs: [hidden, weight]) {
      { [dHidden, dWeight] g in
        let s = g.scalar
        return [s == 1 ? dHidden : dHidden * s, s == 1 ? dWeight : dWeight * s]
      }
    }
  }
}
