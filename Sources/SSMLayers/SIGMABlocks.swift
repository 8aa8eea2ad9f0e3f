import SSMAutograd
import SSMKernels
import SSMTensor

/// How SIGMA's backward branch reorders the sequence.
public enum FlipStrategy: Codable, Sendable, Equatable {
  /// The official code: reverse the first `count` slots of the padded window (default 45).
  case prefix(count: Int)
  /// The paper: per sequence, reverse all but the last `keep` items (r = 5 on Beauty).
  case keepingLast(keep: Int)
}

/// SIGMA's Dense Selective Gate (DS Gate, official form, Docs/Models.md §4.2): for a direction's input
/// `h`, `g = Drop(W_si·silu(h) + b_si + W_sg·σ(s) + b_sg)` where `s = h` for the forward
/// direction and the forward gate's output for the flipped one. Parameter names
/// `selective_gate_si.1`, `selective_gate_sig.1`.
public final class DenseSelectiveGate: Layer {
  /// `selective_gate_si.1` (`W_si`, `b_si`): the Linear `[D, D]` applied to `silu(h)`.
  public let siluBranch: Linear
  /// `selective_gate_sig.1` (`W_sg`, `b_sg`): the Linear `[D, D]` applied to `σ(s)`.
  public let sigmoidBranch: Linear
  /// The dropout on the gate's output (officially a fixed 0.2, independent of the model's dropout).
  public let dropout: Dropout

  /// PyTorch's default initialisation for both Linears.
  ///
  /// - Parameters:
  ///   - dimension: the width D of the gated direction.
  ///   - dropout: the gate's dropout probability (default 0.2, the official value).
  ///   - generator: the source of the initial weights.
  public init(dimension: Int, dropout: Float = 0.2, using generator: inout some RandomNumberGenerator) {
    siluBranch = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    sigmoidBranch = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    self.dropout = Dropout(probability: dropout)
  }

  /// `selective_gate_sig.1.*` and `selective_gate_si.1.*` (weight and bias each), the official SIGMA names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("selective_gate_sig.1", sigmoidBranch.namedParameters())
      + prefixed("selective_gate_si.1", siluBranch.namedParameters())
  }

  /// - Parameters:
  ///   - h: the direction's input, fed to the SiLU branch.
  ///   - sigmoidInput: the input of the sigmoid branch.
  ///   - context: training mode and the dropout generator.
  public func callAsFunction(_ h: Variable, sigmoidInput: Variable, context: inout ForwardContext) -> Variable {
    dropout(siluBranch(h.silu()) + sigmoidBranch(sigmoidInput.sigmoid()), context: &context)
  }
}

/// SIGMA's Feature-Extract GRU (FE-GRU, official form): a kernel-3 "same" convolution over time
/// followed by a GRU without biases. Parameter names `conv1d`, `gru`.
public final class FeatureExtractionGRU: Layer {
  /// `conv1d`: the "same" convolution over time, weight `[D, D, K]` with bias, applied first.
  public let convolution: Conv1d
  /// `gru`: a one-layer GRU D → D over the convolved sequence.
  public let gru: GRU

  /// PyTorch's default initialisation for both modules.
  ///
  /// - Parameters:
  ///   - dimension: the width D of the input, the convolution and the hidden state.
  ///   - kernelSize: the convolution's odd width (default 3, the official value).
  ///   - gruBias: whether the GRU has biases (default `false`, as officially; the paper's GRU has them).
  ///   - generator: the source of the initial weights.
  public init(dimension: Int, kernelSize: Int = 3, gruBias: Bool = false, using generator: inout some RandomNumberGenerator) {
    gru = GRU(inputSize: dimension, hiddenSize: dimension, bias: gruBias, using: &generator)
    convolution = Conv1d(inputChannels: dimension, outputChannels: dimension, kernelSize: kernelSize, using: &generator)
  }

  /// `gru.weight_ih_l0` and `gru.weight_hh_l0` (plus biases with `gruBias`), then `conv1d.weight` and
  /// `conv1d.bias`, the official SIGMA names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("gru", gru.namedParameters()) + prefixed("conv1d", convolution.namedParameters())
  }

  /// All hidden states of the GRU over the convolved input `x` `[B, L, D]`: shape `[B, L, D]`.
  public func callAsFunction(_ x: Variable) -> Variable { gru(convolution(x)) }

  /// The branch on a packed row `[1, T, D]` of histories of `lengths` end to end: the
  /// convolution sees zeros past each history's ends and the GRU restarts at each history, as
  /// for each history in a batch of its own.
  public func callAsFunction(packed x: Variable, lengths: [Int]) -> Variable {
    let (tokens, d) = (x.shape[1], x.shape[2])
    let packing = TimeMajorPacking(lengths: lengths)
    let order = packing.timeMajorOrder()
    var inverse = [Int](repeating: 0, count: order.count)
    for (position, token) in order.enumerated() { inverse[token] = position }
    let convolved = convolution(x.reshaped(to: [tokens, d]), segmentLengths: lengths)
    return gru(convolved.gatherRows(IndexTensor(order)), packing: packing).gatherRows(IndexTensor(inverse))
      .reshaped(to: [1, tokens, d])
  }
}

