import CKernels

// Inverted dropout. Memory kept: the scaled keep mask.

extension Variable {
  /// Inverted dropout: in training each element is kept with probability `1 − probability` and
  /// scaled by `1/(1 − probability)`, else zeroed; in evaluation (or with probability 0) the
  /// identity. The mask comes from `generator`, so a seeded run is reproducible.
  /// - Precondition: `0 ≤ probability < 1`.
  public func dropout<Generator: RandomNumberGenerator>(
    probability: Float, training: Bool, using generator: inout Generator
  ) -> Variable {
    precondition(probability >= 0 && probability < 1, "dropout probability \(probability) is not in [0, 1)")
    guard training && probability > 0 else { return self }
    let scale = 1 / (1 - probability)
    var mask = [Float](repeating: 0, count: value.elementCount)
    if var fast = generator as? SplitMix64 {
      // The same draws as the generic loop below, in one C pass.
      mask.withUnsafeMutableBufferPointer { ssm_dropout_mask(&fast.state, probability, scale, $0.baseAddress, $0.count) }
      generator = fast as! Generator
    } else {
      for i in mask.indices where generator.nextUnitFloat() >= probability { mask[i] = scale }
    }
    let maskTensor = Tensor(shape: shape, scalars: mask)
    return Variable.record(value: value * maskTensor, inputs: [self]) { { g in [g * maskTensor] } }
  }
}
