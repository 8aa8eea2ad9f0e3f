import CKernels

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Process-wide memory settings for training; nothing in SSMRec applies them on its own, since
/// an application linking SSMRec owns its allocator.
public enum AllocatorTuning {
  /// Tunes glibc's malloc for a training process: every buffer comes from the heap instead of
  /// a fresh `mmap` and freed heap memory is kept for reuse, because a training step allocates
  /// the same sizes every time and faulting their pages in again cost more than the math. Call it
  /// once, early (the `ssmrec` command does). Returns whether it was applied: `false` off glibc
  /// or when `SSMREC_DEFAULT_MALLOC=1` is in the environment.
  @discardableResult
  public static func applyForTraining() -> Bool {
    if let value = getenv("SSMREC_DEFAULT_MALLOC"), value.pointee == UInt8(ascii: "1") { return false }
    return ssm_configure_allocator() == 1
  }
}

/// Hands heap memory freed by tensors back to the system. With ``AllocatorTuning`` applied,
/// freed memory is kept for reuse, so without this a process's resident size stays at its
/// largest step's.
package func releaseFreedHeapMemory() {
  _ = ssm_release_free_memory()
}

/// A dense, row-major array of `Float` values with a shape.
///
/// `Tensor` is a value type: copies share storage until one of them is mutated (copy-on-write,
/// through `Array`). All arithmetic runs in Float32; elementwise and reduction loops go through
/// the SIMD kernels of the `CKernels` target, matrix products through OpenBLAS `cblas_sgemm`.
///
///     let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
///     let y = (x * 2 + 1).sum(alongAxis: 1)      // shape [2]
///
/// Shapes are checked with `precondition`s whose messages name both shapes involved.
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
  /// The extents of the axes.
  public private(set) var shape: Shape
  /// A tensor whose elements are left unset, for kernels that write every element before
  /// anything reads them (saves a zero-filling pass over large outputs). Reading an element
  /// before it is written gives an unspecified value.
  package init(uninitializedShape shape: Shape) {
    self.init(shape: shape, unsafeUninitializedCapacity: { _ in })
  }

  /// The elements in row-major order.
  @usableFromInline internal var storage: [Float]

  /// Creates a tensor from its shape and its elements in row-major order.
  /// - Precondition: `scalars.count == shape.elementCount`.
  public init(shape: Shape, scalars: [Float]) {
    precondition(
      scalars.count == shape.elementCount,
      "Tensor of shape \(shape) needs \(shape.elementCount) scalars, got \(scalars.count)")
    self.shape = shape
    self.storage = scalars
  }

  /// Creates a rank-0 tensor holding one value.
  public init(_ value: Float) {
    self.init(shape: [], scalars: [value])
  }

  /// Creates a tensor of the given shape whose elements are written by `initializer`, which
  /// receives an uninitialised buffer of `shape.elementCount` elements and must fill all of it.
  public init(
    shape: Shape, unsafeUninitializedCapacity initializer: (UnsafeMutableBufferPointer<Float>) -> Void
  ) {
    let count = shape.elementCount
    self.shape = shape
    self.storage = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
      initializer(buffer)
      initialized = count
    }
  }

  /// The elements in row-major order.
  @inlinable public var scalars: [Float] { storage }

  /// The number of elements.
  @inlinable public var elementCount: Int { storage.count }

  /// The number of axes.
  @inlinable public var rank: Int { shape.rank }

  /// The single element of a tensor with one element.
  /// - Precondition: `elementCount == 1`.
  public var scalar: Float {
    precondition(storage.count == 1, "scalar needs a one-element tensor, got shape \(shape)")
    return storage[0]
  }

  /// Reads or writes one element by its multi-index.
  public subscript(indices: Int...) -> Float {
    get { storage[shape.flatIndex(indices)] }
    set { storage[shape.flatIndex(indices)] = newValue }
  }

  /// Calls `body` with a pointer to the contiguous elements. The pointer must not escape.
  @inlinable
  public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
    try storage.withUnsafeBufferPointer(body)
  }

  /// Calls `body` with a mutable pointer to the contiguous elements (copying them first if the
  /// storage is shared). The pointer must not escape.
  @inlinable
  public mutating func withUnsafeMutableBufferPointer<R>(
    _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
  ) rethrows -> R {
    try storage.withUnsafeMutableBufferPointer { try body($0) }
  }

  /// The same elements under another shape with the same element count (no copy).
  public func reshaped(to newShape: Shape) -> Tensor {
    precondition(
      newShape.elementCount == elementCount,
      "Cannot reshape \(shape) to \(newShape): element counts differ")
    var result = self
    result.shape = newShape
    return result
  }

  /// The same elements under another shape; one extent may be `-1`, inferred from the others.
  public func reshaped(to dimensions: [Int]) -> Tensor {
    var dims = dimensions
    if let hole = dims.firstIndex(of: -1) {
      let known = dims.enumerated().filter { $0.offset != hole }.reduce(1) { $0 * $1.element }
      precondition(
        known > 0 && elementCount % known == 0, "Cannot reshape \(shape) to \(dimensions)")
      dims[hole] = elementCount / known
    }
    return reshaped(to: Shape(dims))
  }

  /// Replaces the shape in place (same element count).
  public mutating func reshape(to newShape: Shape) {
    self = reshaped(to: newShape)
  }

  /// `Tensor(shape: …, […])` with the shape and at most the first eight elements.
  public var description: String {
    let preview = storage.prefix(8).map { String($0) }.joined(separator: ", ")
    return "Tensor(shape: \(shape), [\(preview)\(storage.count > 8 ? ", …" : "")])"
  }
}
