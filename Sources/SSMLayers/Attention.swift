import SSMAutograd
import SSMTensor

/// Multi-head self-attention with a residual connection and LayerNorm, post-norm, as RecBole's
/// `MultiHeadAttention` (parameter names `query`, `key`, `value`, `dense`, `LayerNorm`):
///
///     Q, K, V = x·W_qᵀ + b_q, x·W_kᵀ + b_k, x·W_vᵀ + b_v           split into `heads` of D/heads
///     A = Drop_attn(softmax(Q·Kᵀ/√(D/heads) + mask))                per head
///     y = LN(Drop_hidden((A·V joined over heads)·W_dᵀ + b_d) + x)
public final class MultiHeadAttention: Layer {
  /// Query projection, `D` to `D` (`query`).
  public let query: Linear
  /// Key projection, `D` to `D` (`key`).
  public let key: Linear
  /// Value projection, `D` to `D` (`value`).
  public let value: Linear
  /// Output projection of the joined heads, `D` to `D` (`dense`).
  public let dense: Linear
  /// LayerNorm of the output plus the residual input (`LayerNorm`).
  public let norm: LayerNorm
  /// Number of attention heads; each attends over `D / heads` dimensions.
  public let heads: Int
  /// Dropout on the attention probabilities (RecBole `attn_dropout`).
  public let attentionDropout: Dropout
  /// Dropout on the output projection, before the residual (RecBole `out_dropout`).
  public let hiddenDropout: Dropout

  /// PyTorch's default initialisation for the four projections; LayerNorm γ = 1, β = 0.
  /// - Precondition: `heads` divides `dimension`.
  public init(
    dimension: Int, heads: Int, attentionDropout: Float = 0, hiddenDropout: Float = 0, epsilon: Float = 1e-12,
    using generator: inout some RandomNumberGenerator
  ) {
    precondition(heads > 0 && dimension % heads == 0, "MultiHeadAttention: \(heads) heads do not divide width \(dimension)")
    query = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    key = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    value = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    dense = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    norm = LayerNorm(dimension: dimension, epsilon: epsilon)
    self.heads = heads
    self.attentionDropout = Dropout(probability: attentionDropout)
    self.hiddenDropout = Dropout(probability: hiddenDropout)
  }

  /// `query.*`, `key.*`, `value.*`, `dense.*` and `LayerNorm.*`, RecBole's `MultiHeadAttention` names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("query", query.namedParameters()) + prefixed("key", key.namedParameters())
      + prefixed("value", value.namedParameters()) + prefixed("dense", dense.namedParameters())
      + prefixed("LayerNorm", norm.namedParameters())
  }

  /// Self-attention over `x` `[B, L, D]` with an additive `mask` that broadcasts to
  /// `[B, heads, L, L]` (0 where query `i` may attend to key `j`, a large negative value where not).
  public func callAsFunction(_ x: Variable, mask: Tensor, context: inout ForwardContext) -> Variable {
    let (b, l, d) = (x.shape[0], x.shape[1], x.shape[2])
    let size = d / heads
    func split(_ v: Variable) -> Variable { v.reshaped(to: [b, l, heads, size]).permuted([0, 2, 1, 3]) }
    let scores = Variable.matmul(split(query(x)), split(key(x)), transposeB: true) * (1 / Float(size).squareRoot()) + mask
    let probabilities = attentionDropout(scores.softmax(), context: &context)
    let joined = Variable.matmul(probabilities, split(value(x))).permuted([0, 2, 1, 3]).reshaped(to: [b, l, d])
    return norm(hiddenDropout(dense(joined), context: &context) + x)
  }
}

/// The Transformer's position-wise feed-forward sublayer, post-norm, as RecBole's `FeedForward`
/// (parameter names `dense_1`, `dense_2`, `LayerNorm`; no dropout between GELU and the second
/// projection, unlike the SSM models' ``FeedForward``):
///
///     y = LN(Drop(W₂·gelu(W₁x + b₁) + b₂) + x)
public final class TransformerFeedForward: Layer {
  /// Expansion from `D` to the inner width, followed by GELU (`dense_1`).
  public let first: Linear
  /// Projection from the inner width back to `D` (`dense_2`).
  public let second: Linear
  /// LayerNorm of the output plus the residual input (`LayerNorm`).
  public let norm: LayerNorm
  /// Dropout on the second projection's output, before the residual.
  public let dropout: Dropout

  /// PyTorch's default initialisation for both projections; LayerNorm γ = 1, β = 0.
  public init(
    dimension: Int, innerDimension: Int, dropout: Float = 0, epsilon: Float = 1e-12,
    using generator: inout some RandomNumberGenerator
  ) {
    first = Linear(inputSize: dimension, outputSize: innerDimension, using: &generator)
    second = Linear(inputSize: innerDimension, outputSize: dimension, using: &generator)
    norm = LayerNorm(dimension: dimension, epsilon: epsilon)
    self.dropout = Dropout(probability: dropout)
  }

  /// `dense_1.*`, `dense_2.*` and `LayerNorm.*`, RecBole's `FeedForward` names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("dense_1", first.namedParameters()) + prefixed("dense_2", second.namedParameters())
      + prefixed("LayerNorm", norm.namedParameters())
  }

  /// The sublayer on `x` `[B, L, D]`.
  public func callAsFunction(_ x: Variable, context: inout ForwardContext) -> Variable {
    norm(dropout(second(first(x).gelu()), context: &context) + x)
  }
}
