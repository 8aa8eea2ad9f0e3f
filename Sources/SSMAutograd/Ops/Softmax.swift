import CKernels
import SSMTensor

// Softmax and log-softmax along the last axis. Memory kept: the output.

extension Variable {
  /// Softmax along the last axis; backward `∂x = y ∘ (g − ⟨g, y⟩)` per row in one pass.
  public func softmax() -> Variable {
    let y = value.softmax()
    let n = shape[shape.rank - 1]
    return Variable.record(value: y, inputs: [self]) {
      { g in
        let rows = n == 0 ? 0 : y.elementCount / n
        return [
          Tensor(shape: y.shape) { out in
            y.withUnsafeBufferPointer { yb in
              g.withUnsafeBufferPointer { gb in
                nonisolated(unsafe) let p = (yb.baseAddress!, gb.baseAddress!, out.baseAddress!)
                Parallel.forEachChunk(
                  count: rows, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(n, 1))
                ) { r in
                  ssm_softmax_backward_rows(p.0 + r.lowerBound * n, p.1 + r.lowerBound * n, r.count, n, p.2 + r.lowerBound * n)
                }
              }
            }
          }
        ]
      }
    }
  }

  /// Log-softmax along the last axis; backward `∂x = g − softmax(x)·Σg`.
  public func logSoftmax() -> Variable {
    let y = value.logSoftmax()
    return Variable.record(value: y, inputs: [self]) {
      { g in [g - y.exp() * g.sum(alongAxis: -1, keepingDimension: true)] }
    }
  }
}
