import CKernels

extension Tensor {
  /// Views the shape around `axis` as `[outer, n, inner]`.
  @usableFromInline
  func axisLayout(_ axis: Int) -> (outer: Int, n: Int, inner: Int, axis: Int) {
    let a = shape.normalizedAxis(axis)
    let outer = shape.dimensions[..<a].reduce(1, *)
    let inner = shape.dimensions[(a + 1)...].reduce(1, *)
    return (outer, shape[a], inner, a)
  }

  private func reducedShape(_ axis: Int, keeping: Bool) -> Shape {
    var dims = shape.dimensions
    if keeping { dims[axis] = 1 } else { dims.remove(at: axis) }
    return Shape(dims)
  }

  // MARK: Totals

  /// The sum of all elements (accumulated in Double across blocks).
  public func sum() -> Float {
    withUnsafeBufferPointer { Float(ssm_sum($0.baseAddress, $0.count)) }
  }

  /// The mean of all elements.
  /// - Precondition: the tensor is not empty.
  public func mean() -> Float {
    precondition(elementCount > 0, "mean of an empty tensor")
    return withUnsafeBufferPointer { Float(ssm_sum($0.baseAddress, $0.count) / Double($0.count)) }
  }

  /// The largest element; NaN values are ignored (IEEE `maxNum`), `-inf` if all are NaN.
  /// - Precondition: the tensor is not empty.
  public func max() -> Float {
    precondition(elementCount > 0, "max of an empty tensor")
    var out: Float = 0
    withUnsafeBufferPointer { ssm_reduce_rows(SSM_REDUCE_MAX.rawValue.int32, $0.baseAddress, 1, $0.count, &out) }
    return out
  }

  /// The biased variance of all elements (`Σ(x − μ)² / n`).
  /// - Precondition: the tensor is not empty.
  public func variance() -> Float {
    let mu = mean()
    return withUnsafeBufferPointer {
      Float(ssm_sum_squared_deviation($0.baseAddress, mu, $0.count) / Double($0.count))
    }
  }

  // MARK: Along an axis

