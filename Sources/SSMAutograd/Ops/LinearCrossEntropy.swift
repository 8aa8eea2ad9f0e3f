import CKernels
import Foundation
import SSMTensor

// Cross-entropy over a whole catalogue without its logits: `hidden·Wᵀ` is formed a block of rows
// at a time, each block's loss and gradient taken and the block's contributions to ∂hidden and ∂W
// accumulated before the next block is formed (the idea of Cut Cross-Entropy). Memory: two
// blocks of `[rows, V]`, never `[N, V]`.
//
// A large catalogue leaves few rows per block, and every block then reads all of W and reads and
// writes all of ∂W for a product of a few rows (at V = 1,000,000, two rows: 128 passes over
// 512 MB for a batch of 256). Past `largeCatalogueClasses` the logits are blocked over classes
// as well, in two passes per block of rows: the first forms each class block and folds its
// logsumexp into the rows' running one, the second forms the block again and takes its
// gradient. W is then read twice and ∂W written once per block of up to 1,024 rows, at the cost
// of forming the logits twice.

extension Variable {
  /// The rows of `[rows, V]` logits that one block of ``linearSoftmaxCrossEntropy(hidden:weight:targets:rowsPerBlock:classesPerBlock:)``
  /// forms by default: as many as keep a block near 2M floats (8 MB), at least one.
  public static func defaultCrossEntropyBlockRows(classes: Int) -> Int { Swift.max(1, (1 << 21) / Swift.max(classes, 1)) }

  /// Catalogues larger than this are blocked over classes as well as rows by default.
  static let largeCatalogueClasses = 1 << 14

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
  ///     ``defaultCrossEntropyBlockRows(classes:)``, or up to 1,024 when the classes are blocked.
  ///   - classesPerBlock: classes of logits formed at a time, in two passes (a running
  ///     logsumexp, then the gradient); `nil` forms whole rows for catalogues of up to 16,384
  ///     classes and blocks of `2²¹ / rowsPerBlock` classes above.
  /// - Precondition: shapes as above and every target in range.
  public static func linearSoftmaxCrossEntropy(
    hidden: Variable, weight: Variable, targets: IndexTensor, rowsPerBlock: Int? = nil, classesPerBlock: Int? = nil
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
    if classesPerBlock != nil || (rowsPerBlock == nil && classes > largeCatalogueClasses) {
      let rowBlock = Swift.max(1, Swift.min(rowsPerBlock ?? 1024, Swift.max(rows, 1)))
      return linearSoftmaxCrossEntropyOverClassBlocks(
        hidden: hidden, weight: weight, targets: targets, rowsPerBlock: rowBlock,
        classesPerBlock: Swift.max(1, Swift.min(classesPerBlock ?? (1 << 21) / rowBlock, classes)))
    }
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
                        addBlockGradients(
                          gp.baseAddress!, rows: count, classes: classes, width: width, hidden: h, weight: wp.baseAddress!,
                          dHidden: dhp.baseAddress! + start * width, dWeight: dwp.baseAddress!)
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
    return recordLoss(
      rowLoss.reduce(0.0) { $0 + Double($1) } / Double(Swift.max(rows, 1)), hidden: hidden, weight: weight,
      dHidden: dHidden, dWeight: dWeight)
  }

  /// `∂hidden_rows += G·W_block` and `∂W_block += Gᵀ·hidden_rows` for a block of `rows × classes`
  /// gradients of the logits `G` (row stride `classes`).
  private static func addBlockGradients(
    _ g: UnsafePointer<Float>, rows: Int, classes: Int, width: Int, hidden: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, dHidden: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>
  ) {
    BLAS.gemm(
      transposeA: false, transposeB: false, m: rows, n: width, k: classes, alpha: 1, a: g, lda: classes, b: weight,
      ldb: width, beta: 1, c: dHidden, ldc: width)
    BLAS.gemm(
      transposeA: true, transposeB: false, m: classes, n: width, k: rows, alpha: 1, a: g, lda: classes, b: hidden,
      ldb: width, beta: 1, c: dWeight, ldc: width)
  }

  /// The mean loss as one tape node whose pullback scales the gradients accumulated forward.
  private static func recordLoss(
    _ mean: Double, hidden: Variable, weight: Variable, dHidden: Tensor, dWeight: Tensor
  ) -> Variable {
    record(value: Tensor(Float(mean)), inputs: [hidden, weight]) {
      { g in
        let s = g.scalar
        return [s == 1 ? dHidden : dHidden * s, s == 1 ? dWeight : dWeight * s]
      }
    }
  }

