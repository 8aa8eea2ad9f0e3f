import CKernels
import SSMAutograd
import SSMTensor

// One position at a time (Docs/Models.md §12): the layers a causal recommender is built from,
// applied to the newest position of one history with the state the earlier positions left.
// Each step computes in evaluation mode (dropout is the identity) exactly what the layer's
// batched forward computes at that position, with no graph; scratch is a temporary allocation
// (on the stack at these sizes) and only the attention cache grows.

extension Linear {
  /// The number of inputs, the second extent of ``weight``.
  public var inputSize: Int { weight.shape[1] }
  /// The number of outputs, the first extent of ``weight``.
  public var outputSize: Int { weight.shape[0] }

  /// `y = W·x + b` for one vector: `x` holds ``inputSize`` floats, `y` receives ``outputSize``.
  public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
    let (n, k) = (outputSize, inputSize)
    weight.value.withUnsafeBufferPointer { w in
      if let bias {
        bias.value.withUnsafeBufferPointer { b in y.update(from: b.baseAddress!, count: n) }
      }
      BLAS.gemv(rows: n, columns: k, a: w.baseAddress!, lda: k, x: x, beta: bias == nil ? 0 : 1, y: y)
    }
  }
}

extension LayerNorm {
  /// Normalises one vector of `weight.shape[0]` floats from `x` into `y` (which may be `x`).
  public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
    let n = weight.shape[0]
    var (mean, rstd): (Float, Float) = (0, 0)
    weight.value.withUnsafeBufferPointer { g in
      bias.value.withUnsafeBufferPointer { b in
        ssm_layer_norm_rows(x, g.baseAddress!, b.baseAddress!, epsilon, 1, n, y, &mean, &rstd)
      }
    }
  }
}

/// `f(x)` in place over `count` floats, through the same vectorised kernel as ``Tensor/applying(_:)``.
@inline(__always) func applyInPlace(_ function: ElementwiseFunction, _ x: UnsafeMutablePointer<Float>, count: Int) {
  ssm_unary(function.rawValue, x, x, count)
}

/// `LN(W₂·gelu(W₁·x + b₁) + b₂ + x)` at one position: the evaluation-mode feed-forward sublayer
/// of both Mamba4Rec's and SASRec's layers. `x` and `y` may be the same buffer.
private func positionWiseFeedForward(
  _ first: Linear, _ second: Linear, _ norm: LayerNorm, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>
) {
  let (d, inner) = (second.outputSize, first.outputSize)
  withUnsafeTemporaryAllocation(of: Float.self, capacity: inner + d) { scratch in
    let hidden = scratch.baseAddress!
    let sum = hidden + inner
    first.apply(x, into: hidden)
    applyInPlace(.gelu, hidden, count: inner)
    second.apply(hidden, into: sum)
    for i in 0..<d { sum[i] += x[i] }
    norm.apply(sum, into: y)
  }
}

extension FeedForward {
  /// The network at one position in evaluation mode: `LN(W₂·gelu(W₁·x + b₁) + b₂ + x)` (both
  /// arrangements agree without dropout). `x` and `y` hold the model width and may be the same
  /// buffer.
  public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
    positionWiseFeedForward(first, second, norm, x, into: y)
  }
}

extension TransformerFeedForward {
  /// The sublayer at one position in evaluation mode: `LN(W₂·gelu(W₁·x + b₁) + b₂ + x)`; `x` and
  /// `y` may be the same buffer.
  public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
    positionWiseFeedForward(first, second, norm, x, into: y)
  }
}

extension MambaBlock {
  /// What the block remembers of a sequence after some positions: constant in size, whatever
  /// the length (the reason a state-space model can follow a history in O(1) per event).
  public struct StepState: Sendable, Equatable {
    /// The last K − 1 inputs of the causal convolution, oldest first, `[(K − 1)·E]`; zeros
    /// stand for the positions before the sequence starts, as the convolution's left padding does.
    public internal(set) var convolutionInputs: [Float]
    /// The selective scan's state h, `[E, N]`.
    public internal(set) var scan: [Float]
    /// The positions consumed so far.
    public internal(set) var length: Int
  }

  /// The state before the first position: an empty convolution window and a zero scan state.
  public func makeStepState() -> StepState {
    StepState(
      convolutionInputs: [Float](repeating: 0, count: (convolutionWidth - 1) * innerDimension),
      scan: [Float](repeating: 0, count: innerDimension * stateSize), length: 0)
  }

