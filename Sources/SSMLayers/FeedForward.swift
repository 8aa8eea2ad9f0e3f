/// The position-wise feed-forward network of the SSM recommenders, parameter names
/// `w_1`, `w_2`, `LayerNorm` (SPEC §4.3, §5.2, §6.3). Two placements of dropout and the norm:
///
/// - `.postNormResidual` (Mamba4Rec, SIGMA): `LN(Drop(W₂·Drop(gelu(W₁x + b₁)) + b₂) + x)`;
/// - `.normThenDropout` (SSD4Rec): `Drop(LN(W₂·Drop(gelu(W₁x + b₁)) + b₂ + x))`.
public final class FeedForward: Layer {
  /// Where dropout and LayerNorm sit.
  public enum Arrangement: String, Codable, Sendable {
    case postNormResidual, normThenDropout
  }

  public let first, second: Linear
  public let norm: LayerNorm
  public let dropout: Dropout
  public let arrangement: Arrangement

  public init(
    dimension: Int, innerDimension: Int, dropout: Float, epsilon: Float = 1e-12, arrangement: Arrangement = .postNormResidual,
    using generator: inout some RandomNumberGenerator
  ) {
    first = Linear(inputSize: dimension, outputSize: innerDimension, using: &generator)
    second = Linear(inputSize: innerDimension, outputSize: dimension, using: &generator)
    norm = LayerNorm(dimension: dimension, epsilon: epsilon)
    self.dropout = Dropout(probability: dropout)
    self.arrangement = arrangement
  }

  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("w_1", first.namedParameters()) + prefixed("w_2", second.namedParameters()) + prefixed("LayerNorm", norm.namedParameters())
  }

  public func callAsFunction(_ x: Variable, context: inout ForwardContext) -> Variable {
    let hidden = dropout(first(x).gelu(), context: &context)
    switch arrangement {
    case .postNormResidual: return norm(dropout(second(hidden), context: &context) + x)
    case .normThenDropout: return dropout(norm(second(hidden) + x), context: &context)
    }
  }
}
