extension Tensor {
  // MARK: Permutations

  /// The axes reordered: axis `i` of the result is axis `permutation[i]` of `self` (a copy).
  /// - Precondition: `permutation` is a permutation of `0..<rank`.
  public func permuted(_ permutation: [Int]) -> Tensor {
    precondition(
      permutation.count == rank && permutation.sorted() == Array(0..<rank),
      "\(permutation) is not a permutation of the axes of \(shape)")
    if permutation == Array(0..<rank) { return self }
    let sourceStrides = shape.strides
    let outDims = permutation.map { shape[$0] }
    let strides = permutation.map { sourceStrides[$0] }
    let outShape = Shape(outDims)
    if elementCount == 0 { return Tensor(zeros: outShape) }
    return withUnsafeBufferPointer { source in
      Tensor(shape: outShape) { out in
        Tensor.stridedCopy(from: source.baseAddress!, dimensions: outDims, strides: strides, to: out.baseAddress!)
      }
    }
  }

  /// The last two axes swapped (a copy).
  /// - Precondition: rank ≥ 2.
  public func transposed() -> Tensor {
    precondition(rank >= 2, "transposed needs rank ≥ 2, got \(shape)")
    var permutation = Array(0..<rank)
    permutation.swapAt(rank - 1, rank - 2)
    return permuted(permutation)
  }

