import SSMAutograd
import SSMKernels
import SSMTensor

/// A module with named parameters: layers own `Parameter`s (SSMAutograd) and list them,
/// with their children's, under dotted paths equal to the official PyTorch `state_dict` keys.
public protocol Layer: ParameterContainer {}

/// What a forward pass needs besides its input: whether it trains (dropout active) and the
/// seeded generator dropout draws from.
public struct ForwardContext {
  /// Whether dropout is active.
  public var isTraining: Bool
  /// The generator of dropout masks.
  public var generator: SplitMix64

  /// A training context drawing dropout masks from `seed`.
  public static func training(seed: UInt64) -> ForwardContext {
    ForwardContext(isTraining: true, generator: SplitMix64(seed: seed))
  }

  /// An evaluation context: dropout is the identity.
  public static var evaluation: ForwardContext { ForwardContext(isTraining: false, generator: SplitMix64(seed: 0)) }

  /// A context with an explicit mode and dropout generator (see also ``training(seed:)`` and
  /// ``evaluation``).
  public init(isTraining: Bool, generator: SplitMix64) {
    self.isTraining = isTraining
    self.generator = generator
  }
}

extension ParameterContainer {
  /// Loads values by name (e.g. from a checkpoint or an official `state_dict`).
  ///
  /// - Throws: ``ParameterLoadingError`` when a parameter is missing, a name is unknown (unless
  ///   `allowUnexpected`), or a shape differs. Nothing is changed unless every tensor fits.
  public func loadParameters(_ values: [String: Tensor], allowUnexpected: Bool = false) throws {
    let named = namedParameters()
    let known = Set(named.map(\.path))
    if !allowUnexpected, let extra = values.keys.sorted().first(where: { !known.contains($0) }) {
      throw ParameterLoadingError.unexpectedParameter(extra)
    }
    for (path, parameter) in named {
      guard let value = values[path] else { throw ParameterLoadingError.missingParameter(path) }
      guard value.shape == parameter.shape else {
        throw ParameterLoadingError.shapeMismatch(parameter: path, expected: parameter.shape, found: value.shape)
      }
    }
    for (path, parameter) in named { parameter.value = values[path]! }
  }

  /// RecBole's `_init_weights` applied to every parameter (Docs/Models.md §0.3): Linear and Embedding
  /// weights N(0, std²), Linear biases 0, LayerNorm scale 1 and shift 0; other parameters keep
  /// their own initialisation.
  public func applyBlanketInitialization(standardDeviation: Float = 0.02, using generator: inout some RandomNumberGenerator) {
    for (_, p) in namedParameters() {
      switch p.role {
      case .linearWeight, .embedding:
        p.value = Tensor.randomNormal(p.shape, standardDeviation: standardDeviation, using: &generator)
      case .linearBias, .normShift: p.value = Tensor(zeros: p.shape)
      case .normScale: p.value = Tensor(ones: p.shape)
      case .other: break
      }
    }
  }
}

/// Why parameters could not be loaded.
public enum ParameterLoadingError: Error, Equatable, CustomStringConvertible {
  /// No value was given for the parameter at this path.
  case missingParameter(String)
  /// A value was given under this name, but no parameter has it (and `allowUnexpected` was false).
  case unexpectedParameter(String)
  /// The value for the parameter at path `parameter` has shape `found` instead of `expected`.
  case shapeMismatch(parameter: String, expected: Shape, found: Shape)

  /// One line naming the parameter path at fault (with both shapes for a mismatch), for command-line errors.
  public var description: String {
    switch self {
    case .missingParameter(let p): return "parameter \(p) is missing"
    case .unexpectedParameter(let p): return "unexpected parameter \(p)"
    case .shapeMismatch(let p, let e, let f): return "parameter \(p) has shape \(f), expected \(e)"
    }
  }
}
