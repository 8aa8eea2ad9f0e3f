import CBLAS

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A small, fast, seedable random number generator (Steele, Lea and Flood's SplitMix64).
///
/// Every random draw in SSMRec takes its generator explicitly, so a run with the same seed gives
/// the same numbers on every machine and every run.
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
  /// The generator's state; saving it and restoring it resumes the same sequence.
  public var state: UInt64

  /// Creates a generator from a seed.
  public init(seed: UInt64) { state = seed }

  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

extension RandomNumberGenerator {
  /// A uniform `Float` in `[0, 1)` with 24 random bits.
  @inlinable
  public mutating func nextUnitFloat() -> Float {
    Float(next() >> 40) * 0x1p-24
  }

  /// A uniform `Double` in `[0, 1)` with 53 random bits.
  @inlinable
  public mutating func nextUnitDouble() -> Double {
    Double(next() >> 11) * 0x1p-53
  }
}

/// How the fan of a weight is measured for Kaiming initialisation.
public enum FanMode: Sendable {
  /// Inputs per output unit (preserves the forward variance).
  case fanIn
  /// Outputs per input unit (preserves the backward variance).
  case fanOut
}

extension Tensor {
  /// Uniform samples in `[lowerBound, upperBound)`.
  public static func randomUniform(
    _ shape: Shape, lowerBound: Float = 0, upperBound: Float = 1,
    using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let width = upperBound - lowerBound
    var values = [Float](repeating: 0, count: shape.elementCount)
    for i in values.indices { values[i] = lowerBound + width * generator.nextUnitFloat() }
    return Tensor(shape: shape, scalars: values)
  }

  /// Normal samples with the given mean and standard deviation (Box–Muller in Double, pairs).
  public static func randomNormal(
    _ shape: Shape, mean: Float = 0, standardDeviation: Float = 1,
    using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    var values = [Float](repeating: 0, count: shape.elementCount)
    var i = 0
    while i < values.count {
      let (z0, z1) = standardNormalPair(&generator)
      values[i] = mean + standardDeviation * Float(z0)
      if i + 1 < values.count { values[i + 1] = mean + standardDeviation * Float(z1) }
      i += 2
    }
    return Tensor(shape: shape, scalars: values)
  }

  /// Normal samples redrawn until they fall in `[lowerBound, upperBound]` (default: two
  /// standard deviations around the mean, as `trunc_normal_` is commonly used).
  public static func truncatedNormal(
    _ shape: Shape, mean: Float = 0, standardDeviation: Float = 1, lowerBound: Float? = nil,
    upperBound: Float? = nil, using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let low = lowerBound ?? mean - 2 * standardDeviation
    let high = upperBound ?? mean + 2 * standardDeviation
    precondition(low < high, "truncatedNormal needs lowerBound < upperBound")
    var values = [Float](repeating: 0, count: shape.elementCount)
    for i in values.indices {
      var v: Float
      repeat {
        v = mean + standardDeviation * Float(standardNormalPair(&generator).0)
      } while v < low || v > high
      values[i] = v
    }
    return Tensor(shape: shape, scalars: values)
  }

  /// Fan-in and fan-out of a weight of shape `[out, in, kernel…]` (PyTorch's convention; a
  /// rank-1 shape has both equal to its length).
  public static func fans(of shape: Shape) -> (fanIn: Int, fanOut: Int) {
    precondition(shape.rank >= 1, "fans need a shape of rank ≥ 1")
    if shape.rank == 1 { return (shape[0], shape[0]) }
    let receptive = shape.dimensions.dropFirst(2).reduce(1, *)
    return (shape[1] * receptive, shape[0] * receptive)
  }

  /// Xavier/Glorot uniform: `U(±gain·√(6/(fanIn+fanOut)))`.
  public static func xavierUniform(
    _ shape: Shape, gain: Float = 1, using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let (fanIn, fanOut) = fans(of: shape)
    let bound = gain * (6 / Float(fanIn + fanOut)).squareRoot()
    return randomUniform(shape, lowerBound: -bound, upperBound: bound, using: &generator)
  }

  /// Xavier/Glorot normal: `N(0, gain²·2/(fanIn+fanOut))`.
  public static func xavierNormal(
    _ shape: Shape, gain: Float = 1, using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let (fanIn, fanOut) = fans(of: shape)
    let std = gain * (2 / Float(fanIn + fanOut)).squareRoot()
    return randomNormal(shape, standardDeviation: std, using: &generator)
  }

  /// Kaiming/He uniform: `U(±gain·√(3/fan))`, with `gain = √2` for ReLU by default.
  public static func kaimingUniform(
    _ shape: Shape, mode: FanMode = .fanIn, gain: Float = 1.41421356,
    using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let (fanIn, fanOut) = fans(of: shape)
    let fan = Float(mode == .fanIn ? fanIn : fanOut)
    let bound = gain * (3 / fan).squareRoot()
    return randomUniform(shape, lowerBound: -bound, upperBound: bound, using: &generator)
  }

  /// Kaiming/He normal: `N(0, gain²/fan)`, with `gain = √2` for ReLU by default.
  public static func kaimingNormal(
    _ shape: Shape, mode: FanMode = .fanIn, gain: Float = 1.41421356,
    using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    let (fanIn, fanOut) = fans(of: shape)
    let fan = Float(mode == .fanIn ? fanIn : fanOut)
    return randomNormal(shape, standardDeviation: gain / fan.squareRoot(), using: &generator)
  }

  /// A (semi-)orthogonal matrix of shape `[rows, columns]` (higher ranks are flattened to
  /// `[shape[0], rest]`), scaled by `gain`: the Q factor of a Gaussian matrix's QR decomposition
  /// through LAPACK (`sgeqrf` + `sorgqr`), with column signs fixed by `R`'s diagonal so the
  /// distribution is uniform (Haar).
  public static func orthogonal(
    _ shape: Shape, gain: Float = 1, using generator: inout some RandomNumberGenerator
  ) -> Tensor {
    precondition(shape.rank >= 2, "orthogonal needs a shape of rank ≥ 2, got \(shape)")
    let rows = shape[0]
    let cols = shape.elementCount / Swift.max(rows, 1)
    if rows == 0 || cols == 0 { return Tensor(zeros: shape) }
    // Factor the tall orientation: A is [tall, short] with tall ≥ short.
    let transposeResult = rows < cols
    let (tall, short) = transposeResult ? (cols, rows) : (rows, cols)
    var a = randomNormal([tall, short], using: &generator).scalars
    var tau = [Float](repeating: 0, count: short)
    _ = BLAS.configured
    let status1 = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, Int32(tall), Int32(short), &a, Int32(short), &tau)
    precondition(status1 == 0, "LAPACKE_sgeqrf failed with status \(status1)")
    let diagonalSigns = (0..<short).map { a[$0 * short + $0] < 0 ? Float(-1) : Float(1) }
    let status2 = LAPACKE_sorgqr(
      LAPACK_ROW_MAJOR, Int32(tall), Int32(short), Int32(short), &a, Int32(short), &tau)
    precondition(status2 == 0, "LAPACKE_sorgqr failed with status \(status2)")
    for r in 0..<tall {
      for c in 0..<short { a[r * short + c] *= diagonalSigns[c] * gain }
    }
    let q = Tensor(shape: [tall, short], scalars: a)
    return (transposeResult ? q.transposed() : q).reshaped(to: shape)
  }

  private static func standardNormalPair(_ generator: inout some RandomNumberGenerator) -> (Double, Double) {
    // 1 − u lies in (0, 1], so the logarithm is finite.
    let u1 = 1 - generator.nextUnitDouble()
    let u2 = generator.nextUnitDouble()
    let radius = (-2 * libmLog(u1)).squareRoot()
    let angle = 2 * Double.pi * u2
    return (radius * libmCos(angle), radius * libmSin(angle))
  }
}

@inline(__always) private func libmLog(_ x: Double) -> Double { log(x) }
@inline(__always) private func libmCos(_ x: Double) -> Double { cos(x) }
@inline(__always) private func libmSin(_ x: Double) -> Double { sin(x) }
