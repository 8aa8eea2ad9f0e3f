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

  /// The layer's output at one position of each row only, `[B, D]`: row `b`'s output at
  /// `positions[b]` of ``callAsFunction(_:mask:context:)`` on `x` `[B, L, D]` with `mask`
  /// `[B, 1, L, L]`. Keys and values are projected at every position, the query, the output
  /// projection and the norm at the B positions asked for, so a last layer whose output is read
  /// at one position costs a third of the projections and 1/L of the attention.
  public func callAsFunction(_ x: Variable, mask: Tensor, at positions: [Int], context: inout ForwardContext) -> Variable {
    let (b, l, d) = (x.shape[0], x.shape[1], x.shape[2])
    precondition(
      positions.count == b && positions.allSatisfy({ (0..<l).contains($0) }) && mask.shape == [b, 1, l, l],
      "MultiHeadAttention: positions \(positions) and mask \(mask.shape) must fit the input \(x.shape)")
    let rows = x.gatherTimeSteps(positions)
    var maskRows = [Float](repeating: 0, count: b * l)
    mask.withUnsafeBufferPointer { m in
      for (row, position) in positions.enumerated() {
        for j in 0..<l { maskRows[row * l + j] = m[(row * l + position) * l + j] }
      }
    }
    let q = query(rows).reshaped(to: [b, 1, d])
    let joined = attend(q, key(x), value(x), mask: Tensor(shape: [b, 1, 1, l], scalars: maskRows), context: &context)
    return norm(hiddenDropout(dense(joined.reshaped(to: [b, d])), context: &context) + rows)
  }

  /// The packed call's output at each history's last token only, `[B, D]`, histories in the
  /// layout's order: as ``callAsFunction(_:mask:at:context:)`` for a padded batch.
  public func lastTokenOutputs(_ x: Variable, layout: PackedAttentionLayout, context: inout ForwardContext) -> Variable {
    precondition(
      x.shape.rank == 2 && x.shape[0] == layout.tokenCount,
      "MultiHeadAttention: packed input \(x.shape) must be [\(layout.tokenCount), D]")
    let d = x.shape[1]
    let rows = x.gatherRows(layout.lastTokens)
    let (q, k, v) = (query(rows), key(x), value(x))
    var outputs = [Variable]()
    for bucket in layout.buckets {
      func padded(_ t: Variable) -> Variable { t.gatherRows(bucket.slots).reshaped(to: [bucket.count, bucket.width, d]) }
      let queries = q.gatherRows(IndexTensor(shape: [bucket.count], values: bucket.histories.map(Int32.init)))
      let joined = attend(
        queries.reshaped(to: [bucket.count, 1, d]), padded(k), padded(v), mask: bucket.lastQueryMask, context: &context)
      outputs.append(joined.reshaped(to: [bucket.count, d]))
    }
    let joined = (outputs.count == 1 ? outputs[0] : Variable.concatenate(outputs, alongAxis: 0)).gatherRows(layout.historyRows)
    return norm(hiddenDropout(dense(joined), context: &context) + rows)
  }

  /// The heads' attention of `q` `[B, Lq, D]` over `k` and `v` `[B, L, D]`, joined back to
  /// `[B, Lq, D]`; `mask` broadcasts to `[B, heads, Lq, L]`.
  private func attend(_ q: Variable, _ k: Variable, _ v: Variable, mask: Tensor, context: inout ForwardContext) -> Variable {
    let (b, lq, d) = (q.shape[0], q.shape[1], q.shape[2])
    let size = d / heads
    let scale = 1 / Float(size).squareRoot()
    // One fused operation that never copies the heads apart, for the masks it takes (a row of
    // masks per sequence or one for all); any other broadcast goes through the separate ops.
    if mask.rank == 4 && mask.shape[1] == 1 && (mask.shape[0] == 1 || mask.shape[0] == b) {
      return Variable.attention(
        queries: q, keys: k, values: v, heads: heads, mask: mask, scale: scale, dropout: attentionDropout.probability,
        training: context.isTraining, using: &context.generator)
    }
    func split(_ v: Variable) -> Variable { v.reshaped(to: [b, v.shape[1], heads, size]).permuted([0, 2, 1, 3]) }
    let scores = Variable.matmul(split(q), split(k), transposeB: true) * scale + mask
    let probabilities = attentionDropout(scores.softmax(), context: &context)
    return Variable.matmul(probabilities, split(v)).permuted([0, 2, 1, 3]).reshaped(to: [b, lq, d])
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
    /// The histories it holds, by their index in the batch, longest first.
    public let histories: [Int]
    /// Each history's row of ``mask`` at its last token, `[count, 1, 1, width]`: 0 on the
    /// history's slots, −10000 on its padding.
    public let lastQueryMask: Tensor
  }

  /// The buckets, longest histories first.
  public let buckets: [Bucket]
  /// Each token's slot among the buckets' slots laid end to end.
  public let tokenSlots: IndexTensor
  /// T, the number of tokens.
  public let tokenCount: Int
  /// Each history's last token, in the batch's order of histories.
  public let lastTokens: IndexTensor
  /// Each history's row among the buckets' histories laid end to end.
  public let historyRows: IndexTensor

  /// The layout of histories of `lengths` (each ≥ 1) whose tokens lie end to end in this order.
  /// A bucket holds at most `slotsPerBucket` padded slots (or one history, if that is longer).
  public init(lengths: [Int], slotsPerBucket: Int = 16_384) {
    precondition(lengths.allSatisfy { $0 >= 1 }, "PackedAttentionLayout: every history needs a token, got \(lengths)")
    let starts = startOffsets(lengths)
    let total = lengths.reduce(0, +)
    let order = longestFirst(lengths)
    var tokenSlots = [Int32](repeating: 0, count: total)
    var historyRows = [Int32](repeating: 0, count: lengths.count)
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
      var lastQueryMask = [Float](repeating: -10000, count: members.count * width)
      for (i, history) in members.enumerated() {
        lastQueryMask.replaceSubrange(
          (i * width)..<(i * width + lengths[history]), with: repeatElement(0, count: lengths[history]))
        historyRows[history] = Int32(next + i)
      }
      buckets.append(
        Bucket(
          count: members.count, width: width, slots: IndexTensor(shape: [slots.count], values: slots),
          mask: Tensor(shape: [members.count, 1, width, width], scalars: mask), histories: Array(members),
          lastQueryMask: Tensor(shape: [members.count, 1, 1, width], scalars: lastQueryMask)))
      slotBase += slots.count
      next = end
    }
    self.buckets = buckets
    self.tokenSlots = IndexTensor(shape: [total], values: tokenSlots)
    tokenCount = total
    lastTokens = IndexTensor(shape: [lengths.count], values: zip(starts, lengths).map { Int32($0 + $1 - 1) })
    self.historyRows = IndexTensor(shape: [lengths.count], values: historyRows)
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
    norm(dropout(positionwise(x, first: first, second: second, dropout: 0, context: &context), context: &context) + x)
  }
}
