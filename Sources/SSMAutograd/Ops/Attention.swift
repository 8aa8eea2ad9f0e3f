import SSMTensor

// Fused multi-head attention. Memory kept: the probabilities ([B, heads, Lq, L], what the
// separate operations keep besides, with dropout, a keep mask of the same size, which this one
// makes again from its key).

extension Variable {
  /// Multi-head scaled dot-product attention with dropout on its weights, as one recorded
  /// operation: per head `h` (consecutive `D / heads`-wide slices of the last axis),
  /// `Drop(softmax(scale·Q_h·K_hᵀ + mask))·V_h`, joined back in place.
  ///
  /// The same values and gradients as the separate operations (split the heads, product, scale,
  /// mask, softmax, dropout, product, join), and the same dropout mask for the same draw from
  /// `generator` (one 64-bit key, only when `training` and `dropout > 0`, as ``dropout(probability:training:using:)``
  /// on the `[B, heads, Lq, L]` weights); but no head is copied apart and back, and the scale
  /// (the first product's factor), mask, softmax and dropout work on each head's scores in
  /// place, with no intermediate tensors.
  ///
  /// - Parameters:
  ///   - queries: `[B, Lq, D]`.
  ///   - keys: `[B, L, D]`.
  ///   - values: `[B, L, D]`, the rows the weights combine.
  ///   - heads: a divisor of `D`.
  ///   - mask: added to the scores, `[B, 1, Lq, L]` or `[1, 1, Lq, L]`; it gets no gradient.
  ///   - scale: the factor of the scores.
  ///   - dropout: the drop probability of the weights, in `[0, 1)`.
  ///   - training: whether dropout applies.
  ///   - generator: the source of the dropout key.
  /// - Returns: `[B, Lq, D]`.
  public static func attention<Generator: RandomNumberGenerator>(
    queries: Variable, keys: Variable, values: Variable, heads: Int, mask: Tensor, scale: Float, dropout: Float = 0,
    training: Bool = false, using generator: inout Generator
  ) -> Variable {
    precondition(dropout >= 0 && dropout < 1, "attention dropout \(dropout) is not in [0, 1)")
    let drop = training && dropout > 0 ? Tensor.KeyedDropout(key: generator.next(), probability: dropout) : nil
    let recorded = GradientMode.isEnabled && (queries.requiresGradient || keys.requiresGradient || values.requiresGradient)
    guard recorded || drop != nil else {
      return Variable(
        Tensor.attention(
          queries: queries.value, keys: keys.value, values: values.value, heads: heads, mask: mask, scale: scale))
    }
    var kept = Tensor.AttentionRecord(probabilities: Tensor(0))
    let output = Tensor.attention(
      queries: queries.value, keys: keys.value, values: values.value, heads: heads, mask: mask, scale: scale,
      keeping: &kept, dropout: drop)
    return record(value: output, inputs: [queries, keys, values]) {
      { [q = queries.value, k = keys.value, v = values.value, kept] g in
        let d = Tensor.attentionBackward(
          outputGradient: g, queries: q, keys: k, values: v, heads: heads, scale: scale, record: kept)
        return [d.queries, d.keys, d.values]
      }
    }
  }
}
