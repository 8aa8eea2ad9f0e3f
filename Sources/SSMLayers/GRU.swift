import CKernels
import SSMAutograd
import SSMKernels
import SSMTensor

/// A single-direction GRU over `[B, L, input]` sequences with PyTorch's gate order (r, z, n) and
/// parameter names `weight_ih_l{k}`, `weight_hh_l{k}` (and `bias_ih_l{k}`, `bias_hh_l{k}`):
///
///     r_t = σ(W_ir·x_t + b_ir + W_hr·h_{t−1} + b_hr)
///     z_t = σ(W_iz·x_t + b_iz + W_hz·h_{t−1} + b_hz)
///     n_t = tanh(W_in·x_t + b_in + r_t ∘ (W_hn·h_{t−1} + b_hn))
///     h_t = (1 − z_t) ∘ n_t + z_t ∘ h_{t−1},     h_{−1} = 0
///
/// The input projections of all steps are one matrix product; the recurrence over time is one
/// tape node with a hand-written backward through time (Docs/Models.md §4.2).
public final class GRU: Layer {
  /// The width of each input step, the last extent of `[B, L, input]`.
  public let inputSize: Int
  /// The width H of the hidden state and of the output `[B, L, H]`.
  public let hiddenSize: Int
  /// The number of stacked layers; each after the first reads the previous layer's hidden states.
  public let layerCount: Int
  /// `weight_ih_l{k}` for each layer `k`: `[3H, input]` for the first, `[3H, H]` after; rows in gate
  /// order r, z, n.
  public let inputWeights: [Parameter]
  /// `weight_hh_l{k}` for each layer `k`: `[3H, H]`, rows in gate order r, z, n.
  public let hiddenWeights: [Parameter]
  /// `bias_ih_l{k}` for each layer, `[3H]` each, or `nil` for a GRU built with `bias: false`.
  public let inputBiases: [Parameter]?
  /// `bias_hh_l{k}` for each layer, `[3H]` each (`b_hn` sits inside the reset product), or `nil` for a
  /// GRU built with `bias: false`.
  public let hiddenBiases: [Parameter]?

  /// PyTorch's initialisation: every weight and bias `U(±1/√hidden)`.
  public init(
    inputSize: Int, hiddenSize: Int, layers: Int = 1, bias: Bool = true, using generator: inout some RandomNumberGenerator
  ) {
    (self.inputSize, self.hiddenSize, self.layerCount) = (inputSize, hiddenSize, layers)
    let bound = 1 / Float(hiddenSize).squareRoot()
    func u(_ shape: Shape) -> Parameter {
      Parameter(Tensor.randomUniform(shape, lowerBound: -bound, upperBound: bound, using: &generator))
    }
    var wi = [Parameter]()
    var wh = [Parameter]()
    var bi = [Parameter]()
    var bh = [Parameter]()
    for k in 0..<layers {
      wi.append(u([3 * hiddenSize, k == 0 ? inputSize : hiddenSize]))
      wh.append(u([3 * hiddenSize, hiddenSize]))
      if bias {
        bi.append(u([3 * hiddenSize]))
        bh.append(u([3 * hiddenSize]))
      }
    }
    (inputWeights, hiddenWeights) = (wi, wh)
    (inputBiases, hiddenBiases) = bias ? (bi, bh) : (nil, nil)
  }

