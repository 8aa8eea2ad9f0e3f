import CKernels
import SSMTensor

// Layer normalisation over the last axis as one fused op. Forward: one pass per row computing
// mean, 1/√(σ²+eps) and the output (CKernels `ssm_layer_norm_rows`). Backward: one pass per row
// for the input gradient that also accumulates ∂γ and ∂β (`ssm_layer_norm_backward_rows`), with
// per-worker partial sums for γ and β. Memory kept: the input, γ, and two floats per row.

extension Variable {
  /// `(x − μ)/√(σ² + eps) ∘ γ + β` over the last axis, biased variance.
  /// - Precondition: `gamma` and `beta` have shape `[D]`, `D` the last extent of `self`.
  public func layerNorm(gamma: Variable, beta: Variable, epsilon: Float = 1e-12) -> Variable {
    let n = shape[shape.rank - 1]
    precondition(
      gamma.shape == [n] && beta.shape == [n],
      "layerNorm: γ \(gamma.shape) and β \(beta.shape) must be [\(n)] for input \(shape)")
    let rows = n == 0 ? 0 : value.elementCount / n
    var mean = [Float](repeating: 0, count: rows)
    var rstd = [Float](repeating: 0, count: rows)
    let x = value
    let (gv, bv) = (gamma.value, beta.value)
    let output = Tensor(shape: shape) { out in
      x.withUnsafeBufferPointer { xb in
        gv.withUnsafeBufferPointer { gb in
          bv.withUnsafeBufferPointer { bb in
            mean.withUnsafeMutableBufferPointer { mb in
              rstd.withUnsafeMutableBufferPointer { rb in
                nonisolated(unsafe) let p = (
                  xb.baseAddress!, gb.baseAddress!, bb.baseAddress!, out.baseAddress!, mb.baseAddress!, rb.baseAddress!
                )
                Parallel.forEachChunk(
                  count: rows, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(n, 1))
                ) { r in
                  let o = r.lowerBound
                  ssm_layer_norm_rows(p.0 + o * n, p.1, p.2, epsilon, r.count, n, p.3 + o * n, p.4 + o, p.5 + o)
                }
              }
            }
          }
        }
      }
    }
    return Variable.record(value: output, inputs: [self, gamma, beta]) {
      { [mean, rstd] g in
        let workers = Swift.min(Parallel.workerCount, Swift.max(1, rows * n / Parallel.elementwiseThreshold))
        var partialGamma = [Float](repeating: 0, count: workers * n)
        var partialBeta = [Float](repeating: 0, count: workers * n)
        let dx = Tensor(shape: x.shape) { out in
          x.withUnsafeBufferPointer { xb in
            g.withUnsafeBufferPointer { gb in
              gv.withUnsafeBufferPointer { gammaBuffer in
                partialGamma.withUnsafeMutableBufferPointer { pg in
                  partialBeta.withUnsafeMutableBufferPointer { pb in
                    nonisolated(unsafe) let p = (
                      xb.baseAddress!, gb.baseAddress!, gammaBuffer.baseAddress!, out.baseAddress!, pg.baseAddress!,
                      pb.baseAddress!
                    )
                    mean.withUnsafeBufferPointer { mb in
                      rstd.withUnsafeBufferPointer { rb in
                        nonisolated(unsafe) let stats = (mb.baseAddress!, rb.baseAddress!)
                        Parallel.forEachChunk(count: workers, minimumPerWorker: 1) { w in
                          for worker in w {
                            let start = rows * worker / workers
                            let end = rows * (worker + 1) / workers
                            ssm_layer_norm_backward_rows(
                              p.0 + start * n, stats.0 + start, stats.1 + start, p.2, p.1 + start * n, end - start, n,
                              p.3 + start * n, p.4 + worker * n, p.5 + worker * n)
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
        var dGamma = Tensor(shape: [n], scalars: Array(partialGamma[0..<n]))
        var dBeta = Tensor(shape: [n], scalars: Array(partialBeta[0..<n]))
        for w in 1..<Swift.max(workers, 1) {
          dGamma += Tensor(shape: [n], scalars: Array(partialGamma[(w * n)..<((w + 1) * n)]))
          dBeta += Tensor(shape: [n], scalars: Array(partialBeta[(w * n)..<((w + 1) * n)]))
        }
        return [dx, dGamma, dBeta]
      }
    }
  }
}
