import CKernels

/// A scalar function applied to every element of a tensor.
///
/// Each case runs as one vectorised pass of the `CKernels` target, chosen at run time for the
/// widest SIMD the CPU has. ``Tensor/applying(_:)`` computes `f(x)`;
/// ``Tensor/elementwiseGradient(of:at:outputGradient:)`` computes `g ∘ f′(x)` for backward passes.
public enum ElementwiseFunction: Int32, Sendable, CaseIterable {
  /// `eˣ`.
  case exp = 0
  /// Natural logarithm; `-inf` at 0, NaN below.
  case log
  /// `log(1 + x)`, accurate near 0.
  case log1p
  /// `eˣ − 1`, accurate near 0.
  case expm1
  /// `√x`.
  case sqrt
  /// `1/√x`.
  case rsqrt
  /// Hyperbolic tangent.
  case tanh
  /// Logistic sigmoid `σ(x) = 1/(1+e⁻ˣ)`.
  case sigmoid
  /// `x·σ(x)` (also called swish).
  case silu
  /// `log(1+eˣ)` for `x ≤ 20`, `x` above (the threshold of the official Mamba kernels).
  case softplus
  /// Exact GELU, `x·Φ(x) = ½·x·(1 + erf(x/√2))`.
  case gelu
  /// `max(x, 0)`; its derivative at 0 is taken as 0.
  case relu
  /// `|x|`; its derivative at 0 is taken as 0.
  case abs
  /// `−x`.
  case negate
  /// `x²`.
  case square
  /// `1/x`.
  case reciprocal

  @usableFromInline var kernelCode: Int32 { rawValue }

  /// Whether the function costs an exponential per element (its cost in the floor model of
  /// `ssmrec bench`; GELU's erf is a polynomial of similar cost).
  var evaluatesExponential: Bool {
    switch self {
    case .exp, .expm1, .tanh, .sigmoid, .silu, .softplus, .gelu: true
    case .log, .log1p, .sqrt, .rsqrt, .relu, .abs, .negate, .square, .reciprocal: false
    }
  }
}

/// Binary elementwise operations with NumPy broadcasting.
@usableFromInline
enum BinaryOperation: Int32, Sendable {
  case add = 0
  case subtract, multiply, divide, maximum, minimum
}

extension Tensor {
  // MARK: Unary functions

  /// `f(x)` for every element.
  public func applying(_ function: ElementwiseFunction) -> Tensor {
    let count = elementCount
    if count == 0 { return self }
    if function.evaluatesExponential { FLOPCounter.addExponentials(count) }
    return withUnsafeBufferPointer { source in
      nonisolated(unsafe) let x = source.baseAddress!
      return Tensor(shape: shape) { out in
        nonisolated(unsafe) let y = out.baseAddress!
        Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { r in
          ssm_unary(function.kernelCode, x + r.lowerBound, y + r.lowerBound, r.count)
        }
      }
    }
  }

  /// Replaces every element `x` by `f(x)` in place.
  public mutating func apply(_ function: ElementwiseFunction) {
    let count = elementCount
    if count == 0 { return }
    if function.evaluatesExponential { FLOPCounter.addExponentials(count) }
    withUnsafeMutableBufferPointer { buffer in
      nonisolated(unsafe) let base = buffer.baseAddress!
      Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { range in
        ssm_unary(function.kernelCode, base + range.lowerBound, base + range.lowerBound, range.count)
      }
    }
  }

  /// `g ∘ f′(x)`: the pullback of ``applying(_:)`` at `input` for the output gradient `g`.
  /// - Precondition: `input.shape == outputGradient.shape`.
  public static func elementwiseGradient(
    of function: ElementwiseFunction, at input: Tensor, outputGradient: Tensor
  ) -> Tensor {
    precondition(
      input.shape == outputGradient.shape,
      "Gradient of shape \(outputGradient.shape) does not match input of shape \(input.shape)")
    let count = input.elementCount
    if count == 0 { return outputGradient }
    // Into a new tensor: writing into a copy of `outputGradient`, which the tape still holds,
    // would copy it first on one thread.
    return input.withUnsafeBufferPointer { x in
      outputGradient.withUnsafeBufferPointer { g in
        nonisolated(unsafe) let (xs, gs) = (x.baseAddress!, g.baseAddress!)
        return Tensor(shape: input.shape) { out in
          nonisolated(unsafe) let ys = out.baseAddress!
          Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { r in
            ssm_unary_backward(function.kernelCode, xs + r.lowerBound, gs + r.lowerBound, ys + r.lowerBound, r.count)
          }
        }
      }
    }
  }