/// SIGMA's mixing layer (official form, Docs/Models.md §4.2): three raw, trainable weights combine the
/// gated forward branch, the gated flipped branch and the FE-GRU branch, then a Linear projects
/// the sum. Parameter names `combining_weights` (order: GRU, flipped, forward; initially
/// `[0.1, 0.1, 0.8]`, used without normalisation) and `projection`.
public final class BranchMixing: Layer {
  /// `combining_weights` `c`, shape `[3]`: raw trainable scalars for the GRU, flipped and forward
  /// branches, in that order.
  public let combiningWeights: Parameter
  /// `projection`: the Linear `[D, D]` applied to the weighted sum.
  public let projection: Linear

  /// Mixing weights `c = initialWeights`; PyTorch's default initialisation for the projection.
  ///
  /// - Parameters:
  ///   - dimension: the width D of the branches.
  ///   - initialWeights: three values, in the order GRU, flipped, forward (default `[0.1, 0.1, 0.8]`,
  ///     the official values).
  ///   - generator: the source of the initial weights.
  public init(dimension: Int, initialWeights: [Float] = [0.1, 0.1, 0.8], using generator: inout some RandomNumberGenerator) {
    precondition(initialWeights.count == 3, "BranchMixing needs three initial weights")
    combiningWeights = Parameter(Tensor(initialWeights))
    projection = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
  }

  /// `combining_weights` `[3]` and `projection.*`, the official SIGMA names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    [("combining_weights", combiningWeights)] + prefixed("projection", projection.namedParameters())
  }

  /// `projection(c₂·forward + c₁·flipped + c₀·features)`.
  public func callAsFunction(forward: Variable, flipped: Variable, features: Variable) -> Variable {
    let c = combiningWeights.variable
    return projection(
      forward * c.slice(alongAxis: 0, 2..<3) + flipped * c.slice(alongAxis: 0, 1..<2) + features * c.slice(alongAxis: 0, 0..<1))
  }
}

/// SIGMA's G-Mamba block (Docs/Models.md §4.2, official code): Partially Flipped Mamba (one Mamba module
/// on the input and on its partial flip, the flipped output not flipped back), the DS gate on
/// each direction, the FE-GRU branch, the three raw mixing weights and the projection.
/// Parameter names as `gmamba.*` of the official `state_dict`.
public final class PartiallyFlippedMambaBlock: Layer {
  /// `mamba`: the one Mamba-1 block read over both the input and its partial flip.
  public let mamba: MambaBlock
  /// `dense1`: the Linear `[D, D]` giving the forward gate input `h1 = dense1(x) + x`.
  public let dense1: Linear
  /// `dense2`: the Linear `[D, D]` giving the flipped gate input `h2 = dense2(x_f) + x_f`.
  public let dense2: Linear
  /// The DS gate (`selective_gate_si.1`, `selective_gate_sig.1`), its Linears shared by both directions.
  public let gate: DenseSelectiveGate
  /// The FE-GRU branch over the unflipped input (`conv1d`, `gru`).
  public let featureExtractor: FeatureExtractionGRU
  /// The three mixing weights and the output projection (`combining_weights`, `projection`).
  public let mixing: BranchMixing
  /// How the backward branch reorders the input: the official fixed prefix or the paper's
  /// per-sequence flip.
  public let flip: FlipStrategy

