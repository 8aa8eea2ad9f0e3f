import SSMTensor

// Shape operations. Memory kept: shapes and indices only (no tensors).

extension Variable {
  /// The same values under another shape with the same element count.
  public func reshaped(to shape: Shape) -> Variable {
    let original = self.shape
    return Variable.record(value: value.reshaped(to: shape), inputs: [self]) {
      { g in [g.reshaped(to: original)] }
    }
  }

  /// The same values under another shape; one extent may be `-1`.
  public func reshaped(to dimensions: [Int]) -> Variable {
    reshaped(to: value.reshaped(to: dimensions).shape)
  }

  /// Axis `i` of the result is axis `permutation[i]` of `self`.
  public func permuted(_ permutation: [Int]) -> Variable {
    var inverse = [Int](repeating: 0, count: permutation.count)
    for (i, p) in permutation.enumerated() { inverse[p] = i }
    return Variable.record(value: value.permuted(permutation), inputs: [self]) {
      { g in [g.permuted(inverse)] }
    }
  }

  /// The last two axes swapped.
  public func transposed() -> Variable {
    precondition(shape.rank >= 2, "transposed needs rank ≥ 2, got \(shape)")
    var permutation = Array(0..<shape.rank)
    permutation.swapAt(shape.rank - 1, shape.rank - 2)
    return permuted(permutation)
  }

  /// Positions `range` along `axis`.
  public func slice(alongAxis axis: Int, _ range: Range<Int>) -> Variable {
    let a = shape.normalizedAxis(axis)
    let n = shape[a]
    return Variable.record(value: value.slice(alongAxis: a, range), inputs: [self]) {
      { g in [g.padded(alongAxis: a, before: range.lowerBound, after: n - range.upperBound)] }
    }
  }

  /// Consecutive pieces along `axis` with the given extents (which must add up to the axis's
  /// extent): the same values as one ``slice(alongAxis:_:)`` per piece, with a cheaper backward
  /// pass.
  ///
  /// Separate slices each send back a full-size gradient, mostly zeros, and the tape adds them
  /// up: for a projection split in two, three full-size passes. Here the pieces hand their
  /// gradients to one join node, which assembles the input's gradient in a single pass (and
  /// zero-fills only pieces that received none).
  public func split(alongAxis axis: Int, sizes: [Int]) -> [Variable] {
    let a = shape.normalizedAxis(axis)
    precondition(
      sizes.allSatisfy { $0 >= 0 } && sizes.reduce(0, +) == shape[a],
      "split sizes \(sizes) must add up to extent \(shape[a]) of axis \(a) of \(shape)")
    var starts = [0]
    for size in sizes.dropLast() { starts.append(starts.last! + size) }
    let pieces = zip(starts, sizes).map { value.slice(alongAxis: a, $0..<($0 + $1)) }
    guard GradientMode.isEnabled, requiresGradient else { return pieces.map(Variable.init) }
    final class Collected {
      var gradients: [Tensor?]
      init(count: Int) { gradients = Array(repeating: nil, count: count) }
    }
    let collected = Collected(count: sizes.count)
    // The join has the input's value and depth + 1; the pieces sit one level deeper, so the
    // depth-ordered backward pass runs every piece's pullback before the join's.
    let join = Variable.record(value: value, inputs: [self]) {
      { [pieceShapes = pieces.map(\.shape)] _ in
        // Hand the gradients over; a later backward() reaching other pieces starts afresh.
        defer { collected.gradients = Array(repeating: nil, count: pieceShapes.count) }
        let parts = collected.gradients.enumerated().map { i, g in g ?? Tensor(zeros: pieceShapes[i]) }
        return [Tensor.concatenate(parts, alongAxis: a)]
      }
    }
    return pieces.enumerated().map { i, piece in
      Variable.record(value: piece, inputs: [join]) {
        { g in
          collected.gradients[i] = g
          // The join ignores what it receives; this only marks it as reached.
          return [Tensor(0)]
        }
      }
    }
  }

  /// Variables joined along an existing axis.
  public static func concatenate(_ variables: [Variable], alongAxis axis: Int) -> Variable {
    precondition(!variables.isEmpty, "concatenate needs at least one variable")
    let a = variables[0].shape.normalizedAxis(axis)
    let extents = variables.map { $0.shape[a] }
    let value = Tensor.concatenate(variables.map(\.value), alongAxis: a)
    return record(value: value, inputs: variables) {
      { g in
        var start = 0
        return extents.enumerated().map { (i, extent) in
          defer { start += extent }
          return variables[i].requiresGradient ? g.slice(alongAxis: a, start..<(start + extent)) : nil
        }
      }
    }
  }

  /// Variables joined along a new axis.
  public static func stack(_ variables: [Variable], alongAxis axis: Int = 0) -> Variable {
    precondition(!variables.isEmpty, "stack needs at least one variable")
    let shape = variables[0].shape
    let a = axis < 0 ? axis + shape.rank + 1 : axis
    var dims = shape.dimensions
    dims.insert(1, at: a)
    return concatenate(variables.map { $0.reshaped(to: Shape(dims)) }, alongAxis: a)
  }

  /// Reversed along `axis`.
  public func flipped(alongAxis axis: Int) -> Variable {
    Variable.record(value: value.flipped(alongAxis: axis), inputs: [self]) {
      { g in [g.flipped(alongAxis: axis)] }
    }
  }

  /// Extended along `axis` with constant padding.
  public func padded(alongAxis axis: Int, before: Int, after: Int, value padding: Float = 0) -> Variable {
    let a = shape.normalizedAxis(axis)
    let n = shape[a]
    return Variable.record(
      value: value.padded(alongAxis: a, before: before, after: after, value: padding), inputs: [self]
    ) {
      { g in [g.slice(alongAxis: a, before..<(before + n))] }
    }
  }

  /// Rows of a `[V, D]` table picked by `indices` (an embedding lookup); the result has shape
  /// `indices.shape + [D]`.
  ///
  /// The gradient is scattered (added) back into the rows; rows looked up through
  /// `paddingIndex` receive none through this path, as PyTorch's `Embedding(padding_idx:)`
  /// does. Memory kept: the indices.
  public func gatherRows(_ indices: IndexTensor, paddingIndex: Int? = nil) -> Variable {
    let rows = shape[0]
    return Variable.record(value: value.gatherRows(indices), inputs: [self]) {
      { g in [Tensor.scatteringRows(g, at: indices, rowCount: rows, skipping: paddingIndex)] }
    }
  }
}