  /// Copies a strided view into contiguous memory, with a contiguous or 2-D-blocked inner loop;
  /// large views are split between the workers by rows of the inner axis.
  package static func stridedCopy(
    from source: UnsafePointer<Float>, dimensions: [Int], strides: [Int], to out: UnsafeMutablePointer<Float>
  ) {
    let inner = dimensions[dimensions.count - 1]
    let outer = dimensions.dropLast().reduce(1, *)
    nonisolated(unsafe) let (source, out) = (source, out)
    Parallel.forEachChunk(count: outer, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(inner, 1))) {
      rows in
      stridedCopy(from: source, dimensions: dimensions, strides: strides, to: out, rows: rows)
    }
  }

  /// The rows `rows` (in row-major order of the outer axes) of ``stridedCopy(from:dimensions:strides:to:)``.
  private static func stridedCopy(
    from source: UnsafePointer<Float>, dimensions: [Int], strides: [Int], to out: UnsafeMutablePointer<Float>,
    rows: Range<Int>
  ) {
    let rank = dimensions.count
    let inner = dimensions[rank - 1]
    let innerStride = strides[rank - 1]
    // The first row's multi-index and offset, then an odometer.
    var index = [Int](repeating: 0, count: Swift.max(rank - 1, 0))
    var offset = 0
    var remainder = rows.lowerBound
    for axis in stride(from: rank - 2, through: 0, by: -1) {
      index[axis] = remainder % dimensions[axis]
      remainder /= dimensions[axis]
      offset += index[axis] * strides[axis]
    }
    var written = rows.lowerBound * inner
    for _ in rows {
      let src = source + offset
      if innerStride == 1 {
        (out + written).update(from: src, count: inner)
      } else {
        for j in 0..<inner { out[written + j] = src[j * innerStride] }
      }
      written += inner
      var axis = rank - 2
      while axis >= 0 {
        index[axis] += 1
        offset += strides[axis]
        if index[axis] < dimensions[axis] { break }
        offset -= strides[axis] * dimensions[axis]
        index[axis] = 0
        axis -= 1
      }
    }
  }

  // MARK: Slicing, joining, flipping, padding

  /// The elements at positions `range` along `axis` (a copy).
  /// - Precondition: `range` lies within the axis.
  public func slice(alongAxis axis: Int, _ range: Range<Int>) -> Tensor {
    let (outer, n, inner, a) = axisLayout(axis)
    precondition(
      range.lowerBound >= 0 && range.upperBound <= n,
      "Slice \(range) is out of bounds for axis \(a) of shape \(shape)")
    var dims = shape.dimensions
    dims[a] = range.count
    let outShape = Shape(dims)
    if outShape.elementCount == 0 { return Tensor(zeros: outShape) }
    return withUnsafeBufferPointer { source in
      Tensor(shape: outShape) { out in
        let block = range.count * inner
        Tensor.copyBlocks(
          from: source.baseAddress! + range.lowerBound * inner, sourceStride: n * inner, to: out.baseAddress!,
          destinationStride: block, blocks: outer, length: block)
      }
    }
  }

  /// Copies `blocks` runs of `length` floats, run `i` from `source + i·sourceStride` to
  /// `destination + i·destinationStride`. Large copies are split between the workers by element
  /// ranges (a range may start or end inside a run), so one long run is split too.
  package static func copyBlocks(
    from source: UnsafePointer<Float>, sourceStride: Int, to destination: UnsafeMutablePointer<Float>,
    destinationStride: Int, blocks: Int, length: Int
  ) {
    let total = blocks * length
    if total == 0 { return }
    nonisolated(unsafe) let (source, destination) = (source, destination)
    Parallel.forEachChunk(count: total, minimumPerWorker: Parallel.elementwiseThreshold) { range in
      var i = range.lowerBound
      while i < range.upperBound {
        let (block, within) = i.quotientAndRemainder(dividingBy: length)
        let count = Swift.min(length - within, range.upperBound - i)
        (destination + block * destinationStride + within).update(from: source + block * sourceStride + within, count: count)
        i += count
      }
    }
  }

  /// The tensors joined along an existing axis.
  /// - Precondition: all shapes agree except along `axis`.
  public static func concatenate(_ tensors: [Tensor], alongAxis axis: Int) -> Tensor {
    precondition(!tensors.isEmpty, "concatenate needs at least one tensor")
    let first = tensors[0]
    let a = first.shape.normalizedAxis(axis)
    for t in tensors {
      var x = t.shape.dimensions
      var y = first.shape.dimensions
      precondition(x.count == y.count, "concatenate: shapes \(first.shape) and \(t.shape) differ in rank")
      x[a] = 0
      y[a] = 0
      precondition(x == y, "concatenate along axis \(a): shapes \(first.shape) and \(t.shape) differ")
    }
    let outer = first.shape.dimensions[..<a].reduce(1, *)
    let inner = first.shape.dimensions[(a + 1)...].reduce(1, *)
    let total = tensors.reduce(0) { $0 + $1.shape[a] }
    var dims = first.shape.dimensions
    dims[a] = total
    let outShape = Shape(dims)
    if outShape.elementCount == 0 { return Tensor(zeros: outShape) }
    return Tensor(shape: outShape) { out in
      var start = 0
      for t in tensors {
        let block = t.shape[a] * inner
        if block > 0 {
          t.withUnsafeBufferPointer { src in
            Tensor.copyBlocks(
              from: src.baseAddress!, sourceStride: block, to: out.baseAddress! + start * inner,
              destinationStride: total * inner, blocks: outer, length: block)
          }
        }
        start += t.shape[a]
      }
    }
  }

  /// The tensors joined along a new axis inserted at `axis`.
  /// - Precondition: all shapes are equal.
  public static func stack(_ tensors: [Tensor], alongAxis axis: Int = 0) -> Tensor {
    precondition(!tensors.isEmpty, "stack needs at least one tensor")
    let shape = tensors[0].shape
    precondition(tensors.allSatisfy { $0.shape == shape }, "stack needs equal shapes, got \(tensors.map(\.shape))")
    let a = axis < 0 ? axis + shape.rank + 1 : axis
    precondition(a >= 0 && a <= shape.rank, "stack axis \(axis) out of range for shape \(shape)")
    var dims = shape.dimensions
    dims.insert(1, at: a)
    return concatenate(tensors.map { $0.reshaped(to: Shape(dims)) }, alongAxis: a)
  }

  /// The elements reversed along `axis`.
  public func flipped(alongAxis axis: Int) -> Tensor {
    let (outer, n, inner, _) = axisLayout(axis)
    if elementCount == 0 { return self }
    return withUnsafeBufferPointer { source in
      Tensor(shape: shape) { out in
        for o in 0..<outer {
          for p in 0..<n {
            (out.baseAddress! + (o * n + p) * inner).update(
              from: source.baseAddress! + (o * n + n - 1 - p) * inner, count: inner)
          }
        }
      }
    }
  }

  /// The tensor extended along `axis` by `before` and `after` positions holding `value`.
  public func padded(alongAxis axis: Int, before: Int, after: Int, value: Float = 0) -> Tensor {
    precondition(before >= 0 && after >= 0, "padding must be non-negative, got \(before), \(after)")
    let (outer, n, inner, a) = axisLayout(axis)
    var dims = shape.dimensions
    dims[a] = n + before + after
    let outShape = Shape(dims)
    var result = Tensor(repeating: value, shape: outShape)
    if elementCount == 0 { return result }
    let width = dims[a]
    withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { out in
        for o in 0..<outer {
          (out.baseAddress! + (o * width + before) * inner).update(
            from: source.baseAddress! + o * n * inner, count: n * inner)
        }
      }
    }
    return result
  }

  // MARK: Gathering and scattering rows

  /// Rows of a `[V, D]` table picked by `indices`: the result has shape `indices.shape + [D]`
  /// (an embedding lookup).
  /// - Precondition: `self` is rank 2 and every index is in `0..<V`.
  public func gatherRows(_ indices: IndexTensor) -> Tensor {
    precondition(rank == 2, "gatherRows needs a [V, D] table, got \(shape)")
    let (rows, width) = (shape[0], shape[1])
    let outShape = Shape(indices.shape.dimensions + [width])
    if outShape.elementCount == 0 { return Tensor(zeros: outShape) }
    return withUnsafeBufferPointer { table in
      indices.values.withUnsafeBufferPointer { ids in
        Tensor(shape: outShape) { out in
          for (i, id) in ids.enumerated() {
            precondition(id >= 0 && Int(id) < rows, "Index \(id) is out of range for a table of \(rows) rows")
            (out.baseAddress! + i * width).update(from: table.baseAddress! + Int(id) * width, count: width)
          }
        }
      }
    }
  }

  /// Adds each row of `values` (shape `indices.shape + [D]`) into row `indices[i]` of `self`
  /// (shape `[V, D]`): the adjoint of ``gatherRows(_:)``. Repeated indices accumulate; rows whose
  /// index equals `skippedIndex` (a padding id) are left out.
  public mutating func scatterAddRows(_ values: Tensor, at indices: IndexTensor, skipping skippedIndex: Int? = nil) {
    precondition(rank == 2, "scatterAddRows needs a [V, D] table, got \(shape)")
    let (rows, width) = (shape[0], shape[1])
    precondition(
      values.shape.dimensions == indices.shape.dimensions + [width],
      "scatterAddRows: values of shape \(values.shape) do not match indices \(indices.shape) and width \(width)")
    if values.elementCount == 0 { return }
    values.withUnsafeBufferPointer { src in
      indices.values.withUnsafeBufferPointer { ids in
        withUnsafeMutableBufferPointer { table in
          let skipped = skippedIndex.map(Int32.init) ?? -1
          for (i, id) in ids.enumerated() where id != skipped {
            precondition(id >= 0 && Int(id) < rows, "Index \(id) is out of range for a table of \(rows) rows")
            ssmAccumulate(table.baseAddress! + Int(id) * width, src.baseAddress! + i * width, width)
          }
        }
      }
    }
  }

  /// A `[V, D]` table of zeros with `values` scattered (added) into the rows named by `indices`.
  public static func scatteringRows(
    _ values: Tensor, at indices: IndexTensor, rowCount: Int, skipping skippedIndex: Int? = nil
  ) -> Tensor {
    var table = Tensor(zeros: [rowCount, values.shape[values.rank - 1]])
    table.scatterAddRows(values, at: indices, skipping: skippedIndex)
    return table
  }
}

extension Tensor {
  /// Sums a broadcast result back to `target`, the shape of the operand that was broadcast: the
  /// adjoint of NumPy broadcasting (leading axes are summed away, extents of 1 summed with
  /// `keepingDimension`).
  /// - Precondition: `target` broadcasts to `shape`.
  public func summed(toShape target: Shape) -> Tensor {
    if shape == target { return self }
    precondition(
      target.broadcast(with: shape) == shape, "Shape \(target) does not broadcast to \(shape)")
    let extra = rank - target.rank
    var result = self
    // Leading axes: collapse them into one and sum it away.
    if extra > 0 {
      let lead = shape.dimensions[..<extra].reduce(1, *)
      result = result.reshaped(to: Shape([lead] + Array(shape.dimensions[extra...]))).sum(alongAxis: 0)
    }
    for axis in 0..<target.rank where target[axis] == 1 && result.shape[axis] != 1 {
      result = result.sum(alongAxis: axis, keepingDimension: true)
    }
    return result.reshaped(to: target)
  }
}