  /// Advances `state` by one position: `u` holds the block's input at that position
  /// (``modelDimension`` floats), `output` receives its output there, as the batched forward
  /// computes it: `O = W_out·(scan(silu(conv(X))) ∘ silu(Z))`.
  public func step(_ u: UnsafePointer<Float>, state: inout StepState, into output: UnsafeMutablePointer<Float>) {
    let (e, n, k, r) = (innerDimension, stateSize, convolutionWidth, deltaRank)
    let projected = r + 2 * n
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * e + e + projected + e + e + e * n) { scratch in
      let xz = scratch.baseAddress!
      let convolved = xz + 2 * e
      let dbc = convolved + e
      let dt = dbc + projected
      let y = dt + e
      let decay = y + e
      inputProjection.apply(u, into: xz)
      // The causal convolution: the window's K − 1 earlier inputs, then this one.
      convolutionWeight.value.withUnsafeBufferPointer { wb in
        let w = wb.baseAddress!
        state.convolutionInputs.withUnsafeMutableBufferPointer { windowBuffer in
          let window = windowBuffer.baseAddress
          for c in 0..<e {
            var acc: Float = 0
            for j in 0..<(k - 1) { acc += w[c * k + j] * window![j * e + c] }
            convolved[c] = acc + w[c * k + k - 1] * xz[c]
          }
          if k > 1 {
            window!.update(from: window! + e, count: (k - 2) * e)
            (window! + (k - 2) * e).update(from: xz, count: e)
          }
        }
      }
      if let convolutionBias {
        convolutionBias.value.withUnsafeBufferPointer { b in for c in 0..<e { convolved[c] += b[c] } }
      }
      applyInPlace(.silu, convolved, count: e)
      stateProjection.apply(convolved, into: dbc)
      // Δ = softplus(W_dt·δ + b_dt), the bias added inside the softplus as the scan does.
      deltaProjection.weight.value.withUnsafeBufferPointer { w in
        BLAS.gemv(rows: e, columns: r, a: w.baseAddress!, lda: r, x: dbc, beta: 0, y: dt)
      }
      if let bias = deltaProjection.bias {
        bias.value.withUnsafeBufferPointer { b in for c in 0..<e { dt[c] += b[c] } }
      }
      applyInPlace(.softplus, dt, count: e)
      // exp(Δ·A) with A = −exp(A_log).
      logA.value.withUnsafeBufferPointer { la in decay.update(from: la.baseAddress!, count: e * n) }
      applyInPlace(.exp, decay, count: e * n)
      for c in 0..<e {
        for j in 0..<n { decay[c * n + j] *= -dt[c] }
      }
      applyInPlace(.exp, decay, count: e * n)
      let (b, cProjection) = (dbc + r, dbc + r + n)
      skip.value.withUnsafeBufferPointer { skipBuffer in
        state.scan.withUnsafeMutableBufferPointer { hBuffer in
          let h = hBuffer.baseAddress!
          for c in 0..<e {
            let input = convolved[c]
            let drive = dt[c] * input
            var acc: Float = 0
            for j in 0..<n {
              let i = c * n + j
              h[i] = decay[i] * h[i] + drive * b[j]
              acc += cProjection[j] * h[i]
            }
            y[c] = acc + skipBuffer[c] * input
          }
        }
      }
      // The gate: y ∘ silu(z), z being the second half of the input projection.
      applyInPlace(.silu, xz + e, count: e)
      for c in 0..<e { y[c] *= xz[e + c] }
      outputProjection.apply(y, into: output)
    }
    state.length += 1
  }
}

extension GRU {
  /// Each layer's hidden state after some positions, `layerCount × hiddenSize` floats (layer 0
  /// first); zeros before the first position.
  public struct StepState: Sendable, Equatable {
    /// The hidden states, layer after layer.
    public internal(set) var hidden: [Float]
    /// The positions consumed so far.
    public internal(set) var length: Int
  }

  /// The state before the first position: every hidden state zero, as the batched GRU starts.
  public func makeStepState() -> StepState {
    StepState(hidden: [Float](repeating: 0, count: layerCount * hiddenSize), length: 0)
  }

