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
    norm(hiddenDropout(dense(attend(query(x), key(x), value(x), mask: mask, context: &context)), context: &context) + x)
  }

  /// Causal self-attention within each history of a packed batch: `x` is `[T, D]`, the tokens of
  /// the histories of `layout` end to end, and a token attends to the earlier tokens of its own
  /// history only (a block-diagonal causal mask). The projections, the output and the norm run on
  /// the T tokens; the attention itself runs per bucket of histories of similar length
  /// (``PackedAttentionLayout``), so it costs at most 4× the Σ ℓ² of the histories instead of
  /// B·L². Each history's outputs are those of the padded batch.
  public func callAsFunction(_ x: Variable, layout: PackedAttentionLayout, context: inout ForwardContext) -> Variable {
    precondition(
      x.shape.rank == 2 && x.shape[0] == layout.tokenCount,
      "MultiHeadAttention: packed input \(x.shape) must be [\(layout.tokenCount), D]")
    let d = x.shape[1]
    let (q, k, v) = (query(x), key(x), value(x))
    var outputs = [Variable]()
    for bucket in layout.buckets {
      func padded(_ t: Variable) -> Variable { t.gatherRows(bucket.slots).reshaped(to: [bucket.count, bucket.width, d]) }
      let joined = attend(padded(q), padded(k), padded(v), mask: bucket.mask, context: &context)
      outputs.append(joined.reshaped(to: [bucket.count * bucket.width, d]))
    }
    let joined = (outputs.count == 1 ? outputs[0] : Variable.concatenate(outputs, alongAxis: 0)).gatherRows(layout.tokenSlots)
    return norm(hiddenDropout(dense(joined), context: &context) + x)
  }

  /// The heads' attention of `q` over `k` and `v`, `[B, L, D]` each, joined back to `[B, L, D]`.
  private func attend(_ q: Variable, _ k: Variable, _ v: Variable, mask: Tensor, context: inout ForwardContext) -> Variable {
    let (b, l, d) = (q.shape[0], q.shape[1], q.shape[2])
    let size = d / heads
    func split(_ v: Variable) -> Variable { v.reshaped(to: [b, l, heads, size]).permuted([0, 2, 1, 3]) }
    let scores = Variable.matmul(split(q), split(k), transposeB: true) * (1 / Float(size).squareRoot()) + mask
    let probabilities = attentionDropout(scores.softmax(), context: &context)
    return Variable.matmul(probabilities, split(v)).permuted([0, 2, 1, 3]).reshaped(to: [b, l, d])
  }
}

/// Where the tokens of a packed batch of histories go for ``MultiHeadAttention``'s packed call:
/// the histories, longest first, are grouped into buckets whose lengths are within a factor of
/// two of the bucket's longest, and each bucket is attended as a padded batch of that width with
/// a causal, key-padding mask. A history is attended only to itself, so the buckets change the
/// cost and nothing else.
public struct PackedAttentionLayout: Sendable {
  /// Histories attended as one padded batch.
  public struct Bucket: Sendable {
    /// The number of histories in the bucket.
    public let count: Int
    /// The length of its longest history, to which the others are padded.
    public let width: Int
    /// For each of the `count × width` padded slots, the token it holds; a padding slot holds
    /// the bucket's first token, whose value the mask hides (its attention weight is exactly 0,
    /// so it receives no gradient either).
    public let slots: IndexTensor
    /// 0 where slot `i` may attend to slot `j` (`j ≤ i`, `j` inside the history), −10000
    /// elsewhere, as the padded model's mask; `[count, 1, width, width]`.
    public let mask: Tensor
  }

  /// The buckets, longest histories first.
  public let buckets: [Bucket]
  /// Each token's slot among the buckets' slots laid end to end.
  public let tokenSlots: IndexTensor
  /// T, the number of tokens.
  public let tokenCount: Int

  /// The layout of histories of `lengths` (each ≥ 1) whose tokens lie end to end in this order.
  /// A bucket holds at most `slotsPerBucket` padded slots (or one history, if that is longer).
  public init(lengths: [Int], slotsPerBucket: Int = 16_384) {
    precondition(lengths.allSatisfy { $0 >= 1 }, "PackedAttentionLayout: every history needs a token, got \(lengths)")
    let starts = startOffsets(lengths)
    let total = lengths.reduce(0, +)
    let order = longestFirst(lengths)
    var tokenSlots = [Int32](repeating: 0, count: total)
    var buckets = [Bucket]()
    var next = 0
    var slotBase = 0
    while next < order.count {
      let width = lengths[order[next]]
      var end = next + 1
      while end < order.count && 2 * lengths[order[end]] > width && (end - next + 1) * width <= slotsPerBucket { end += 1 }
      let members = order[next..<end]
      var slots = [Int32](repeating: Int32(starts[members.first!]), count: members.count * width)
      var mask = [Float](repeating: -10000, count: members.count * width * width)
      for (i, history) in members.enumerated() {
        let length = lengths[history]
        for t in 0..<length {
          slots[i * width + t] = Int32(starts[history] + t)
          tokenSlots[starts[history] + t] = Int32(slotBase + i * width + t)
          for j in 0...t { mask[(i * width + t) * width + j] = 0 }
        }
      }
      buckets.append(
        Bucket(
          count: members.count, width: width, slots: IndexTensor(shape: [slots.count], values: slots),
          mask: Tensor(shape: [members.count, 1, width, width], scalars: mask)))
      slotBase += slots.count
      next = end
    }
    self.buckets = buckets
    self.tokenSlots = IndexTensor(shape: [total], values: tokenSlots)
    tokenCount = total
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
