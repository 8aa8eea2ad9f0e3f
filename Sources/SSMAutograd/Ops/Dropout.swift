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
    let count = value.elementCount
    let maskTensor: Tensor
    let output: Tensor
    if var fast = generator as? SplitMix64 {
      // The same draws as the generic loop below, made in C by both workers at once (a
      // SplitMix64 draw depends only on its index), with the multiply fused in.
      let start = fast.state
      var mask: Tensor?
      let out = value.withUnsafeBufferPointer { x in
        Tensor(shape: shape, unsafeUninitializedCapacity: { y in
          mask = Tensor(shape: shape, unsafeUninitializedCapacity: { m in
            nonisolated(unsafe) let p = (x.baseAddress, y.baseAddress, m.baseAddress)
            Parallel.forEachChunk(count: count, minimumPerWorker: 1 << 16) { range in
              ssm_dropout(start, probability, scale, p.0, p.1, p.2, range.lowerBound, range.upperBound)
            }
          })
        })
      }
      fast.state = start &+ UInt64(count) &* 0x9E37_79B9_7F4A_7C15
      generator = fast as! Generator
      maskTensor = mask!
      output = out
    } else {
      var mask = [Float](repeating: 0, count: count)
      for i in mask.indices where generator.nextUnitFloat() >= probability { mask[i] = scale }
      maskTensor = Tensor(shape: shape, scalars: mask)
      output = value * maskTensor
    }
    return Variable.record(value: output, inputs: [self]) { { g in [g * maskTensor] } }
  }
}
