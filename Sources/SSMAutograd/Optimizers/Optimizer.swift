import SSMTensor

/// Updates parameters from their accumulated gradients.
///
/// Optimizers hold their parameters by name (the dotted `state_dict` paths), so their state can
/// be saved with a checkpoint and restored into a freshly built model.
public protocol Optimizer: AnyObject {
  /// The step size used by the next ``step()``; schedules set it before each step.
  var learningRate: Float { get set }
  /// The number of steps taken so far.
  var stepCount: Int { get }
  /// Applies one update to every parameter that has a gradient.
  func step()
  /// The optimizer's state (step count, per-parameter moments) for a checkpoint.
  func state() -> OptimizerState
  /// Restores a state saved by ``state()`` from an optimizer of the same kind over parameters
  /// with the same names and shapes.
  func load(_ state: OptimizerState) throws
}

/// A serialisable snapshot of an optimizer.
public struct OptimizerState: Codable, Equatable, Sendable {
  /// The optimizer's kind, e.g. `"adam"`, `"sgd"`.
  public var kind: String
  /// Steps taken.
  public var stepCount: Int
  /// The learning rate at the time of the snapshot.
  public var learningRate: Float
  /// Per-parameter buffers: parameter name → buffer name (e.g. `"exp_avg"`) → values.
  public var buffers: [String: [String: [Float]]]

  /// Creates a snapshot from its parts, as ``Optimizer/state()`` does.
  public init(kind: String, stepCount: Int, learningRate: Float, buffers: [String: [String: [Float]]]) {
    self.kind = kind
    self.stepCount = stepCount
    self.learningRate = learningRate
    self.buffers = buffers
  }
}

/// Why an optimizer state could not be restored.
public enum OptimizerStateError: Error, Equatable, CustomStringConvertible {
  /// The state was saved by another kind of optimizer (`found`, e.g. `"sgd"`) than the one
  /// loading it (`expected`); Adam (`"adam"`) and AdamW (`"adamw"`) count as different kinds.
  case kindMismatch(expected: String, found: String)
  /// The state has no buffers for the named parameter. The built-in optimizers do not raise it:
  /// a parameter without buffers has had no gradient yet and starts from zero moments.
  case missingParameter(String)
  /// The state has buffers for a parameter name the optimizer does not hold, e.g. a checkpoint
  /// of a differently built model.
  case unexpectedParameter(String)
  /// A saved buffer has `found` values where the parameter has `expected` elements.
  case sizeMismatch(parameter: String, buffer: String, expected: Int, found: Int)

  /// One line naming the optimizer kinds, parameter or buffer at fault, for command-line errors.
  public var description: String {
    switch self {
    case .kindMismatch(let expected, let found): return "optimizer state is for \(found), not \(expected)"
    case .missingParameter(let name): return "optimizer state has no buffers for parameter \(name)"
    case .unexpectedParameter(let name): return "optimizer state has buffers for unknown parameter \(name)"
    case .sizeMismatch(let p, let b, let e, let f):
      return "optimizer buffer \(b) of \(p) has \(f) values, expected \(e)"
    }
  }
}

/// Per-parameter buffers kept by name, shared by the optimizers' save/restore code.
struct NamedBuffers {
  var names: [String]
  var values: [String: [String: Tensor]] = [:]

  func snapshot() -> [String: [String: [Float]]] {
    values.mapValues { $0.mapValues(\.scalars) }
  }

  mutating func restore(
    _ saved: [String: [String: [Float]]], parameters: [(path: String, parameter: Parameter)]
  ) throws {
    let known = Set(names)
    for name in saved.keys where !known.contains(name) { throw OptimizerStateError.unexpectedParameter(name) }
    var restored: [String: [String: Tensor]] = [:]
    for (name, parameter) in parameters {
      guard let buffers = saved[name] else {
        // A parameter that never had a gradient has no buffers yet; that is fine.
        continue
      }
      var tensors: [String: Tensor] = [:]
      for (bufferName, values) in buffers {
        guard values.count == parameter.value.elementCount else {
          throw OptimizerStateError.sizeMismatch(
            parameter: name, buffer: bufferName, expected: parameter.value.elementCount, found: values.count)
        }
        tensors[bufferName] = Tensor(shape: parameter.shape, scalars: values)
      }
      restored[name] = tensors
    }
    values = restored
  }
}
