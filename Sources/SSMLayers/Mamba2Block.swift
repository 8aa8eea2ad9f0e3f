import SSMAutograd
import SSMKernels
import SSMTensor

/// The Mamba-2 block of Docs/Models.md §2.7 (as SSD4Rec calls it), with the official parameter names:
/// `in_proj`, `conv1d`, `dt_bias`, `A_log`, `D`, `norm`, `out_proj`.
///
///     [Z | XBC | dt] = U·W_inᵀ
///     XBC = silu(causalConv(XBC; segments));  X, B, C = split(XBC)
///     Y = chunkedSSD(X, dt, A = −exp(A_log), B, C, D; dt_bias, segments)
///     O = gatedRMSNorm(Y, Z)·W_outᵀ
///
/// With `sequenceIndex` (packed variable-length batches) both the convolution and the scan
/// restart at every segment boundary.
public final class Mamba2Block: Layer {
  /// The block's hyperparameters (Docs/Models.md §2.1; defaults are the module's, SSD4Rec's in comments).
  public struct Configuration: Codable, Sendable, Equatable {
    /// Model width D (SSD4Rec: 256).
    public var modelDimension: Int
    /// State size N (module 128; SSD4Rec 64).
    public var stateSize: Int = 128
    /// Convolution width K.
    public var convolutionWidth: Int = 4
    /// Inner width E = expansion·D.
    public var expansion: Int = 2
    /// Head dimension P (module 64; SSD4Rec 16); H = E / P.
    public var headDimension: Int = 64
    /// Groups G of B and C; must divide H.
    public var groups: Int = 1
    /// SSD chunk length Q; any value gives the same function (64 is fastest on a CPU).
    public var chunkSize: Int = 64
    /// Epsilon of the gated RMSNorm.
    public var normEpsilon: Float = 1e-5
    /// Whether the convolution has a bias.
    public var convolutionBias: Bool = true
    /// Whether the projections have biases.
    public var projectionBias: Bool = false

    /// A configuration of width D = `modelDimension` with the module's defaults for everything else.
    public init(modelDimension: Int) { self.modelDimension = modelDimension }

    /// The inner width E = expansion·D (SSD4Rec: 512).
    public var innerDimension: Int { expansion * modelDimension }
    /// The number of heads H = E / P (SSD4Rec: 32); ``validate()`` checks that P divides E.
    public var heads: Int { innerDimension / headDimension }

    /// Reports the first invalid value.
    public func validate() throws {
      func check(_ ok: Bool, _ message: String) throws { if !ok { throw ConfigurationError.invalid(message) } }
      try ConfigurationError.checkSizes(["modelDimension": modelDimension], atMost: ConfigurationLimits.width)
      try ConfigurationError.checkSizes(
        ["stateSize": stateSize, "headDimension": headDimension, "groups": groups, "chunkSize": chunkSize],
        atMost: ConfigurationLimits.stateSize)
      try ConfigurationError.checkSizes(
        ["convolutionWidth": convolutionWidth, "expansion": expansion], atMost: ConfigurationLimits.kernelWidth)
      try check(headDimension > 0 && innerDimension % headDimension == 0, "headDimension must divide expansion·modelDimension")
      try check(groups > 0 && heads % groups == 0, "groups must divide the number of heads")
      try check(normEpsilon > 0, "normEpsilon must be positive")
    }
  }

  /// The hyperparameters the block was built with.
  public let configuration: Configuration
  /// `in_proj`: weight `[2E + 2GN + H, D]`; its output splits into the gate Z, the convolution
  /// input XBC and one raw Δ per head.
  public let inputProjection: Linear
  /// `conv1d.weight`: the depthwise causal kernel over the XBC channels, shape `[E + 2GN, 1, K]`.
  public let convolutionWeight: Parameter
  /// `conv1d.bias`, shape `[E + 2GN]`, or `nil` when the configuration's `convolutionBias` is false.
  public let convolutionBias: Parameter?
  /// `dt_bias`, shape `[H]`: added to the raw Δ before the softplus, `Δ = softplus(dt + dt_bias)`.
  public let deltaBias: Parameter
  /// `A_log`, shape `[H]`: one decay per head, `A = −exp(A_log) < 0`.
  public let logA: Parameter
  /// `D`, shape `[H]`: the skip connection, adding `D_h·x` to each head's scan output.
  public let skip: Parameter
  /// `norm`: the gated RMSNorm over the E channels, gating the scan output with Z before normalising.
  public let norm: GatedRMSNorm
  /// `out_proj`: weight `[D, E]`, back to the model width.
  public let outputProjection: Linear

