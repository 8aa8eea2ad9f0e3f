import CKernels
import SSMTensor

// Softmax cross-entropy over all classes as one fused op: the forward pass computes each row's
// loss and, in the same sweep over the logits, its gradient `(softmax − onehot)/B`; no one-hot
// tensor is ever built. Memory kept: that gradient, `[B, V]`.

extension Variable {
  /// The mean over rows of `logsumexp(logits_b) − logits_b[target_b]`.
  ///
  /// - Parameters:
  ///   - logits: scores, shape `[B, V]`.
  ///   - targets: the correct class of each row, shape `[B]`, values in `0..<V`.
  /// - Returns: a rank-0 variable.
  /// - Precondition: shapes as above and every target in range.
  public static func softmaxCrossEntropy(logits: Variable, targets: IndexTensor) -> Variable {
    precondition(logits.shape.rank == 2, "softmaxCrossEntropy needs [B, V] logits, got \(logits.shape)")
    let (rows, n) = (logits.shape[0], logits.shape[1])
    precondition(targets.shape == [rows], "softmaxCrossEntropy: targets \(targets.shape) do not match logits \(logits.shape)")
    precondition(
      targets.values.allSatisfy { $0 >= 0 && Int($0) < n }, "softmaxCrossEntropy: a target is outside 0..<\(n)")
    let scale = 1 / Float(Swift.max(rows, 1))
    var rowLoss = [Float](repeating: 0, count: rows)
    let gradient = Tensor(shape: logits.shape) { out in
      logits.value.withUnsafeBufferPointer { lb in
        targets.values.withUnsafeBufferPointer { tb in
          rowLoss.withUnsafeMutableBufferPointer { rl in
            nonisolated(unsafe) let p = (lb.baseAddress!, tb.baseAddress!, rl.baseAddress!, out.baseAddress!)
            Parallel.forEachChunk(count: rows, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(n, 1))) {
              r in
              let o = r.lowerBound
              ssm_softmax_cross_entropy_rows(p.0 + o * n, p.1 + o, r.count, n, scale, p.2 + o, p.3 + o * n)
            }
          }
        }
      }
    }
    let loss = Tensor(Float(rowLoss.reduce(0.0) { $0 + Double($1) } / Double(Swift.max(rows, 1))))
    return record(value: loss, inputs: [logits]) {
      { g in [g.scalar == 1 ? gradient : gradient * g.scalar] }
    }
  }
}
