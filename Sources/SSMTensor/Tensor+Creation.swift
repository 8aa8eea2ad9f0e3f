extension Tensor {
  /// A tensor of the given shape filled with zeros.
  public init(zeros shape: Shape) {
    self.init(repeating: 0, shape: shape)
  }

  /// A tensor of the given shape filled with ones.
  public init(ones shape: Shape) {
    self.init(repeating: 1, shape: shape)
  }

  /// A tensor of the given shape with every element equal to `value`.
  public init(repeating value: Float, shape: Shape) {
    let count = shape.elementCount
    guard count >= 2 * Parallel.elementwiseThreshold else {
      self.init(shape: shape, scalars: [Float](repeating: value, count: count))
      return
    }
    // Filled by every worker: a step's zeroed buffers run to tens of MB, and one core's stores
    // fill them at a fraction of the bandwidth two have.
    self.init(uninitializedShape: shape)
    withUnsafeMutableBufferPointer { buffer in
      nonisolated(unsafe) let base = buffer.baseAddress!
      Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold) { range in
        (base + range.lowerBound).initialize(repeating: value, count: range.count)
      }
    }
  }

  /// A rank-1 tensor holding the given values.
  public init(_ values: [Float]) {
    self.init(shape: [values.count], scalars: values)
  }

  /// A rank-2 tensor from rows of equal length.
  /// - Precondition: every row has the same length.
  public init(rows: [[Float]]) {
    let width = rows.first?.count ?? 0
    precondition(rows.allSatisfy { $0.count == width }, "Rows of a matrix must have equal lengths")
    self.init(shape: [rows.count, width], scalars: rows.flatMap { $0 })
  }

  /// `start, start + step, …` up to but not including `end`, as a rank-1 tensor.
  public init(rangeFrom start: Float, to end: Float, stride step: Float = 1) {
    precondition(step != 0, "arange needs a non-zero step")
    let count = Swift.max(0, Int(((end - start) / step).rounded(.up)))
    self.init(shape: [count], scalars: (0..<count).map { start + Float($0) * step })
  }

  /// A tensor of zeros with the shape of `other`.
  public init(zerosLike other: Tensor) { self.init(zeros: other.shape) }
}
