import SSMAutograd
import SSMKernels
import SSMTensor

// The SSMKernels kernels as single nodes on the autograd tape. Each op keeps references to its
// input tensors (no copies) and calls the kernel's hand-written backward, which recomputes what
// it needs (scan states, chunk states); see each kernel's documentation for its scratch memory.

extension Variable {
  /// The selective scan of Mamba as one differentiable op (see `SelectiveScan`); the segment
  /// ids of a packed batch are not differentiated.
  ///
  /// - Parameters: shapes as in `SelectiveScan.Inputs`: `u`, `delta`, `z` `[B, L, E]`; `A`
  ///   `[E, N]`; `B`, `C` `[B, L, N]`; `D`, `deltaBias` `[E]`; `sequenceIndex` `[B, L]`.
  /// - Returns: `[B, L, E]`.
  public static func selectiveScan(
    u: Variable, delta: Variable, A: Variable, B: Variable, C: Variable, D: Variable? = nil, z: Variable? = nil,
    deltaBias: Variable? = nil, deltaSoftplus: Bool = true, sequenceIndex: IndexTensor? = nil
  ) -> Variable {
    let inputs = SelectiveScan.Inputs(
      u: u.value, delta: delta.value, A: A.value, B: B.value, C: C.value, D: D?.value, z: z?.value,
      deltaBias: deltaBias?.value, deltaSoftplus: deltaSoftplus, sequenceIndex: sequenceIndex)
    let output = SelectiveScan.forward(inputs).output
    var operands = [u, delta, A, B, C]
    for optional in [D, z, deltaBias] { if let optional { operands.append(optional) } }
    return record(value: output, inputs: operands) {
      { g in
        let grads = SelectiveScan.backward(outputGradient: g, inputs)
        var result: [Tensor?] = [grads.u, grads.delta, grads.A, grads.B, grads.C]
        if D != nil { result.append(grads.D) }
        if z != nil { result.append(grads.z) }
        if deltaBias != nil { result.append(grads.deltaBias) }
        return result
      }
    }
  }

  /// Chunked SSD (Mamba-2) as one differentiable op (see `ChunkedSSD`); the segment ids of a
  /// packed batch are not differentiated.
  ///
  /// - Parameters: `x` `[B, L, H, P]`; `dt` `[B, L, H]`; `A`, `D`, `dtBias` `[H]`; `B`, `C`
  ///   `[B, L, G, N]`; `initialState` `[B, H, P, N]`; `sequenceIndex` `[B, L]`.
  /// - Returns: `[B, L, H, P]`.
  public static func chunkedSSD(
    x: Variable, dt: Variable, A: Variable, B: Variable, C: Variable, D: Variable? = nil, dtBias: Variable? = nil,
    dtSoftplus: Bool = true, initialState: Variable? = nil, sequenceIndex: IndexTensor? = nil, chunkSize: Int = 64
  ) -> Variable {
    let inputs = ChunkedSSD.Inputs(
      x: x.value, dt: dt.value, A: A.value, B: B.value, C: C.value, D: D?.value, dtBias: dtBias?.value,
      dtSoftplus: dtSoftplus, initialState: initialState?.value, sequenceIndex: sequenceIndex, chunkSize: chunkSize)
    let output = ChunkedSSD.forward(inputs).output
    var operands = [x, dt, A, B, C]
    for optional in [D, dtBias, initialState] { if let optional { operands.append(optional) } }
    return record(value: output, inputs: operands) {
      { g in
        let grads = ChunkedSSD.backward(outputGradient: g, inputs)
        var result: [Tensor?] = [grads.x, grads.dt, grads.A, grads.B, grads.C]
        if D != nil { result.append(grads.D) }
        if dtBias != nil { result.append(grads.dtBias) }
        if initialState != nil { result.append(grads.initialState) }
        return result
      }
    }
  }

  /// Causal depthwise convolution over time as one differentiable op (see `CausalConv1d`).
  /// - Parameters: `self` `[B, L, C]`; `weight` `[C, K]` or `[C, 1, K]`; `bias` `[C]`.
  public func causalConv1d(weight: Variable, bias: Variable?, sequenceIndex: IndexTensor? = nil) -> Variable {
    let (x, w) = (value, weight.value)
    let output = CausalConv1d.forward(x, weight: w, bias: bias?.value, sequenceIndex: sequenceIndex)
    var operands = [self, weight]
    if let bias { operands.append(bias) }
    return Variable.record(value: output, inputs: operands) {
      { g in
        let grads = CausalConv1d.backward(outputGradient: g, x, weight: w, hasBias: bias != nil, sequenceIndex: sequenceIndex)
        return bias == nil ? [grads.x, grads.weight] : [grads.x, grads.weight, grads.bias]
      }
    }
  }

  /// SIGMA's official fixed-prefix flip (see `PartialFlip.prefix(_:count:)`); its pullback is
  /// the same flip.
  public func partialFlip(prefix count: Int) -> Variable {
    Variable.record(value: PartialFlip.prefix(value, count: count), inputs: [self]) {
      { g in [PartialFlip.prefix(g, count: count)] }
    }
  }

  /// The paper's per-sequence flip keeping the last `keep` items (see
  /// `PartialFlip.keepingLast(_:keep:lengths:)`); its pullback is the same flip.
  public func partialFlip(keepingLast keep: Int, lengths: [Int]) -> Variable {
    Variable.record(value: PartialFlip.keepingLast(value, keep: keep, lengths: lengths), inputs: [self]) {
      { g in [PartialFlip.keepingLast(g, keep: keep, lengths: lengths)] }
    }
  }

  /// Reverses every packed segment in place (see `PartialFlip.segments(_:segmentLengths:)`).
  public func flippingSegments(_ segmentLengths: [[Int]]) -> Variable {
    Variable.record(value: PartialFlip.segments(value, segmentLengths: segmentLengths), inputs: [self]) {
      { g in [PartialFlip.segments(g, segmentLengths: segmentLengths)] }
    }
  }
}