  /// `eˣ` elementwise.
  public func exp() -> Tensor { applying(.exp) }
  /// Natural logarithm elementwise.
  public func log() -> Tensor { applying(.log) }
  /// `log(1 + x)` elementwise.
  public func log1p() -> Tensor { applying(.log1p) }
  /// `eˣ − 1` elementwise.
  public func expm1() -> Tensor { applying(.expm1) }
  /// Square root elementwise.
  public func sqrt() -> Tensor { applying(.sqrt) }
  /// Reciprocal square root elementwise.
  public func rsqrt() -> Tensor { applying(.rsqrt) }
  /// Hyperbolic tangent elementwise.
  public func tanh() -> Tensor { applying(.tanh) }
  /// Logistic sigmoid elementwise.
  public func sigmoid() -> Tensor { applying(.sigmoid) }
  /// `x·σ(x)` elementwise.
  public func silu() -> Tensor { applying(.silu) }
  /// Softplus with threshold 20 elementwise.
  public func softplus() -> Tensor { applying(.softplus) }
  /// Exact (erf) GELU elementwise.
  public func gelu() -> Tensor { applying(.gelu) }
  /// `max(x, 0)` elementwise.
  public func relu() -> Tensor { applying(.relu) }
  /// Absolute value elementwise.
  public func abs() -> Tensor { applying(.abs) }
  /// `x²` elementwise.
  public func squared() -> Tensor { applying(.square) }
  /// `1/x` elementwise.
  public func reciprocal() -> Tensor { applying(.reciprocal) }

  /// Every element limited to `[lowerBound, upperBound]`.
  public func clamped(to lowerBound: Float, _ upperBound: Float) -> Tensor {
    precondition(lowerBound <= upperBound, "clamp bounds \(lowerBound) > \(upperBound)")
    var result = self
    let count = elementCount
    if count == 0 { return result }
    result.withUnsafeMutableBufferPointer { buffer in
      nonisolated(unsafe) let base = buffer.baseAddress!
      Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { r in
        ssm_clamp(base + r.lowerBound, lowerBound, upperBound, base + r.lowerBound, r.count)
      }
    }
    return result
  }

  // MARK: Binary operations with broadcasting

  /// Elementwise maximum with NumPy broadcasting.
  public func maximum(_ other: Tensor) -> Tensor { Tensor.broadcasting(self, other, .maximum) }
  /// Elementwise minimum with NumPy broadcasting.
  public func minimum(_ other: Tensor) -> Tensor { Tensor.broadcasting(self, other, .minimum) }

  /// Elementwise sum with NumPy broadcasting.
  public static func + (lhs: Tensor, rhs: Tensor) -> Tensor { broadcasting(lhs, rhs, .add) }
  /// Elementwise difference with NumPy broadcasting.
  public static func - (lhs: Tensor, rhs: Tensor) -> Tensor { broadcasting(lhs, rhs, .subtract) }
  /// Elementwise product with NumPy broadcasting.
  public static func * (lhs: Tensor, rhs: Tensor) -> Tensor { broadcasting(lhs, rhs, .multiply) }
  /// Elementwise quotient with NumPy broadcasting.
  public static func / (lhs: Tensor, rhs: Tensor) -> Tensor { broadcasting(lhs, rhs, .divide) }

