import SSMAutograd
import SSMKernels
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The Mamba (Mamba-1) block of Docs/Models.md §1.3, with the official parameter names and layouts:
/// `in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`.
///
///     [X | Z] = U·W_inᵀ;  U′ = silu(causalConv(X));  [δ | B | C] = U′·W_xᵀ
///     Y = selectiveScan(U′, Δ = softplus(δ·W_dtᵀ + b_dt), A = −exp(A_log), B, C, D) ∘ silu(Z)
///     O = Y·W_outᵀ
///
/// The scan and the convolution are single tape nodes (SSMKernels); everything else is
/// composed from differentiable ops.
public final class MambaBlock: Layer {
  /// The model width D of the input and output `[B, L, D]`.
  public let modelDimension: Int
  /// The state size N per channel (default 16; 32 in Mamba4Rec and SIGMA).
  public let stateSize: Int
  /// The causal convolution's width K (default 4).
  public let convolutionWidth: Int
  /// The inner width E = expansion·D.
  public let innerDimension: Int
  /// The rank R of the Δ projection (default ⌈D/16⌉).
  public let deltaRank: Int
  /// `in_proj`: weight `[2E, D]`; its output splits into the scan input X and the gate Z.
  public let inputProjection: Linear
  /// `conv1d.weight`: the depthwise causal kernel, shape `[E, 1, K]`.
  public let convolutionWeight: Parameter
  /// `conv1d.bias`, shape `[E]`, or `nil` for a block built with `convolutionBias: false`.
  public let convolutionBias: Parameter?
  /// `x_proj`: weight `[R + 2N, E]`, no bias; gives the low-rank δ and the input-dependent B and C.
  public let stateProjection: Linear
  /// `dt_proj`: weight `[E, R]` and bias `[E]`, `Δ = softplus(δ·W_dtᵀ + b_dt)`.
  public let deltaProjection: Linear
  /// `A_log`, shape `[E, N]`: `A = −exp(A_log) < 0`.
  public let logA: Parameter
  /// `D`, shape `[E]`: the skip connection, adding `D ∘ U′` to the scan output.
  public let skip: Parameter
  /// `out_proj`: weight `[D, E]`, back to the model width.
  public let outputProjection: Linear

  /// The reference initialisation of `mamba_simple.py` (Docs/Models.md §1.2, left column): PyTorch
  /// defaults for the projections and convolution, the special Δ-bias initialisation from
  /// `U(dt_min, dt_max)` on a log scale, S4D-real `A_log[e, n] = ln(n + 1)`, `D = 1`.
  public init(
    modelDimension: Int, stateSize: Int = 16, convolutionWidth: Int = 4, expansion: Int = 2, deltaRank: Int? = nil,
    convolutionBias: Bool = true, projectionBias: Bool = false, deltaMinimum: Float = 0.001, deltaMaximum: Float = 0.1,
    deltaFloor: Float = 1e-4, using generator: inout some RandomNumberGenerator
  ) {
    let e = expansion * modelDimension
    let r = deltaRank ?? (modelDimension + 15) / 16
    (self.modelDimension, self.stateSize, self.convolutionWidth, self.innerDimension, self.deltaRank) =
      (modelDimension, stateSize, convolutionWidth, e, r)
    inputProjection = Linear(inputSize: modelDimension, outputSize: 2 * e, bias: projectionBias, using: &generator)
    let bound = 1 / Float(convolutionWidth).squareRoot()
    convolutionWeight = Parameter(
      Tensor.randomUniform([e, 1, convolutionWidth], lowerBound: -bound, upperBound: bound, using: &generator))
    self.convolutionBias =
      convolutionBias
      ? Parameter(Tensor.randomUniform([e], lowerBound: -bound, upperBound: bound, using: &generator)) : nil
    stateProjection = Linear(inputSize: e, outputSize: r + 2 * stateSize, bias: false, using: &generator)
    deltaProjection = Linear(inputSize: r, outputSize: e, bias: true, using: &generator)
    let scale = 1 / Float(r).squareRoot()
    deltaProjection.weight.value = Tensor.randomUniform([e, r], lowerBound: -scale, upperBound: scale, using: &generator)
    let (logMin, logMax) = (libmLog(deltaMinimum), libmLog(deltaMaximum))
    let dt0 = (0..<e).map { _ in
      Swift.max(libmExp(generator.nextUnitFloat() * (logMax - logMin) + logMin), deltaFloor)
    }
    // softplus⁻¹(y) = y + log(−expm1(−y))
    deltaProjection.bias!.value = Tensor(dt0.map { $0 + libmLog(-libmExpm1(-$0)) })
    logA = Parameter(Tensor(shape: [e, stateSize], scalars: (0..<(e * stateSize)).map { libmLog(Float($0 % stateSize + 1)) }))
    skip = Parameter(Tensor(ones: [e]))
    outputProjection = Linear(inputSize: e, outputSize: modelDimension, bias: projectionBias, using: &generator)
  }

  /// `in_proj.*`, `conv1d.weight`, `conv1d.bias` (if any), `x_proj.weight`, `dt_proj.*`, `A_log`, `D` and
  /// `out_proj.*`, the names of the official Mamba module.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("in_proj", inputProjection.namedParameters()) + [("conv1d.weight", convolutionWeight)]
      + (convolutionBias.map { [("conv1d.bias", $0)] } ?? []) + prefixed("x_proj", stateProjection.namedParameters())
      + prefixed("dt_proj", deltaProjection.namedParameters()) + [("A_log", logA), ("D", skip)]
      + prefixed("out_proj", outputProjection.namedParameters())
  }

  /// - Parameters:
  ///   - u: shape `[B, L, D]`.
  ///   - sequenceIndex: segment ids `[B, L]` of sequences packed end to end, or `nil`: the
  ///     convolution and the scan then restart at every change of id, so each sequence is
  ///     computed as if alone.
  /// - Returns: shape `[B, L, D]`.
  public func callAsFunction(_ u: Variable, sequenceIndex: IndexTensor? = nil) -> Variable {
    let e = innerDimension
    // X and Z as two products with the halves of in_proj's weight rather than one product split
    // in two: the split copied the [B, L, 2E] output forward and joined its gradient backward,
    // while the weight's halves are 2E×D floats.
    let (x, z) = (inputProjection(u, outputs: 0..<e), inputProjection(u, outputs: e..<(2 * e)))
    let convolved = x.causalConv1d(
      weight: convolutionWeight.variable, bias: convolutionBias?.variable, sequenceIndex: sequenceIndex
    ).silu()
    let projected = stateProjection(convolved).split(alongAxis: -1, sizes: [deltaRank, stateSize, stateSize])
    let (delta, b, c) = (projected[0], projected[1], projected[2])
    let rawDelta = Variable.matmul(delta, deltaProjection.weight.variable, transposeB: true)
    let a = -logA.variable.exp()
    let y = Variable.selectiveScan(
      u: convolved, delta: rawDelta, A: a, B: b, C: c, D: skip.variable, z: z,
      deltaBias: deltaProjection.bias?.variable, deltaSoftplus: true, sequenceIndex: sequenceIndex)
    return outputProjection(y)
  }
}

@inline(__always) func libmLog(_ x: Float) -> Float { logf(x) }
@inline(__always) func libmExp(_ x: Float) -> Float { expf(x) }
@inline(__always) func libmExpm1(_ x: Float) -> Float { expm1f(x) }
