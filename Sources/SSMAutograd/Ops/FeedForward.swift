import SSMTensor

// Fused position-wise feed-forward network. Memory kept: the hidden layer before its activation
// ([rows, inner]); the separate operations keep it, its activation and, with dropout, a mask.

extension Variable {
  /// A position-wise feed-forward network as one recorded operation:
  /// `Drop(f(x·W₁ᵀ + b₁))·W₂ᵀ + b₂` over the last axis of `x`.
  ///
  /// The same values and gradients as the separate operations (linear, activation, dropout,
  /// linear), and the same dropout mask for the same draw from `generator` (one 64-bit key,
  /// only when `training` and `dropout > 0`, as ``dropout(probability:training:using:)`` on the
  /// hidden layer). The rows are computed in blocks that stay in cache from the first product
  /// to the second, forward and backward, so the hidden layer is written once and read once
  /// instead of passing through memory between every two operations.
  ///
  /// - Parameters:
  ///   - x: `[…, D]`, at least one leading axis.
  ///   - first: `W₁`, `[inner, D]`.
  ///   - firstBias: `b₁`, `[inner]`.
  ///   - second: `W₂`, `[D, inner]`.
  ///   - secondBias: `b₂`, `[D]`.
  ///   - activation: `f`.
  ///   - dropout: the drop probability of the hidden layer, in `[0, 1)`.
  ///   - training: whether dropout applies.
  ///   - generator: the source of the dropout key.
  /// - Returns: `[…, D]`.
  public static func feedForward<Generator: RandomNumberGenerator>(
    _ x: Variable, first: Variable, firstBias: Variable, second: Variable, secondBias: Variable,
    activation: ElementwiseFunction, dropout: Float = 0, training: Bool = false, using generator: inout Generator
  ) -> Variable {
    precondition(dropout >= 0 && dropout < 1, "feed-forward dropout \(dropout) is not in [0, 1)")
    let drop = training && dropout > 0 ? Tensor.KeyedDropout(key: generator.next(), probability: dropout) : nil
    let inputs = [x, first, firstBias, second, secondBias]
    let weights = Tensor.FeedForwardWeights(
      first: first.value, firstBias: firstBias.value, second: second.value, secondBias: secondBias.value)
    guard GradientMode.isEnabled, inputs.contains(where: \.requiresGradient) else {
      return Variable(Tensor.feedForward(x.value, weights: weights, activation: activation, dropout: drop, keeping: nil))
    }
    var kept = Tensor.FeedForwardRecord(preActivation: Tensor(0))
    let output = Tensor.feedForward(x.value, weights: weights, activation: activation, dropout: drop, keeping: &kept)
    let needed = inputs.map(\.requiresGradient)
    return record(value: output, inputs: inputs) {
      { [input = x.value, kept] g in
        let d = Tensor.feedForwardBackward(
          outputGradient: g, input: input, weights: weights, activation: activation, dropout: drop, record: kept)
        return zip(needed, [d.input, d.first, d.firstBias, d.second, d.secondBias]).map { $0 ? $1 : nil }
      }
    }
  }
}