  /// Advances every layer by one position: `x` holds ``inputSize`` floats; `output` receives the
  /// last layer's new hidden state (``hiddenSize`` floats).
  public func step(_ x: UnsafePointer<Float>, state: inout StepState, into output: UnsafeMutablePointer<Float>) {
    let h = hiddenSize
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 6 * h) { scratch in
      let gi = scratch.baseAddress!
      let gh = gi + 3 * h
      state.hidden.withUnsafeMutableBufferPointer { hiddenBuffer in
        for layer in 0..<layerCount {
          let previous = hiddenBuffer.baseAddress! + layer * h
          let input = layer == 0 ? x : UnsafePointer(previous - h)
          let inputSize = layer == 0 ? self.inputSize : h
          inputWeights[layer].value.withUnsafeBufferPointer { w in
            BLAS.gemv(rows: 3 * h, columns: inputSize, a: w.baseAddress!, lda: inputSize, x: input, beta: 0, y: gi)
          }
          hiddenWeights[layer].value.withUnsafeBufferPointer { w in
            BLAS.gemv(rows: 3 * h, columns: h, a: w.baseAddress!, lda: h, x: previous, beta: 0, y: gh)
          }
          if let inputBiases, let hiddenBiases {
            inputBiases[layer].value.withUnsafeBufferPointer { b in for i in 0..<(3 * h) { gi[i] += b[i] } }
            hiddenBiases[layer].value.withUnsafeBufferPointer { b in for i in 0..<(3 * h) { gh[i] += b[i] } }
          }
          // r and z: σ(gi + gh) over the first 2H; n: tanh(gi_n + r ∘ gh_n).
          for i in 0..<(2 * h) { gi[i] += gh[i] }
          applyInPlace(.sigmoid, gi, count: 2 * h)
          for i in 0..<h { gi[2 * h + i] += gi[i] * gh[2 * h + i] }
          applyInPlace(.tanh, gi + 2 * h, count: h)
          for i in 0..<h {
            let z = gi[h + i]
            previous[i] = (1 - z) * gi[2 * h + i] + z * previous[i]
          }
        }
        output.update(from: hiddenBuffer.baseAddress! + (layerCount - 1) * h, count: h)
      }
    }
    state.length += 1
  }
}

extension MultiHeadAttention {
  /// The keys and values of the positions seen so far: grows by one row per position, so a step
  /// costs time proportional to the history (attention has no constant-size state).
  public struct KeyValueCache: Sendable, Equatable {
    /// Keys, `[length, D]`, oldest first.
    public internal(set) var keys: [Float] = []
    /// Values, `[length, D]`, oldest first.
    public internal(set) var values: [Float] = []
    /// The positions cached.
    public internal(set) var length = 0

    /// An empty cache.
    public init() {}
  }

  /// The sublayer at the newest position in evaluation mode: its query attends to every cached
  /// position and to itself (the causal mask of a history without padding), and
  /// `LN(W_o·attention + b_o + x)` goes to `y`; the position's key and value join `cache`.
  /// `x` and `y` hold the model width and may be the same buffer.
  public func step(_ x: UnsafePointer<Float>, cache: inout KeyValueCache, into y: UnsafeMutablePointer<Float>) {
    let d = dense.outputSize
    let size = d / heads
    let scale = 1 / Float(size).squareRoot()
    cache.keys.append(contentsOf: repeatElement(0, count: d))
    cache.values.append(contentsOf: repeatElement(0, count: d))
    let length = cache.length + 1
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * d + length) { scratch in
      let q = scratch.baseAddress!
      let joined = q + d
      let sum = joined + d
      let weights = sum + d
      query.apply(x, into: q)
      cache.keys.withUnsafeMutableBufferPointer { keyBuffer in
        cache.values.withUnsafeMutableBufferPointer { valueBuffer in
          let (keys, values) = (keyBuffer.baseAddress!, valueBuffer.baseAddress!)
          key.apply(x, into: keys + (length - 1) * d)
          value.apply(x, into: values + (length - 1) * d)
          for head in 0..<heads {
            let offset = head * size
            var largest = -Float.infinity
            for j in 0..<length {
              var s: Float = 0
              for i in 0..<size { s += q[offset + i] * keys[j * d + offset + i] }
              weights[j] = s * scale
              largest = Swift.max(largest, weights[j])
            }
            var total: Float = 0
            for j in 0..<length {
              weights[j] -= largest
            }
            applyInPlace(.exp, weights, count: length)
            for j in 0..<length { total += weights[j] }
            for i in 0..<size { joined[offset + i] = 0 }
            for j in 0..<length {
              let p = weights[j] / total
              for i in 0..<size { joined[offset + i] += p * values[j * d + offset + i] }
            }
          }
        }
      }
      dense.apply(joined, into: sum)
      for i in 0..<d { sum[i] += x[i] }
      norm.apply(sum, into: y)
    }
    cache.length = length
  }
}