  /// For each layer `k` in turn, `weight_ih_l{k}` and `weight_hh_l{k}`, then `bias_ih_l{k}` and
  /// `bias_hh_l{k}` if the GRU has biases, as in PyTorch's `nn.GRU`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    var result: [(path: String, parameter: Parameter)] = []
    for k in 0..<layerCount {
      result.append(("weight_ih_l\(k)", inputWeights[k]))
      result.append(("weight_hh_l\(k)", hiddenWeights[k]))
      if let inputBiases, let hiddenBiases {
        result.append(("bias_ih_l\(k)", inputBiases[k]))
        result.append(("bias_hh_l\(k)", hiddenBiases[k]))
      }
    }
    return result
  }

  /// All hidden states of the last layer, shape `[B, L, hidden]`.
  ///
  /// With `lengths` (one per row, each at most `L`), row `b` is a history of `lengths[b]` items
  /// followed by padding, and each step runs only the rows it is inside of (the rows sorted
  /// longest first, as PyTorch's packed sequences are): the states within each length are those
  /// of the full recurrence, the states past it are 0, and no work goes to padding.
  public func callAsFunction(_ x: Variable, lengths: [Int]? = nil) -> Variable {
    guard let lengths else { return layers(x, lengths: nil) }
    precondition(x.shape.rank == 3 && lengths.count == x.shape[0], "GRU: \(lengths.count) lengths for input \(x.shape)")
    let order = longestFirst(lengths)
    if order == Array(lengths.indices) { return layers(x, lengths: lengths) }
    func rows(_ v: Variable, _ indices: [Int]) -> Variable {
      let (b, l, width) = (v.shape[0], v.shape[1], v.shape[2])
      return v.reshaped(to: [b, l * width]).gatherRows(IndexTensor(indices)).reshaped(to: [b, l, width])
    }
    var inverse = [Int](repeating: 0, count: order.count)
    for (position, row) in order.enumerated() { inverse[row] = position }
    return rows(layers(rows(x, order), lengths: order.map { lengths[$0] }), inverse)
  }

  /// All hidden states of the last layer for packed time-major input: `x` is `[T, input]`, the
  /// rows of `packing`'s step 0, then of step 1, and so on (``TimeMajorPacking``); returns
  /// `[T, hidden]` in the same order. Nothing is computed or stored for padding, and the
  /// states are those of the padded GRU with the histories' lengths.
  public func callAsFunction(_ x: Variable, packing: TimeMajorPacking) -> Variable {
    precondition(
      x.shape.rank == 2 && x.shape[0] == packing.tokenCount,
      "GRU: packed input \(x.shape) must be [\(packing.tokenCount), input]")
    return layers(x, lengths: nil, stepSizes: packing.stepSizes)
  }

  private func layers(_ x: Variable, lengths: [Int]?, stepSizes: [Int]? = nil) -> Variable {
    var h = x
    for k in 0..<layerCount {
      var projected = Variable.matmul(h, inputWeights[k].variable, transposeB: true)
      if let inputBiases { projected = projected + inputBiases[k].variable }
      h = Variable.gruRecurrence(
        inputProjection: projected, hiddenWeight: hiddenWeights[k].variable, hiddenBias: hiddenBiases?[k].variable,
        lengths: lengths, stepSizes: stepSizes)
    }
    return h
  }
}

/// PyTorch's packed-sequence layout of a batch of histories: sorted longest first, step `t`
/// holds the `stepSizes[t]` histories longer than `t`, and the tokens lie step after step (all
/// first items, then all second items, …), so a recurrence reads each step's rows contiguously
/// and no padding is stored.
public struct TimeMajorPacking: Sendable, Equatable {
  /// The number of histories at each step, non-increasing.
  public let stepSizes: [Int]
  /// The index of each step's first token.
  public let stepStarts: [Int]
  /// The histories' lengths, in the batch's order.
  public let lengths: [Int]
  /// Each history's place in the longest-first order (ties keep the batch's order).
  public let ranks: [Int]
  /// T, the number of tokens.
  public var tokenCount: Int { lengths.reduce(0, +) }

  /// The histories in the longest-first order: `order[rank]` is the batch row of rank `rank`.
  let order: [Int]

  /// The packing of histories of `lengths` (each at least 1).
  public init(lengths: [Int]) {
    precondition(!lengths.isEmpty && lengths.allSatisfy { $0 >= 1 }, "TimeMajorPacking: lengths \(lengths) must be ≥ 1")
    let order = longestFirst(lengths)
    var ranks = [Int](repeating: 0, count: lengths.count)
    for (rank, row) in order.enumerated() { ranks[row] = rank }
    var sizes = [Int]()
    for t in 0..<lengths[order[0]] {
      var size = sizes.last ?? lengths.count
      while size > 0 && lengths[order[size - 1]] <= t { size -= 1 }
      sizes.append(size)
    }
    (stepSizes, stepStarts, self.lengths, self.ranks, self.order) = (sizes, startOffsets(sizes), lengths, ranks, order)
  }