  /// Each submodule initialised by its own initialiser (the Mamba block's reference one, PyTorch
  /// defaults elsewhere); mixing weights `[0.1, 0.1, 0.8]`.
  ///
  /// - Parameters:
  ///   - dimension: the model width D.
  ///   - stateSize: the Mamba state size N (32 officially).
  ///   - convolutionWidth: the Mamba convolution width K (4 officially).
  ///   - expansion: the Mamba expansion, E = expansion·D (2 officially).
  ///   - flip: how the backward branch reorders the input.
  ///   - gateDropout: the DS gate's dropout probability (0.2 officially).
  ///   - featureKernelSize: the FE-GRU convolution's odd width (3 officially).
  ///   - gruBias: whether the FE-GRU's GRU has biases (`false` officially).
  ///   - generator: the source of the initial weights.
  public init(
    dimension: Int, stateSize: Int, convolutionWidth: Int, expansion: Int, flip: FlipStrategy, gateDropout: Float,
    featureKernelSize: Int, gruBias: Bool, using generator: inout some RandomNumberGenerator
  ) {
    dense1 = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    dense2 = Linear(inputSize: dimension, outputSize: dimension, using: &generator)
    mixing = BranchMixing(dimension: dimension, using: &generator)
    mamba = MambaBlock(
      modelDimension: dimension, stateSize: stateSize, convolutionWidth: convolutionWidth, expansion: expansion, using: &generator
    )
    featureExtractor = FeatureExtractionGRU(
      dimension: dimension, kernelSize: featureKernelSize, gruBias: gruBias, using: &generator)
    gate = DenseSelectiveGate(dimension: dimension, dropout: gateDropout, using: &generator)
    self.flip = flip
  }

  /// The official `gmamba.*` keys without that prefix: `combining_weights`, `projection.*`, `dense1.*`,
  /// `dense2.*`, `mamba.*`, the FE-GRU's `gru.*` and `conv1d.*`, and the DS gate's `selective_gate_*`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    mixing.namedParameters() + prefixed("dense1", dense1.namedParameters()) + prefixed("dense2", dense2.namedParameters())
      + prefixed("mamba", mamba.namedParameters()) + featureExtractor.namedParameters() + gate.namedParameters()
  }

  /// - Parameters:
  ///   - x: the block input `[B, L, D]`, right-padded.
  ///   - lengths: the sequence lengths (used by the per-sequence flip).
  ///   - context: training mode and the dropout generator.
  public func callAsFunction(_ x: Variable, lengths: [Int], context: inout ForwardContext) -> Variable {
    let flipped: Variable
    switch flip {
    case .prefix(let count): flipped = x.partialFlip(prefix: count)
    case .keepingLast(let keep): flipped = x.partialFlip(keepingLast: keep, lengths: lengths)
    }
    let h1 = dense1(x) + x
    let h2 = dense2(flipped) + flipped
    // One Mamba pass over both directions stacked along the batch: the same weights, half the
    // operations, products twice as tall.
    let directions = mamba(Variable.concatenate([x, flipped], alongAxis: 0)).split(alongAxis: 0, sizes: [x.shape[0], x.shape[0]])
    let (forward, backward) = (directions[0], directions[1])
    let g1 = gate(h1, sigmoidInput: h1, context: &context)
    let g2 = gate(h2, sigmoidInput: g1, context: &context)
    return mixing(forward: forward * (g1 + 1), flipped: backward * (g2 + 1), features: featureExtractor(x))
  }

  /// The block on a packed row `[1, T, D]`: the histories of `lengths` end to end,
  /// `sequenceIndex` `[1, T]` naming each token's history. Each history is flipped within
  /// itself, the Mamba block's convolution and scan restart at each history (both directions
  /// in one row of 2T tokens), and the FE-GRU sees each history alone, so every history's
  /// output is what a batch of its own gives.
  /// - Precondition: the paper's `.keepingLast` flip (the official prefix flip reads the padded
  ///   window and has no packed form).
  public func callAsFunction(
    packed x: Variable, lengths: [Int], sequenceIndex: IndexTensor, context: inout ForwardContext
  ) -> Variable {
    guard case .keepingLast(let keep) = flip else {
      preconditionFailure("PartiallyFlippedMambaBlock: the official prefix flip reads the padded window; pad its batches")
    }
    let tokens = x.shape[1]
    let segments = lengths.flatMap { l in
      let n = Swift.max(l - keep, 0)
      return (n > 0 ? [n] : []) + Array(repeating: 1, count: l - n)
    }
    let flipped = x.flippingSegments([segments])
    let h1 = dense1(x) + x
    let h2 = dense2(flipped) + flipped
    let ids = sequenceIndex.values
    let bothIndex = IndexTensor(shape: [1, 2 * tokens], values: ids + ids.map { $0 + Int32(lengths.count) })
    let directions = mamba(Variable.concatenate([x, flipped], alongAxis: 1), sequenceIndex: bothIndex)
      .split(alongAxis: 1, sizes: [tokens, tokens])
    let (forward, backward) = (directions[0], directions[1])
    let g1 = gate(h1, sigmoidInput: h1, context: &context)
    let g2 = gate(h2, sigmoidInput: g1, context: &context)
    return mixing(
      forward: forward * (g1 + 1), flipped: backward * (g2 + 1), features: featureExtractor(packed: x, lengths: lengths))
  }
}