  /// Adds a scalar to every element.
  public static func + (lhs: Tensor, rhs: Float) -> Tensor { lhs + Tensor(rhs) }
  /// Subtracts a scalar from every element.
  public static func - (lhs: Tensor, rhs: Float) -> Tensor { lhs - Tensor(rhs) }
  /// Multiplies every element by a scalar.
  public static func * (lhs: Tensor, rhs: Float) -> Tensor { lhs * Tensor(rhs) }
  /// Divides every element by a scalar.
  public static func / (lhs: Tensor, rhs: Float) -> Tensor { lhs / Tensor(rhs) }
  /// Adds every element to a scalar.
  public static func + (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) + rhs }
  /// Subtracts every element from a scalar.
  public static func - (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) - rhs }
  /// Multiplies a scalar by every element.
  public static func * (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) * rhs }
  /// Divides a scalar by every element.
  public static func / (lhs: Float, rhs: Tensor) -> Tensor { Tensor(lhs) / rhs }

  /// The negation of every element.
  public static prefix func - (operand: Tensor) -> Tensor { operand.applying(.negate) }

  /// In-place sum; `rhs` must broadcast to `lhs.shape`.
  public static func += (lhs: inout Tensor, rhs: Tensor) { lhs.formBroadcasting(rhs, .add) }
  /// In-place difference; `rhs` must broadcast to `lhs.shape`.
  public static func -= (lhs: inout Tensor, rhs: Tensor) { lhs.formBroadcasting(rhs, .subtract) }
  /// In-place product; `rhs` must broadcast to `lhs.shape`.
  public static func *= (lhs: inout Tensor, rhs: Tensor) { lhs.formBroadcasting(rhs, .multiply) }
  /// In-place quotient; `rhs` must broadcast to `lhs.shape`.
  public static func /= (lhs: inout Tensor, rhs: Tensor) { lhs.formBroadcasting(rhs, .divide) }
  /// In-place scalar sum.
  public static func += (lhs: inout Tensor, rhs: Float) { lhs.formBroadcasting(Tensor(rhs), .add) }
  /// In-place scalar difference.
  public static func -= (lhs: inout Tensor, rhs: Float) { lhs.formBroadcasting(Tensor(rhs), .subtract) }
  /// In-place scalar product.
  public static func *= (lhs: inout Tensor, rhs: Float) { lhs.formBroadcasting(Tensor(rhs), .multiply) }
  /// In-place scalar quotient.
  public static func /= (lhs: inout Tensor, rhs: Float) { lhs.formBroadcasting(Tensor(rhs), .divide) }

  /// `self = alpha·x + beta·self` for tensors of the same shape (a fused pass, e.g. for optimizers
  /// and gradient accumulation).
  public mutating func scaleAndAdd(_ x: Tensor, alpha: Float = 1, beta: Float = 1) {
    precondition(shape == x.shape, "scaleAndAdd shapes differ: \(shape) and \(x.shape)")
    let count = elementCount
    if count == 0 { return }
    x.withUnsafeBufferPointer { src in
      withUnsafeMutableBufferPointer { dst in
        nonisolated(unsafe) let s = src.baseAddress!
        nonisolated(unsafe) let d = dst.baseAddress!
        Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { r in
          ssm_axpby(alpha, s + r.lowerBound, beta, d + r.lowerBound, r.count)
        }
      }
    }
  }

  // MARK: Broadcasting machinery

  /// The precondition message for operands that do not broadcast.
  package static func broadcastMismatchMessage(_ lhs: Shape, _ rhs: Shape) -> String {
    "Shapes \(lhs) and \(rhs) do not broadcast"
  }

  @usableFromInline
  static func broadcasting(_ lhs: Tensor, _ rhs: Tensor, _ operation: BinaryOperation) -> Tensor {
    if lhs.elementCount == 0 || rhs.elementCount == 0 {
      guard let outShape = lhs.shape.broadcast(with: rhs.shape) else {
        preconditionFailure(broadcastMismatchMessage(lhs.shape, rhs.shape))
      }
      return Tensor(zeros: outShape)
    }
    if lhs.shape == rhs.shape {
      return Tensor(shape: lhs.shape) { out in
        lhs.withUnsafeBufferPointer { a in
          rhs.withUnsafeBufferPointer { b in
            binaryContiguous(operation, a.baseAddress!, 1, b.baseAddress!, 1, out.baseAddress!, out.count)
          }
        }
      }
    }
    guard let outShape = lhs.shape.broadcast(with: rhs.shape) else {
      preconditionFailure(broadcastMismatchMessage(lhs.shape, rhs.shape))
    }
    return Tensor(shape: outShape) { out in
      lhs.withUnsafeBufferPointer { a in
        rhs.withUnsafeBufferPointer { b in
          broadcastLoop(
            operation, a.baseAddress!, lhs.shape, b.baseAddress!, rhs.shape, out.baseAddress!, outShape)
        }
      }
    }
  }

  @usableFromInline
  mutating func formBroadcasting(_ rhs: Tensor, _ operation: BinaryOperation) {
    guard let outShape = shape.broadcast(with: rhs.shape), outShape == shape else {
      preconditionFailure("Shape \(rhs.shape) does not broadcast to \(shape) in place")
    }
    let myShape = shape
    if elementCount == 0 { return }
    withUnsafeMutableBufferPointer { out in
      rhs.withUnsafeBufferPointer { b in
        Tensor.broadcastLoop(
          operation, out.baseAddress!, myShape, b.baseAddress!, rhs.shape, out.baseAddress!, myShape)
      }
    }
  }

  private static func binaryContiguous(
    _ operation: BinaryOperation, _ a: UnsafePointer<Float>, _ sa: Int, _ b: UnsafePointer<Float>,
    _ sb: Int, _ y: UnsafeMutablePointer<Float>, _ count: Int
  ) {
    nonisolated(unsafe) let (a, b, y) = (a, b, y)
    Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold, piecesPerWorker: 4) { r in
      ssm_binary(
        operation.rawValue, a + sa * r.lowerBound, sa, b + sb * r.lowerBound, sb, y + r.lowerBound,
        r.count)
    }
  }

  /// Runs a broadcast binary operation as an outer loop over collapsed leading axes and an inner
  /// kernel call over the last collapsed axis, where each operand has stride 0 or 1.
  private static func broadcastLoop(
    _ operation: BinaryOperation, _ a: UnsafePointer<Float>, _ aShape: Shape,
    _ b: UnsafePointer<Float>, _ bShape: Shape, _ y: UnsafeMutablePointer<Float>, _ outShape: Shape
  ) {
    let rank = outShape.rank
    if rank == 0 {
      ssm_binary(operation.rawValue, a, 0, b, 0, y, 1)
      return
    }
    func broadcastStrides(_ shape: Shape) -> [Int] {
      let natural = shape.strides
      return (0..<rank).map { axis in
        let local = axis - (rank - shape.rank)
        if local < 0 || shape[local] == 1 { return 0 }
        return natural[local]
      }
    }
    var dims = outShape.dimensions
    var sa = broadcastStrides(aShape)
    var sb = broadcastStrides(bShape)
    // Merge axis i into i+1 while both operands stay affine across the pair.
    var i = dims.count - 2
    while i >= 0 {
      if sa[i] == sa[i + 1] * dims[i + 1] && sb[i] == sb[i + 1] * dims[i + 1] {
        dims[i + 1] *= dims[i]
        dims.remove(at: i)
        sa.remove(at: i)
        sb.remove(at: i)
      }
      i -= 1
    }
    let inner = dims.last!
    let innerA = sa.last!
    let innerB = sb.last!
    let outerDims = Array(dims.dropLast())
    let outerCount = outerDims.reduce(1, *)
    if outerCount == 1 {
      binaryContiguous(operation, a, innerA, b, innerB, y, inner)
      return
    }
    nonisolated(unsafe) let (a, b, y) = (a, b, y)
    let outerA = Array(sa.dropLast())
    let outerB = Array(sb.dropLast())
    let minimumRows = Swift.max(1, Parallel.elementwiseThreshold / Swift.max(inner, 1))
    Parallel.forEachChunk(count: outerCount, minimumPerWorker: minimumRows) { rows in
      // Decompose the first row index into a multi-index, then advance it like an odometer.
      var index = [Int](repeating: 0, count: outerDims.count)
      var rest = rows.lowerBound
      for axis in stride(from: outerDims.count - 1, through: 0, by: -1) {
        index[axis] = rest % outerDims[axis]
        rest /= outerDims[axis]
      }
      var offsetA = zip(index, outerA).reduce(0) { $0 + $1.0 * $1.1 }
      var offsetB = zip(index, outerB).reduce(0) { $0 + $1.0 * $1.1 }
      for row in rows {
        ssm_binary(operation.rawValue, a + offsetA, innerA, b + offsetB, innerB, y + row * inner, inner)
        var axis = outerDims.count - 1
        while axis >= 0 {
          index[axis] += 1
          offsetA += outerA[axis]
          offsetB += outerB[axis]
          if index[axis] < outerDims[axis] { break }
          offsetA -= outerA[axis] * outerDims[axis]
          offsetB -= outerB[axis] * outerDims[axis]
          index[axis] = 0
          axis -= 1
        }
      }
    }
  }
}