  /// The reference initialisation (Docs/Models.md §2.2): PyTorch defaults for the projections and the
  /// convolution, `dt_bias = softplus⁻¹(dt₀)` with `dt₀` log-uniform in [0.001, 0.1] (floor
  /// 1e-4), `A_log = ln U(1, 16)`, `D = 1`, norm weight 1.
  public init(configuration c: Configuration, using generator: inout some RandomNumberGenerator) {
    configuration = c
    let (e, h, g, n) = (c.innerDimension, c.heads, c.groups, c.stateSize)
    inputProjection = Linear(
      inputSize: c.modelDimension, outputSize: 2 * e + 2 * g * n + h, bias: c.projectionBias, using: &generator)
    let channels = e + 2 * g * n
    let bound = 1 / Float(c.convolutionWidth).squareRoot()
    convolutionWeight = Parameter(
      Tensor.randomUniform([channels, 1, c.convolutionWidth], lowerBound: -bound, upperBound: bound, using: &generator))
    convolutionBias =
      c.convolutionBias
      ? Parameter(Tensor.randomUniform([channels], lowerBound: -bound, upperBound: bound, using: &generator)) : nil
    let (logMin, logMax) = (libmLog(0.001), libmLog(0.1))
    deltaBias = Parameter(
      Tensor(
        (0..<h).map { _ in
          let dt = Swift.max(libmExp(generator.nextUnitFloat() * (logMax - logMin) + logMin), 1e-4)
          return dt + libmLog(-libmExpm1(-dt))
        }))
    logA = Parameter(Tensor((0..<h).map { _ in libmLog(1 + 15 * generator.nextUnitFloat()) }))
    skip = Parameter(Tensor(ones: [h]))
    norm = GatedRMSNorm(dimension: e, epsilon: c.normEpsilon)
    outputProjection = Linear(inputSize: e, outputSize: c.modelDimension, bias: c.projectionBias, using: &generator)
  }

  /// `in_proj.*`, `conv1d.weight`, `conv1d.bias` (if `convolutionBias`), `dt_bias`, `A_log`, `D`,
  /// `norm.weight` and `out_proj.*`, the official Mamba-2 names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("in_proj", inputProjection.namedParameters()) + [("conv1d.weight", convolutionWeight)]
      + (convolutionBias.map { [("conv1d.bias", $0)] } ?? []) + [("dt_bias", deltaBias), ("A_log", logA), ("D", skip)]
      + prefixed("norm", norm.namedParameters()) + prefixed("out_proj", outputProjection.namedParameters())
  }

  /// - Parameters:
  ///   - u: shape `[B, L, D]`.
  ///   - sequenceIndex: segment ids `[B, L]` of packed sequences, or `nil`.
  /// - Returns: shape `[B, L, D]`.
  public func callAsFunction(_ u: Variable, sequenceIndex: IndexTensor? = nil) -> Variable {
    let c = configuration
    let (e, h, g, n, p) = (c.innerDimension, c.heads, c.groups, c.stateSize, c.headDimension)
    let (batch, length) = (u.shape[0], u.shape[1])
    // Three products with row blocks of in_proj's weight: no [B, L, 2E + 2GN + H] output to
    // split forward and join backward.
    let xbcEnd = 2 * e + 2 * g * n
    let z = inputProjection(u, outputs: 0..<e)
    let dt = inputProjection(u, outputs: xbcEnd..<(xbcEnd + h))
    let xbc = inputProjection(u, outputs: e..<xbcEnd)
      .causalConv1d(weight: convolutionWeight.variable, bias: convolutionBias?.variable, sequenceIndex: sequenceIndex).silu()
      .split(alongAxis: -1, sizes: [e, g * n, g * n])
    let x = xbc[0].reshaped(to: [batch, length, h, p])
    let b = xbc[1].reshaped(to: [batch, length, g, n])
    let cm = xbc[2].reshaped(to: [batch, length, g, n])
    let y = Variable.chunkedSSD(
      x: x, dt: dt, A: -logA.variable.exp(), B: b, C: cm, D: skip.variable, dtBias: deltaBias.variable,
      sequenceIndex: sequenceIndex, chunkSize: c.chunkSize)
    return outputProjection(norm(y.reshaped(to: [batch, length, e]), gate: z))
  }
}

/// A configuration value out of range.
public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
  /// The message names the offending value and the rule it breaks.
  case invalid(String)
  /// The message after `invalid configuration: `, one line for command-line errors.
  public var description: String {
    switch self {
    case .invalid(let m): return "invalid configuration: \(m)"
    }
  }

  /// Throws unless every size lies in `1...limit`: configurations are checked against these
  /// bounds before anything is allocated or multiplied, so a corrupt checkpoint's configuration
  /// is refused instead of allocating terabytes or overflowing.
  public static func checkSizes(_ sizes: KeyValuePairs<String, Int>, atMost limit: Int) throws {
    for (name, value) in sizes where !(1...limit).contains(value) {
      throw ConfigurationError.invalid("\(name) is \(value), outside 1...\(limit)")
    }
  }
}

/// The largest sizes a layer or model configuration accepts; far above any published model,
/// they keep every product of sizes well inside `Int` and refuse corrupt values before any
/// allocation.
public enum ConfigurationLimits {
  /// Model, embedding and GRU widths.
  public static let width = 1 << 14
  /// Feed-forward inner widths.
  public static let innerWidth = 1 << 16
  /// Stacked layers.
  public static let layers = 256
  /// SSM state sizes N, head dimensions and chunk sizes.
  public static let stateSize = 1 << 12
  /// Convolution kernel widths and expansion factors.
  public static let kernelWidth = 256
  /// Item ids, the padding id included (ids are 32-bit).
  public static let itemCount = Int(Int32.max)
  /// Sequence lengths (position tables, flip prefixes).
  public static let length = 1 << 20
}
