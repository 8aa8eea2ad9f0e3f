/// SSD4Rec's bidirectional SSD layer (SPEC §6.3, official code) over a packed batch: one
/// Mamba-2 block read forwards and over each segment reversed (the "sequence registers" —
/// segment ids and lengths — keep the sequences apart), the backward output added without
/// re-ordering, then LayerNorm, dropout and the feed-forward network:
///
///     H = Drop(LN(Mamba2(X) + β·Mamba2(reverseSegments(X)) + X));   out = FFN(H)
///
/// Parameter names `forward_ssd`, `LayerNorm`, `ffn`.
public final class BidirectionalSSD: Layer {
  public let ssd: Mamba2Block
  public let norm: LayerNorm
  public let feedForward: FeedForward
  public let dropout: Dropout
  /// β, the weight of the backward direction (0.1 officially).
  public let backwardWeight: Float

  public init(
    block: Mamba2Block.Configuration, innerSize: Int, dropout: Float, backwardWeight: Float = 0.1, epsilon: Float = 1e-12,
    using generator: inout some RandomNumberGenerator
  ) {
    ssd = Mamba2Block(configuration: block, using: &generator)
    norm = LayerNorm(dimension: block.modelDimension, epsilon: epsilon)
    feedForward = FeedForward(
      dimension: block.modelDimension, innerDimension: innerSize, dropout: dropout, epsilon: epsilon, arrangement: .normThenDropout,
      using: &generator)
    self.dropout = Dropout(probability: dropout)
    self.backwardWeight = backwardWeight
  }

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