  /// The token of history `row`'s item at `step` (`step < lengths[row]`).
  public func token(row: Int, step: Int) -> Int { stepStarts[step] + ranks[row] }

  /// For each token in this packing's order, its index when the histories lie end to end in
  /// the batch's order (each history's items oldest first).
  public func timeMajorOrder() -> [Int] { sources(rowStarts: startOffsets(lengths)) }

  /// The packed values of a row-major `[B, width]` array of per-position values (an item batch).
  public func packed<Element>(_ values: [Element], width: Int) -> [Element] {
    sources(rowStarts: lengths.indices.map { $0 * width }).map { values[$0] }
  }

  /// For each token, `rowStarts[row] + step` of the history item it holds.
  private func sources(rowStarts: [Int]) -> [Int] {
    stepSizes.enumerated().flatMap { t, size in (0..<size).map { rowStarts[order[$0]] + t } }
  }
}

/// Batch rows sorted longest first, ties in batch order (PyTorch's packed-sequence order).
func longestFirst(_ lengths: [Int]) -> [Int] {
  lengths.indices.sorted { lengths[$0] > lengths[$1] || (lengths[$0] == lengths[$1] && $0 < $1) }
}

/// Where each of consecutive runs of these lengths starts.
func startOffsets(_ lengths: [Int]) -> [Int] {
  var starts = [Int]()
  starts.reserveCapacity(lengths.count)
  var total = 0
  for length in lengths {
    starts.append(total)
    total += length
  }
  return starts
}

extension Variable {
  /// The GRU recurrence given the input projections `[B, L, 3H]` (gate order r, z, n, input
  /// biases included), `W_hh` `[3H, H]` and optionally `b_hh` `[3H]`; returns `h` `[B, L, H]`.
  ///
  /// One tape node over ``GRURecurrence`` (SSMKernels): when recording it keeps r, z, n,
  /// `W_hn·h + b_hn` and h for every step (5·B·L·H floats); without a tape only h. `lengths`,
  /// longest first, limits each row to its history (``GRURecurrence/Inputs/lengths``);
  /// `stepSizes` takes packed time-major projections `[T, 3H]` instead and returns `[T, H]`
  /// (``GRURecurrence/Inputs/stepSizes``).
  public static func gruRecurrence(
    inputProjection: Variable, hiddenWeight: Variable, hiddenBias: Variable?, lengths: [Int]? = nil,
    stepSizes: [Int]? = nil
  ) -> Variable {
    let inputs =
      if let stepSizes {
        GRURecurrence.Inputs(
          packedInputProjection: inputProjection.value, stepSizes: stepSizes, hiddenWeight: hiddenWeight.value,
          hiddenBias: hiddenBias?.value)
      } else {
        GRURecurrence.Inputs(
          inputProjection: inputProjection.value, hiddenWeight: hiddenWeight.value, hiddenBias: hiddenBias?.value,
          lengths: lengths)
      }
    let recording =
      GradientMode.isEnabled
      && (inputProjection.requiresGradient || hiddenWeight.requiresGradient || (hiddenBias?.requiresGradient ?? false))
    let (output, saved) = GRURecurrence.forward(inputs, saveForBackward: recording)
    var tapeInputs = [inputProjection, hiddenWeight]
    if let hiddenBias { tapeInputs.append(hiddenBias) }
    return record(value: output, inputs: tapeInputs) {
      { g in
        let grads = GRURecurrence.backward(outputGradient: g, inputs, saved: saved!)
        return [grads.inputProjection, grads.hiddenWeight] + (grads.hiddenBias.map { [$0] } ?? [])
      }
    }
  }
}

