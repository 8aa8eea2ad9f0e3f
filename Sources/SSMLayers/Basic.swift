import SSMAutograd
import SSMKernels
import SSMTensor

/// A fully connected layer, `y = x·Wᵀ + b`, with `W` stored `[out, in]` as PyTorch does.
public final class Linear: Layer {
  /// The weight `W`, shape `[out, in]` (PyTorch `weight`).
  public let weight: Parameter
  /// The bias `b`, shape `[out]` (PyTorch `bias`), or `nil` for a layer built with `bias: false`.
  public let bias: Parameter?

  /// PyTorch's default initialisation: weight and bias `U(±1/√in)`.
  public init(inputSize: Int, outputSize: Int, bias: Bool = true, using generator: inout some RandomNumberGenerator) {
    let bound = 1 / Float(inputSize).squareRoot()
    weight = Parameter(
      Tensor.randomUniform([outputSize, inputSize], lowerBound: -bound, upperBound: bound, using: &generator),
      role: .linearWeight)
    self.bias =
      bias
      ? Parameter(Tensor.randomUniform([outputSize], lowerBound: -bound, upperBound: bound, using: &generator), role: .linearBias)
      : nil
  }

  /// `weight` `[out, in]` and, unless built with `bias: false`, `bias`, as in PyTorch's `nn.Linear`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
  }

  /// Applies the layer to the last axis of `x`.
  public func callAsFunction(_ x: Variable) -> Variable {
    // Unrecorded (evaluation, serving): the bias written first and the product added onto it.
    if !GradientMode.isEnabled, let bias, x.shape.rank >= 2 {
      return Variable(Tensor.linear(x.value, weight: weight.value, bias: bias.value))
    }
    let y = Variable.matmul(x, weight.variable, transposeB: true)
    return bias.map { y + $0.variable } ?? y
  }

  /// The outputs `outputs` of ``callAsFunction(_:)`` only (a range of the last axis), from the
  /// weight's rows and the bias entries of that range: the same values and gradients as slicing
  /// the full output, without computing or copying the rest.
  public func callAsFunction(_ x: Variable, outputs: Range<Int>) -> Variable {
    let y = Variable.matmul(x, weight.variable.slice(alongAxis: 0, outputs), transposeB: true)
    return bias.map { y + $0.variable.slice(alongAxis: 0, outputs) } ?? y
  }
}

/// A lookup table of row vectors. With a padding index, that row receives no gradient through
/// the lookup (PyTorch's `padding_idx`, Docs/Models.md §0.3); it still does through any other use, such as
/// the tied output layer.
public final class Embedding: Layer {
  /// The table, shape `[count, dimension]` (PyTorch `weight`); row `i` is the vector of index `i`.
  public let weight: Parameter
  /// The row that gets no gradient through the lookup and starts at zero (PyTorch `padding_idx`),
  /// or `nil` for none.
  public let paddingIndex: Int?

  /// PyTorch's default initialisation: N(0, 1), padding row zeroed.
  public init(count: Int, dimension: Int, paddingIndex: Int? = nil, using generator: inout some RandomNumberGenerator) {
    var table = Tensor.randomNormal([count, dimension], using: &generator)
    if let paddingIndex { for d in 0..<dimension { table[paddingIndex, d] = 0 } }
    weight = Parameter(table, role: .embedding)
    self.paddingIndex = paddingIndex
  }

  /// `weight`, the whole `[count, dimension]` table, as in PyTorch's `nn.Embedding`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] { [("weight", weight)] }

  /// The rows of `indices`: shape `indices.shape + [dimension]`.
  public func callAsFunction(_ indices: IndexTensor) -> Variable {
    weight.variable.gatherRows(indices, paddingIndex: paddingIndex)
  }
}

/// Layer normalisation over the last axis (one fused op; γ = 1, β = 0 initially).
public final class LayerNorm: Layer {
  /// The scale γ, shape `[dimension]` (PyTorch `weight`), initially ones.
  public let weight: Parameter
  /// The shift β, shape `[dimension]` (PyTorch `bias`), initially zeros.
  public let bias: Parameter
  /// The constant added to the variance before the square root (default 1e-12, the recommenders' value).
  public let epsilon: Float

