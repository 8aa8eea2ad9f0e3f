import SSMTensor

/// A tensor value on the tape of reverse-mode automatic differentiation.
///
/// Operations on variables compute their value at once (define-by-run) and, when the result
/// depends on a ``Parameter`` or on a variable created with `requiresGradient: true` and
/// recording is on, record how to send a gradient back. Calling ``backward(seed:)`` on a scalar
/// result fills the gradients of the parameters it depends on.
///
///     let w = Parameter(Tensor.randomNormal([3, 2], using: &rng))
///     let x = Variable(Tensor(rows: [[1, 2, 3]]))
///     let loss = Variable.matmul(x, w.variable).tanh().sum()
///     loss.backward()
///     print(w.gradient!)                      // ∂loss/∂w, shape [3, 2]
///
/// A variable is a value type holding the tensor and a reference to its graph node; copies
/// share the node.
public struct Variable {
  /// The computed value.
  public let value: Tensor
  let node: Node?

  /// A constant: no gradient flows into it.
  public init(_ value: Tensor) {
    self.value = value
    self.node = nil
  }

  /// A leaf whose gradient is kept after ``backward(seed:)`` when `requiresGradient` is true
  /// (and recording is on): read it with ``gradient``.
  public init(_ value: Tensor, requiresGradient: Bool) {
    self.value = value
    if requiresGradient && GradientMode.isEnabled {
      let leaf = Node(inputs: [], pullback: nil)
      leaf.retainsGradient = true
      self.node = leaf
    } else {
      self.node = nil
    }
  }

  init(value: Tensor, node: Node?) {
    self.value = value
    self.node = node
  }

  /// The shape of the value.
  public var shape: Shape { value.shape }

  /// Whether a gradient can flow from this variable back to a parameter or leaf.
  public var requiresGradient: Bool { node != nil }

  /// The gradient kept by the last ``backward(seed:)`` for leaves and for variables marked with
  /// ``retainGradient()``; `nil` otherwise.
  public var gradient: Tensor? { node?.gradient }

  /// Keeps this intermediate variable's gradient after ``backward(seed:)`` (normally it is freed
  /// as soon as it has been passed on).
  public func retainGradient() { node?.retainsGradient = true }

  /// The same value with no connection to the graph.
  public var detached: Variable { Variable(value) }

  /// Records a differentiable operation: its value and, if any input needs a gradient and
  /// recording is on, a pullback from the output gradient to one gradient per input (`nil` for
  /// inputs that need none; shapes must equal the inputs' shapes).
  ///
  /// `makePullback` is only called when the operation is recorded, so in no-gradient mode
  /// nothing is allocated beyond the value. Whatever the pullback closure captures is the memory
  /// the op keeps alive until the backward pass has run through it.
  ///
  /// This is the public way to wrap a hand-written forward and backward (a selective scan, a
  /// fused loss) as a single node on the tape:
  ///
  ///     let y = Variable.record(
  ///       value: x.value.squared(), inputs: [x],
  ///       makePullback: { [xv = x.value] in { g in [g * xv * 2] } })
  ///
  /// `operation` names the op in an ``OperationProfile``; it defaults to the calling function.
  public static func record(
    value: Tensor, inputs: [Variable], operation: StaticString = #function,
    makePullback: () -> (Tensor) -> [Tensor?]
  ) -> Variable {
    if let profile = OperationProfile.current {
      profile.chargeForward(operation, bytes: 4 * inputs.reduce(value.elementCount) { $0 + $1.value.elementCount })
    }
    guard GradientMode.isEnabled, inputs.contains(where: { $0.node != nil }) else {
      return Variable(value)
    }
    let node = Node(inputs: inputs.map(\.node), pullback: makePullback(), operation: operation)
    return Variable(value: value, node: node)
  }
}

extension Variable: CustomStringConvertible {
  /// `Variable(Tensor(shape: …, […]))` with the value's shape and first eight elements, plus
  /// `, requiresGradient` when the variable is on the tape.
  public var description: String {
    "Variable(\(value)\(requiresGradient ? ", requiresGradient" : ""))"
  }
}