/// A dense 1-D convolution over time with symmetric zero padding ("same" length for odd
/// kernels), PyTorch `Conv1d(C_in, C_out, K, padding: (K−1)/2)` on `[B, L, C]` inputs: the
/// K shifted copies of the input are joined along channels and multiplied by the weight in one
/// product. Parameter names `weight` `[C_out, C_in, K]` and `bias`.
public final class Conv1d: Layer {
  /// The kernel, shape `[C_out, C_in, K]` (PyTorch `weight`).
  public let weight: Parameter
  /// The bias, shape `[C_out]` (PyTorch `bias`), or `nil` for a layer built with `bias: false`.
  public let bias: Parameter?
  /// The kernel width K, odd; the input is zero-padded by (K − 1)/2 steps on each side.
  public let kernelSize: Int

  /// PyTorch's default initialisation: `U(±1/√(C_in·K))`.
  public init(
    inputChannels: Int, outputChannels: Int, kernelSize: Int, bias: Bool = true, using generator: inout some RandomNumberGenerator
  ) {
    precondition(kernelSize % 2 == 1, "Conv1d here pads symmetrically and needs an odd kernel, got \(kernelSize)")
    let bound = 1 / Float(inputChannels * kernelSize).squareRoot()
    weight = Parameter(
      Tensor.randomUniform([outputChannels, inputChannels, kernelSize], lowerBound: -bound, upperBound: bound, using: &generator))
    self.bias =
      bias ? Parameter(Tensor.randomUniform([outputChannels], lowerBound: -bound, upperBound: bound, using: &generator)) : nil
    self.kernelSize = kernelSize
  }

  /// `weight` `[C_out, C_in, K]` and, unless built with `bias: false`, `bias`, as in PyTorch's `nn.Conv1d`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
  }

  /// The convolution of packed histories: `x` is `[T, C_in]`, histories of `segmentLengths`
  /// end to end, and each is zero-padded at its own ends, as in a batch of its own. Returns
  /// `[T, C_out]`.
  public func callAsFunction(_ x: Variable, segmentLengths: [Int]) -> Variable {
    let (tokens, inChannels) = (x.shape[0], x.shape[1])
    precondition(x.shape.rank == 2 && segmentLengths.reduce(0, +) == tokens, "Conv1d: \(segmentLengths) for packed \(x.shape)")
    let pad = kernelSize / 2
    // Row `tokens` is zero: the taps that fall outside their history read it.
    let source = Variable.concatenate([x, Variable(Tensor(zeros: [1, inChannels]))], alongAxis: 0)
    var taps = [[Int]](repeating: [], count: kernelSize)
    var start = 0
    for length in segmentLengths {
      for t in 0..<length {
        for k in 0..<kernelSize {
          let s = t + k - pad
          taps[k].append(s >= 0 && s < length ? start + s : tokens)
        }
      }
      start += length
    }
    let columns = Variable.concatenate(taps.map { source.gatherRows(IndexTensor($0)) }, alongAxis: 1)
    let w = weight.variable.permuted([0, 2, 1]).reshaped(to: [weight.shape[0], kernelSize * inChannels])
    let y = Variable.matmul(columns, w, transposeB: true)
    return bias.map { y + $0.variable } ?? y
  }

  /// - Parameter x: `[B, L, C_in]`. - Returns: `[B, L, C_out]`.
  public func callAsFunction(_ x: Variable) -> Variable {
    let (length, inChannels) = (x.shape[1], x.shape[2])
    let pad = kernelSize / 2
    let padded = x.padded(alongAxis: 1, before: pad, after: pad)
    let columns = Variable.concatenate((0..<kernelSize).map { padded.slice(alongAxis: 1, $0..<($0 + length)) }, alongAxis: 2)
    // [C_out, C_in, K] → [C_out, K, C_in] → [C_out, K·C_in], matching the column order.
    let w = weight.variable.permuted([0, 2, 1]).reshaped(to: [weight.shape[0], kernelSize * inChannels])
    let y = Variable.matmul(columns, w, transposeB: true)
    return bias.map { y + $0.variable } ?? y
  }
}