  /// Sums along `axis` (negative counts from the end).
  public func sum(alongAxis axis: Int, keepingDimension: Bool = false) -> Tensor {
    let (outer, n, inner, a) = axisLayout(axis)
    let outShape = reducedShape(a, keeping: keepingDimension)
    if n == 0 { return Tensor(zeros: outShape) }
    return withUnsafeBufferPointer { source in
      nonisolated(unsafe) let x = source.baseAddress!
      return Tensor(shape: outShape) { out in
        nonisolated(unsafe) let y = out.baseAddress!
        if inner == 1 {
          Parallel.forEachChunk(count: outer, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / n)) { rows in
            ssm_reduce_rows(
              SSM_REDUCE_SUM.rawValue.int32, x + rows.lowerBound * n, rows.count, n, y + rows.lowerBound)
          }
        } else if outer < Parallel.workerCount,
          case let workers = Parallel.workers(count: n, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / inner)),
          workers > 1
        {
          // Fewer sums than workers, each over many rows (a bias's gradient, `[rows, width]`
          // summed over its rows): the summed axis is split instead, worker 0 summing its rows
          // into the output and each other worker into a partial added at the end.
          let slice = outer * inner
          let partials = UnsafeMutablePointer<Float>.allocate(capacity: (workers - 1) * slice)
          defer { partials.deallocate() }
          nonisolated(unsafe) let scratch = partials
          Parallel.forEachWorker(count: n, workers: workers) { worker, rows in
            let sums = worker == 0 ? y : scratch + (worker - 1) * slice
            for o in 0..<outer {
              let dst = sums + o * inner
              dst.update(from: x + (o * n + rows.lowerBound) * inner, count: inner)
              for k in rows.dropFirst() { ssm_accumulate(dst, x + (o * n + k) * inner, inner) }
            }
          }
          for worker in 1..<workers { ssm_accumulate(y, partials + (worker - 1) * slice, slice) }
        } else {
          Parallel.forEachChunk(count: outer, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / (n * inner))) {
            rows in
            for o in rows {
              let dst = y + o * inner
              (dst).update(from: x + o * n * inner, count: inner)
              for k in 1..<n { ssm_accumulate(dst, x + (o * n + k) * inner, inner) }
            }
          }
        }
      }
    }
  }

  /// Means along `axis`.
  public func mean(alongAxis axis: Int, keepingDimension: Bool = false) -> Tensor {
    let n = shape[shape.normalizedAxis(axis)]
    precondition(n > 0, "mean along an empty axis of shape \(shape)")
    return sum(alongAxis: axis, keepingDimension: keepingDimension) * (1 / Float(n))
  }

  /// Biased variance along `axis` (`Σ(x − μ)² / n`), computed in two passes.
  public func variance(alongAxis axis: Int, keepingDimension: Bool = false) -> Tensor {
    let mu = mean(alongAxis: axis, keepingDimension: true)
    let centred = self - mu
    return (centred * centred).mean(alongAxis: axis, keepingDimension: keepingDimension)
  }

  /// Maximum values along `axis`.
  public func max(alongAxis axis: Int, keepingDimension: Bool = false) -> Tensor {
    maxAndArgmax(alongAxis: axis, keepingDimension: keepingDimension).values
  }

  /// Positions of the maximum along `axis`; the first position wins among equal values.
  public func argmax(alongAxis axis: Int, keepingDimension: Bool = false) -> IndexTensor {
    maxAndArgmax(alongAxis: axis, keepingDimension: keepingDimension).indices
  }

  /// Maximum values and their first positions along `axis`.
  /// - Precondition: the axis is not empty.
  public func maxAndArgmax(alongAxis axis: Int, keepingDimension: Bool = false) -> (values: Tensor, indices: IndexTensor) {
    let (outer, n, inner, a) = axisLayout(axis)
    precondition(n > 0, "max along an empty axis of shape \(shape)")
    let outShape = reducedShape(a, keeping: keepingDimension)
    var values = [Float](repeating: 0, count: outer * inner)
    var indices = [Int32](repeating: 0, count: outer * inner)
    withUnsafeBufferPointer { source in
      let x = source.baseAddress!
      values.withUnsafeMutableBufferPointer { vbuf in
        indices.withUnsafeMutableBufferPointer { ibuf in
          for o in 0..<outer {
            if inner == 1 {
              let row = x + o * n
              var best = row[0]
              var bestIndex = 0
              for k in 1..<n where row[k] > best {
                best = row[k]
                bestIndex = k
              }
              vbuf[o] = best
              ibuf[o] = Int32(bestIndex)
            } else {
              let dst = vbuf.baseAddress! + o * inner
              dst.update(from: x + o * n * inner, count: inner)
              for k in 1..<n {
                ssm_max_accumulate(dst, ibuf.baseAddress! + o * inner, x + (o * n + k) * inner, Int32(k), inner)
              }
            }
          }
        }
      }
    }
    return (Tensor(shape: outShape, scalars: values), IndexTensor(shape: outShape, values: indices))
  }

  // MARK: Softmax family (last axis)

  /// `log Σ exp(x)` along the last axis, stable for large magnitudes (the maximum is subtracted).
  public func logSumExp(keepingDimension: Bool = false) -> Tensor {
    let (outer, n, _, a) = axisLayout(-1)
    let outShape = reducedShape(a, keeping: keepingDimension)
    return withUnsafeBufferPointer { source in
      nonisolated(unsafe) let x = source.baseAddress!
      return Tensor(shape: outShape) { out in
        nonisolated(unsafe) let y = out.baseAddress!
        Parallel.forEachChunk(count: outer, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(n, 1))) {
          rows in
          ssm_reduce_rows(
            SSM_REDUCE_LOGSUMEXP.rawValue.int32, x + rows.lowerBound * n, rows.count, n, y + rows.lowerBound)
        }
      }
    }
  }

  /// Softmax along the last axis, stable for large magnitudes.
  public func softmax() -> Tensor {
    FLOPCounter.addExponentials(elementCount)
    return rowwise(ssm_softmax_rows)
  }

  /// Log-softmax along the last axis, stable for large magnitudes.
  public func logSoftmax() -> Tensor { rowwise(ssm_log_softmax_rows) }

  private func rowwise(
    _ kernel: @convention(c) (UnsafePointer<Float>?, Int, Int, UnsafeMutablePointer<Float>?) -> Void
  ) -> Tensor {
    precondition(rank >= 1, "softmax needs at least one axis, got a scalar")
    let n = shape[rank - 1]
    let rows = n == 0 ? 0 : elementCount / n
    if elementCount == 0 { return self }
    return withUnsafeBufferPointer { source in
      nonisolated(unsafe) let x = source.baseAddress!
      return Tensor(shape: shape) { out in
        nonisolated(unsafe) let y = out.baseAddress!
        Parallel.forEachChunk(
          count: rows, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / n), piecesPerWorker: 4
        ) { r in
          kernel(x + r.lowerBound * n, r.count, n, y + r.lowerBound * n)
        }
      }
    }
  }
}

extension UInt32 {
  @usableFromInline var int32: Int32 { Int32(bitPattern: self) }
}
