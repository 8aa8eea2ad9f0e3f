import SSMTensor

/// A trainable tensor with identity: layers own parameters, optimizers update their values in
/// place, and ``Variable/backward(seed:)`` accumulates into their gradients.
public final class Parameter {
  /// What kind of weight a parameter is, for model-wide initialisation schemes such as
  /// RecBole's "blanket init" (every Linear and Embedding weight N(0, 0.02²), Linear biases 0,
  /// LayerNorm 1 and 0), which treat parameters by the kind of module that owns them.
  public enum Role: Sendable, Equatable {
    /// A Linear layer's weight matrix; blanket init draws it from N(0, std²).
    case linearWeight
    /// A Linear layer's bias; blanket init sets it to 0.
    case linearBias
    /// An Embedding table; blanket init draws it from N(0, std²).
    case embedding
    /// A LayerNorm scale (γ); blanket init sets it to 1.
    case normScale
    /// A LayerNorm shift (β); blanket init sets it to 0.
    case normShift
    /// Any other parameter (e.g. an SSM's `A_log`, `D` or an RMSNorm weight); blanket init
    /// leaves its own initialisation in place.
    case other
  }

  /// The current value.
  public var value: Tensor
  /// The accumulated gradient, or `nil` when none has been computed since the last
  /// ``zeroGradient()``.
  public var gradient: Tensor?
  /// The kind of weight this is.
  public let role: Role

  /// Creates a parameter with an initial value.
  public init(_ value: Tensor, role: Role = .other) {
    self.value = value
    self.role = role
  }

  /// The shape of the value.
  public var shape: Shape { value.shape }

  /// A leaf variable reading this parameter; gradients flowing into it accumulate into
  /// ``gradient``. Each use creates a new leaf, so a parameter may be used any number of times.
  public var variable: Variable {
    guard GradientMode.isEnabled else { return Variable(value) }
    return Variable(value: value, node: Node(inputs: [], pullback: nil, parameter: self))
  }

  /// Forgets the accumulated gradient.
  public func zeroGradient() { gradient = nil }

  func accumulateGradient(_ g: Tensor) {
    precondition(g.shape == value.shape, "Gradient \(g.shape) does not match parameter \(value.shape)")
    if gradient == nil { gradient = g } else { gradient! += g }
  }
}

/// Anything that owns parameters under stable dotted names (layers, models).
///
/// Names follow the official PyTorch `state_dict` keys, e.g. `item_embedding.weight`, so
/// checkpoints are interchangeable with the reference implementations.
public protocol ParameterContainer: AnyObject {
  /// Every trainable parameter reachable from this object, in a stable order, keyed by a dotted path.
  func namedParameters() -> [(path: String, parameter: Parameter)]
}

extension ParameterContainer {
  /// The parameters without their names.
  public var parameters: [Parameter] { namedParameters().map(\.parameter) }

  /// The number of trainable scalars.
  public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.parameter.value.elementCount } }

  /// Forgets every accumulated gradient.
  public func zeroGradients() { for (_, p) in namedParameters() { p.zeroGradient() } }
}

/// Prefixes every path of a child's parameters (`"gate." + path`), for composing containers.
public func prefixed(
  _ prefix: String, _ parameters: [(path: String, parameter: Parameter)]
) -> [(path: String, parameter: Parameter)] {
  parameters.map { (prefix + "." + $0.path, $0.parameter) }
}
