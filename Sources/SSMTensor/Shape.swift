/// The dimensions of a dense, row-major tensor.
///
/// A shape is a list of non-negative extents, outermost first: `[B, L, D]` describes `B` sequences
/// of `L` steps of `D` channels, with the last axis contiguous in memory. The empty shape `[]`
/// describes a scalar.
public struct Shape: Hashable, Sendable, ExpressibleByArrayLiteral, CustomStringConvertible,
  RandomAccessCollection
{
  /// The extent of every axis, outermost first.
  public var dimensions: [Int]

  /// Creates a shape from its extents.
  /// - Precondition: every extent is non-negative.
  public init(_ dimensions: [Int]) {
    precondition(dimensions.allSatisfy { $0 >= 0 }, "Shape \(dimensions) has a negative extent")
    self.dimensions = dimensions
  }

  /// Creates a shape from an array literal such as `[2, 3]`.
  public init(arrayLiteral elements: Int...) { self.init(elements) }

  /// The number of axes.
  @inlinable public var rank: Int { dimensions.count }

  /// The number of elements: the product of the extents (1 for a scalar).
  @inlinable public var elementCount: Int { dimensions.reduce(1, *) }

  /// Element strides of a contiguous row-major layout.
  public var strides: [Int] {
    var result = [Int](repeating: 1, count: dimensions.count)
    var step = 1
    for axis in stride(from: dimensions.count - 1, through: 0, by: -1) {
      result[axis] = step
      step *= dimensions[axis]
    }
    return result
  }

  /// Resolves a possibly negative axis (`-1` is the last) to an index in `0..<rank`.
  /// - Precondition: the axis is in `-rank..<rank`.
  public func normalizedAxis(_ axis: Int) -> Int {
    let resolved = axis < 0 ? axis + rank : axis
    precondition(resolved >= 0 && resolved < rank, "Axis \(axis) is out of range for shape \(self)")
    return resolved
  }

  // MARK: RandomAccessCollection

  /// Always 0, the outermost axis.
  public var startIndex: Int { 0 }
  /// The rank: axes are `0..<rank`.
  public var endIndex: Int { dimensions.count }
  /// The extent of axis `position` (no negative axes here; see ``normalizedAxis(_:)``), settable in place.
  public subscript(position: Int) -> Int {
    get { dimensions[position] }
    set { dimensions[position] = newValue }
  }

  /// The extents in brackets, such as `[2, 3]`; `[]` for a scalar.
  public var description: String { "[" + dimensions.map(String.init).joined(separator: ", ") + "]" }

  /// The row-major position of a multi-index.
  /// - Precondition: one index per axis, each within its extent.
  public func flatIndex(_ indices: [Int]) -> Int {
    precondition(indices.count == rank, "Index \(indices) does not match shape \(self)")
    var flat = 0
    for (axis, index) in indices.enumerated() {
      precondition(index >= 0 && index < dimensions[axis], "Index \(indices) is out of bounds for shape \(self)")
      flat = flat * dimensions[axis] + index
    }
    return flat
  }

  /// The shape that NumPy broadcasting of `self` and `other` produces, or `nil` if they do not
  /// broadcast (trailing axes must be equal or one of them 1).
  public func broadcast(with other: Shape) -> Shape? {
    let rank = Swift.max(self.rank, other.rank)
    var result = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
      let a = i < rank - self.rank ? 1 : self.dimensions[i - (rank - self.rank)]
      let b = i < rank - other.rank ? 1 : other.dimensions[i - (rank - other.rank)]
      if a == b || b == 1 {
        result[i] = a
      } else if a == 1 {
        result[i] = b
      } else {
        return nil
      }
    }
    return Shape(result)
  }
}