  /// A norm over vectors of width `dimension`, with γ = 1 and β = 0.
  public init(dimension: Int, epsilon: Float = 1e-12) {
    weight = Parameter(Tensor(ones: [dimension]), role: .normScale)
    bias = Parameter(Tensor(zeros: [dimension]), role: .normShift)
    self.epsilon = epsilon
  }

  /// `weight` (γ) and `bias` (β), as in PyTorch's `nn.LayerNorm`.
  public func namedParameters() -> [(path: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }

  /// `(x − μ)/√(σ² + eps) ∘ γ + β` over the last axis of `x` (biased variance); same shape as `x`.
  public func callAsFunction(_ x: Variable) -> Variable {
    x.layerNorm(gamma: weight.variable, beta: bias.variable, epsilon: epsilon)
  }
}

/// Mamba-2's gated RMS normalisation with the gate applied first (`norm_before_gate = false`):
/// `v = y ∘ silu(z)`, `out = v / √(mean(v²) + eps) ∘ w` over the last axis.
public final class GatedRMSNorm: Layer {
  /// The scale `w`, shape `[dimension]` (PyTorch `weight`, `norm.weight` in ``Mamba2Block``), initially ones.
  public let weight: Parameter
  /// The constant added to `mean(v²)` before the square root (default 1e-5, Mamba-2's value).
  public let epsilon: Float

  /// A norm over vectors of width `dimension`, with `w` = 1.
  public init(dimension: Int, epsilon: Float = 1e-5) {
    weight = Parameter(Tensor(ones: [dimension]), role: .other)
    self.epsilon = epsilon
  }

  /// `weight` (the scale `w`) alone: the norm has no shift.
  public func namedParameters() -> [(path: String, parameter: Parameter)] { [("weight", weight)] }

  /// `v / √(mean(v²) + eps) ∘ w` with `v = y ∘ silu(z)`; `y`, the gate `z` and the result share the
  /// shape `[..., dimension]`.
  public func callAsFunction(_ y: Variable, gate z: Variable) -> Variable {
    let v = y * z.silu()
    let scale = (v.squared().mean(alongAxis: -1, keepingDimension: true) + epsilon).rsqrt()
    return v * scale * weight.variable
  }
}

/// Inverted dropout, active only in a training context.
public struct Dropout {
  /// The probability `p` in [0, 1) of zeroing an element in training; kept elements are scaled by
  /// `1/(1 − p)`.
  public let probability: Float

  /// A dropout with drop probability `probability`; traps unless it is in [0, 1).
  public init(probability: Float) {
    precondition(probability >= 0 && probability < 1, "Dropout probability \(probability) is not in [0, 1)")
    self.probability = probability
  }

  /// In a training context, `x` with each element zeroed with probability `p` (mask keyed by one draw
  /// from `context.generator`) and the rest scaled by `1/(1 − p)`; otherwise `x` unchanged.
  public func callAsFunction(_ x: Variable, context: inout ForwardContext) -> Variable {
    x.dropout(probability: probability, training: context.isTraining, using: &context.generator)
  }
}

extension Variable {
  /// The rows at `positions[b]` of each sequence of a `[B, L, D]` tensor: shape `[B, D]` (RecBole's
  /// `gather_indexes`, used to read the last valid position `ℓ_b − 1`).
  public func gatherTimeSteps(_ positions: [Int]) -> Variable {
    precondition(shape.rank == 3 && positions.count == shape[0], "gatherTimeSteps: \(positions.count) positions for \(shape)")
    let (b, l, d) = (shape[0], shape[1], shape[2])
    precondition(positions.allSatisfy { $0 >= 0 && $0 < l }, "gatherTimeSteps: a position is outside 0..<\(l)")
    let rows = IndexTensor(shape: [b], values: positions.enumerated().map { $0.offset * l + $0.element })
    return reshaped(to: [b * l, d]).gatherRows(rows)
  }
}