  /// ``linearSoftmaxCrossEntropy(hidden:weight:targets:rowsPerBlock:classesPerBlock:)`` with
  /// the logits formed `rowsPerBlock × classesPerBlock` at a time, in two passes per block of
  /// rows (shapes and targets already checked).
  private static func linearSoftmaxCrossEntropyOverClassBlocks(
    hidden: Variable, weight: Variable, targets: IndexTensor, rowsPerBlock: Int, classesPerBlock: Int
  ) -> Variable {
    let (rows, width, classes) = (hidden.shape[0], hidden.shape[1], weight.shape[0])
    let recording = GradientMode.isEnabled && (hidden.requiresGradient || weight.requiresGradient)
    let scale = 1 / Float(Swift.max(rows, 1))
    FLOPCounter.addExponentials((recording ? 2 : 1) * rows * classes)
    var rowLoss = [Double](repeating: 0, count: rows)
    var dHidden = recording ? Tensor(zeros: hidden.shape) : Tensor(zeros: [0])
    var dWeight = recording ? Tensor(zeros: weight.shape) : Tensor(zeros: [0])
    var logits = [Float](repeating: 0, count: rowsPerBlock * classesPerBlock)
    var gradient = [Float](repeating: 0, count: recording ? rowsPerBlock * classesPerBlock : 0)
    var blockLSE = [Float](repeating: 0, count: rowsPerBlock)
    var lse = [Double](repeating: 0, count: rowsPerBlock)
    var lseFloat = [Float](repeating: 0, count: rowsPerBlock)
    var targetLogit = [Float](repeating: 0, count: rowsPerBlock)
    hidden.value.withUnsafeBufferPointer { hp in
      weight.value.withUnsafeBufferPointer { wp in
        targets.values.withUnsafeBufferPointer { tp in
          dHidden.withUnsafeMutableBufferPointer { dhp in
            dWeight.withUnsafeMutableBufferPointer { dwp in
              logits.withUnsafeMutableBufferPointer { zp in
                gradient.withUnsafeMutableBufferPointer { gp in
                  nonisolated(unsafe) let (z, g, t) = (zp.baseAddress!, gp.baseAddress, tp.baseAddress!)
                  for start in stride(from: 0, to: rows, by: rowsPerBlock) {
                    let count = Swift.min(rowsPerBlock, rows - start)
                    let h = hp.baseAddress! + start * width
                    func formLogits(_ first: Int, _ n: Int) {
                      BLAS.gemm(
                        transposeA: false, transposeB: true, m: count, n: n, k: width, alpha: 1, a: h, lda: width,
                        b: wp.baseAddress! + first * width, ldb: width, beta: 0, c: z, ldc: n)
                    }
                    func forEachRowRange(_ n: Int, _ body: (Range<Int>) -> Void) {
                      Parallel.forEachChunk(
                        count: count, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(n, 1)), body)
                    }
                    for r in 0..<count { lse[r] = -Double.infinity }
                    for first in stride(from: 0, to: classes, by: classesPerBlock) {
                      let n = Swift.min(classesPerBlock, classes - first)
                      formLogits(first, n)
                      blockLSE.withUnsafeMutableBufferPointer { bp in
                        nonisolated(unsafe) let out = bp.baseAddress!
                        forEachRowRange(n) { r in
                          ssm_reduce_rows(
                            Int32(bitPattern: SSM_REDUCE_LOGSUMEXP.rawValue), z + r.lowerBound * n, r.count, n, out + r.lowerBound
                          )
                        }
                      }
                      for r in 0..<count {
                        let (a, b) = (lse[r], Double(blockLSE[r]))
                        let top = Swift.max(a, b)
                        // −∞ on both sides stays −∞; a NaN stays NaN.
                        if top == -Double.infinity {
                          lse[r] = a + b
                        } else {
                          lse[r] = top + Foundation.log(Foundation.exp(a - top) + Foundation.exp(b - top))
                        }
                        let target = Int(t[start + r]) - first
                        if target >= 0 && target < n { targetLogit[r] = z[r * n + target] }
                      }
                    }
                    for r in 0..<count {
                      rowLoss[start + r] = lse[r] - Double(targetLogit[r])
                      lseFloat[r] = Float(lse[r])
                    }
                    guard recording, let g else { continue }
                    for first in stride(from: 0, to: classes, by: classesPerBlock) {
                      let n = Swift.min(classesPerBlock, classes - first)
                      formLogits(first, n)
                      lseFloat.withUnsafeBufferPointer { lp in
                        nonisolated(unsafe) let shift = lp.baseAddress!
                        forEachRowRange(n) { r in
                          ssm_softmax_cross_entropy_block(
                            z + r.lowerBound * n, shift + r.lowerBound, t + start + r.lowerBound, r.count, n, first, scale,
                            g + r.lowerBound * n)
                        }
                      }
                      addBlockGradients(
                        g, rows: count, classes: n, width: width, hidden: h, weight: wp.baseAddress! + first * width,
                        dHidden: dhp.baseAddress! + start * width, dWeight: dwp.baseAddress! + first * width)
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return recordLoss(
      rowLoss.reduce(0.0, +) / Double(Swift.max(rows, 1)), hidden: hidden, weight: weight, dHidden: dHidden,
      dWeight: dWeight)
  }
}
