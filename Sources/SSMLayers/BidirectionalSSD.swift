import SSMAutograd
import SSMKernels
import SSMTensor

/// SSD4Rec's bidirectional SSD layer (Docs/Models.md §6.3, official code) over a packed batch: one
/// Mamba-2 block read forwards and over each segment reversed (the "sequence registers" —
/// segment ids and lengths — keep the sequences apart), the backward output added without
/// re-ordering, then LayerNorm, dropout and the feed-forward network:
///
///     H = Drop(LN(Mamba2(X) + β·Mamba2(reverseSegments(X)) + X));   out = FFN(H)
///
/// Parameter names `forward_ssd`, `LayerNorm`, `ffn`.
public final class BidirectionalSSD: Layer {
  /// `forward_ssd`: the one Mamba-2 block read in both directions.
  public let ssd: Mamba2Block
  /// `LayerNorm`: over the sum of both directions and the residual, width D.
  public let norm: LayerNorm
  /// `ffn`: the feed-forward network applied last, arranged `.normThenDropout`.
  public let feedForward: FeedForward
  /// The dropout after the LayerNorm, with the layer's dropout probability.
  public let dropout: Dropout
  /// β, the weight of the backward direction (0.1 officially).
  public let backwardWeight: Float

  /// A layer around a new Mamba-2 block with its reference initialisation; LayerNorms γ = 1, β = 0.
  ///
  /// - Parameters:
  ///   - block: the Mamba-2 block's configuration; its `modelDimension` is the layer width D.
  ///   - innerSize: the feed-forward network's inner width (4D officially).
  ///   - dropout: the probability of this dropout and of the feed-forward network's.
  ///   - backwardWeight: β, the weight of the backward direction (default 0.1, the official value).
  ///   - epsilon: the epsilon of both LayerNorms (default 1e-12).
  ///   - generator: the source of the initial weights.
  public init(
    block: Mamba2Block.Configuration, innerSize: Int, dropout: Float, backwardWeight: Float = 0.1, epsilon: Float = 1e-12,
    using generator: inout some RandomNumberGenerator
  ) {
    ssd = Mamba2Block(configuration: block, using: &generator)
    norm = LayerNorm(dimension: block.modelDimension, epsilon: epsilon)
    feedForward = FeedForward(
      dimension: block.modelDimension, innerDimension: innerSize, dropout: dropout, epsilon: epsilon,
      arrangement: .normThenDropout,
      using: &generator)
    self.dropout = Dropout(probability: dropout)
    self.backwardWeight = backwardWeight
  }

  /// `forward_ssd.*` (the one Mamba-2 block of both directions), `LayerNorm.*` and `ffn.*`, the official
  /// SSD4Rec names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("forward_ssd", ssd.namedParameters()) + prefixed("LayerNorm", norm.namedParameters())
      + prefixed("ffn", feedForward.namedParameters())
  }

  /// - Parameters:
  ///   - x: a packed batch, `[1, T, D]`.
  ///   - sequenceIndex: the segment id of every token, `[1, T]`.
  ///   - segmentLengths: the segment lengths, summing to `T`.
  ///   - context: training mode and the dropout generator.
  public func callAsFunction(
    _ x: Variable, sequenceIndex: IndexTensor, segmentLengths: [Int], context: inout ForwardContext
  ) -> Variable {
    let forward = ssd(x, sequenceIndex: sequenceIndex)
    let backward = ssd(x.flippingSegments([segmentLengths]), sequenceIndex: sequenceIndex)
    let mixed = dropout(norm(forward + backward * backwardWeight + x), context: &context)
    return feedForward(mixed, context: &context)
  }
}
