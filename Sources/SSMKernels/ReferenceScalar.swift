#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The scalar types the reference kernels run in: Double for tests, Float for the "plain scalar
/// loop" baselines of the benchmarks.
package protocol ReferenceScalar: BinaryFloatingPoint {
  static func exp(_ x: Self) -> Self
  static func log1p(_ x: Self) -> Self
}

extension Double: ReferenceScalar {
  package static func exp(_ x: Double) -> Double { Glibc_exp(x) }
  package static func log1p(_ x: Double) -> Double { Glibc_log1p(x) }
}

extension Float: ReferenceScalar {
  package static func exp(_ x: Float) -> Float { expf(x) }
  package static func log1p(_ x: Float) -> Float { log1pf(x) }
}

@inline(__always) private func Glibc_exp(_ x: Double) -> Double { exp(x) }
@inline(__always) private func Glibc_log1p(_ x: Double) -> Double { log1p(x) }

extension ReferenceScalar {
  /// `log(1 + eˣ)`, or `x` above 20 (the official kernels' threshold).
  package static func softplus(_ x: Self) -> Self { x > 20 ? x : log1p(exp(x)) }
  /// `1/(1 + e⁻ˣ)`.
  package static func sigmoid(_ x: Self) -> Self { 1 / (1 + exp(-x)) }
}

extension Array where Element == Float {
  /// The values in Double.
  package var asDoubles: [Double] { map(Double.init) }
}
