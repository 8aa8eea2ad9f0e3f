/// A dense, row-major array of integer indices (item ids, positions, lengths) with a shape.
///
/// Stored as `Int32`: item vocabularies fit easily, and half the memory of `Int` keeps large
/// batches of ids in cache.
public struct IndexTensor: Sendable, Equatable, CustomStringConvertible {
  /// The extents of the axes.
  public private(set) var shape: Shape
  /// The indices in row-major order.
  public private(set) var values: [Int32]

  /// Creates an index tensor from its shape and values.
  /// - Precondition: `values.count == shape.elementCount`.
  public init(shape: Shape, values: [Int32]) {
    precondition(
      values.count == shape.elementCount,
      "IndexTensor of shape \(shape) needs \(shape.elementCount) values, got \(values.count)")
    self.shape = shape
    self.values = values
  }

  /// Creates an index tensor from `Int` values.
  /// - Precondition: every value fits in `Int32`.
  public init(shape: Shape, values: [Int]) {
    self.init(shape: shape, values: values.map { Int32($0) })
  }

  /// A rank-1 index tensor.
  public init(_ values: [Int]) {
    self.init(shape: [values.count], values: values)
  }

  /// A rank-2 index tensor from rows of equal length.
  public init(rows: [[Int]]) {
    let width = rows.first?.count ?? 0
    precondition(rows.allSatisfy { $0.count == width }, "Rows of an index matrix must have equal lengths")
    self.init(shape: [rows.count, width], values: rows.flatMap { $0 })
  }

  /// The number of indices.
  public var elementCount: Int { values.count }

  /// Reads or writes one index by its multi-index.
  public subscript(indices: Int...) -> Int {
    get { Int(values[shape.flatIndex(indices)]) }
    set { values[shape.flatIndex(indices)] = Int32(newValue) }
  }

  /// The same values under another shape with the same element count.
  public func reshaped(to newShape: Shape) -> IndexTensor {
    precondition(newShape.elementCount == elementCount, "Cannot reshape \(shape) to \(newShape)")
    return IndexTensor(shape: newShape, values: values)
  }

  /// The indices as a `Float` tensor.
  public var asTensor: Tensor { Tensor(shape: shape, scalars: values.map(Float.init)) }

  /// `IndexTensor(shape: …, […])` with the shape and at most the first eight indices.
  public var description: String {
    let preview = values.prefix(8).map { String($0) }.joined(separator: ", ")
    return "IndexTensor(shape: \(shape), [\(preview)\(values.count > 8 ? ", …" : "")])"
  }
}
