import CKernels
import SSMTensor

// Inverted dropout. Memory kept: the scaled keep mask.

extension Variable {
  /// Inverted dropout: in training each element is kept with probability `1 − probability` and
  /// scaled by `1/(1 − probability)`, else zeroed; in evaluation (or with probability 0) the
  /// identity.
  ///
  /// The op takes one 64-bit draw from `generator` as a key; element `i` is kept when a
  /// counter-based hash of (key, i) clears the threshold. A seeded run is therefore
  /// reproducible, every element's decision is independent of the others, and the mask is made
  /// by both workers in SIMD.
  /// - Precondition: `0 ≤ probability < 1`.
  public func dropout<Generator: RandomNumberGenerator>(
    probability: Float, training: Bool, using generator: inout Generator
  ) -> Variable {
    precondition(probability >= 0 && probability < 1, "dropout probability \(probability) is not in [0, 1)")
    guard training && probability > 0 else { return self }
    let (mask, output) = Self.dropoutMask(
      key: generator.next(), probability: probability, applyingTo: value)
    return Variable.record(value: output, inputs: [self]) { { g in [g * mask] } }
  }

  /// The keep mask (`scale` or 0 per element) for `key`, and `x` times it.
  package static func dropoutMask(key: UInt64, probability: Float, applyingTo x: Tensor) -> (mask: Tensor, output: Tensor) {
    let scale = 1 / (1 - probability)
    let count = x.elementCount
    var mask: Tensor?
    let output = x.withUnsafeBufferPointer { input in
      Tensor(
        shape: x.shape,
        unsafeUninitializedCapacity: { y in
          mask = Tensor(
            shape: x.shape,
            unsafeUninitializedCapacity: { m in
              nonisolated(unsafe) let p = (input.baseAddress, y.baseAddress, m.baseAddress)
              Parallel.forEachChunk(count: count, minimumPerWorker: 1 << 16) { range in
                ssm_dropout(key, probability, scale, p.0, p.1, p.2, range.lowerBound, range.upperBound)
              }
            })
        })
    }
    return (mask!, output)
  }
}
