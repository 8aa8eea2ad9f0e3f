import SSMAutograd
import SSMKernels
import SSMTensor

/// The position-wise feed-forward network of the SSM recommenders, parameter names
/// `w_1`, `w_2`, `LayerNorm` (Docs/Models.md §4.3, §5.2, §6.3). Two placements of dropout and the norm:
///
/// - `.postNormResidual` (Mamba4Rec, SIGMA): `LN(Drop(W₂·Drop(gelu(W₁x + b₁)) + b₂) + x)`;
/// - `.normThenDropout` (SSD4Rec): `Drop(LN(W₂·Drop(gelu(W₁x + b₁)) + b₂ + x))`.
public final class FeedForward: Layer {
  /// Where dropout and LayerNorm sit.
  public enum Arrangement: String, Codable, Sendable {
    /// `LN(Drop(W₂·Drop(gelu(W₁x + b₁)) + b₂) + x)`: dropout before the residual, LayerNorm last
    /// (Mamba4Rec, SIGMA).
    case postNormResidual
    /// `Drop(LN(W₂·Drop(gelu(W₁x + b₁)) + b₂ + x))`: LayerNorm over the residual sum, dropout last
    /// (SSD4Rec).
    case normThenDropout
  }

  /// `w_1`: the expanding projection, weight `[innerDimension, dimension]`, followed by GELU.
  public let first: Linear
  /// `w_2`: the projection back to the model width, weight `[dimension, innerDimension]`.
  public let second: Linear
  /// `LayerNorm`: over the model width; where it sits depends on ``arrangement``.
  public let norm: LayerNorm
  /// The dropout used after the GELU and again where ``arrangement`` puts it.
  public let dropout: Dropout
  /// Where dropout and LayerNorm sit relative to the residual.
  public let arrangement: Arrangement

  /// PyTorch's default initialisation for both projections; LayerNorm γ = 1, β = 0.
  ///
  /// - Parameters:
  ///   - dimension: the model width D.
  ///   - innerDimension: the hidden width (4D in Mamba4Rec, SIGMA and SSD4Rec).
  ///   - dropout: the probability of both dropouts.
  ///   - epsilon: the LayerNorm's epsilon (default 1e-12).
  ///   - arrangement: where dropout and LayerNorm sit (default `.postNormResidual`).
  ///   - generator: the source of the initial weights.
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

  /// `w_1.*`, `w_2.*` and `LayerNorm.*`, the names of the official recommenders' feed-forward module.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("w_1", first.namedParameters()) + prefixed("w_2", second.namedParameters())
      + prefixed("LayerNorm", norm.namedParameters())
  }

  /// The network at every position of `x` `[B, L, D]`, with dropout active in a training `context`;
  /// returns `[B, L, D]`.
  public func callAsFunction(_ x: Variable, context: inout ForwardContext) -> Variable {
    let inner = positionwise(x, first: first, second: second, dropout: dropout.probability, context: &context)
    switch arrangement {
    case .postNormResidual: return norm(dropout(inner, context: &context) + x)
    case .normThenDropout: return dropout(norm(inner + x), context: &context)
    }
  }
}

/// `second(Drop(gelu(first(x))))` as one fused operation (`Variable.feedForward`), the dropout
/// keyed by one draw from `context.generator` in training, as a ``Dropout`` there would be.
func positionwise(
  _ x: Variable, first: Linear, second: Linear, dropout: Float, context: inout ForwardContext
) -> Variable {
  guard let b1 = first.bias, let b2 = second.bias else {
    preconditionFailure("positionwise: both projections of a feed-forward network have a bias")
  }
  return Variable.feedForward(
    x, first: first.weight.variable, firstBias: b1.variable, second: second.weight.variable, secondBias: b2.variable,
    activation: .gelu, dropout: dropout, training: context.isTraining, using: &context.generator)
}
