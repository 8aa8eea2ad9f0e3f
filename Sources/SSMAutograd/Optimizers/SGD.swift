import SSMTensor

/// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
/// with `torch.optim.SGD`'s semantics:
///
///     g ← g + λ·p
///     b ← g (first step) or μ·b + (1 − τ)·g
///     g ← g + μ·b (Nesterov) or b
///     p ← p − lr·g
public final class SGD: Optimizer {
  /// The step size lr (PyTorch's `lr`) used by the next ``step()``; saved and restored with the state.
  public var learningRate: Float
  /// μ, the factor applied to the momentum buffer each step; 0 (the default) disables momentum
  /// and keeps no buffer. PyTorch's `momentum`.
  public let momentum: Float
  /// τ, which scales each new gradient's share of the momentum buffer by `1 − τ` (not on the
  /// first step); default 0. PyTorch's `dampening`.
  public let dampening: Float
  /// Whether the step uses Nesterov momentum (`g + μ·b`) rather than the buffer itself;
  /// default `false`. PyTorch's `nesterov`.
  public let nesterov: Bool
  /// λ, the L2 penalty whose gradient `λ·p` is added to each gradient; default 0. PyTorch's
  /// `weight_decay`.
  public let weightDecay: Float
  /// The number of ``step()`` calls so far; SGD's update does not use it, but it is saved with the state.
  public private(set) var stepCount = 0
  private let parameters: [(path: String, parameter: Parameter)]
  private var buffers: NamedBuffers

  /// Creates an optimizer over named parameters.
  /// - Precondition: Nesterov momentum needs a positive momentum and zero dampening.
  public init(
    parameters: [(path: String, parameter: Parameter)], learningRate: Float, momentum: Float = 0,
    dampening: Float = 0, nesterov: Bool = false, weightDecay: Float = 0
  ) {
    precondition(!nesterov || (momentum > 0 && dampening == 0), "Nesterov momentum needs momentum > 0 and dampening 0")
    self.parameters = parameters
    self.learningRate = learningRate
    self.momentum = momentum
    self.dampening = dampening
    self.nesterov = nesterov
    self.weightDecay = weightDecay
    self.buffers = NamedBuffers(names: parameters.map(\.path))
  }

  /// Updates every parameter that has a gradient, keeping a `momentum_buffer` for it only when ``momentum``
  /// is nonzero; parameters without a gradient are skipped.
  public func step() {
    stepCount += 1
    for (name, parameter) in parameters {
      guard var g = parameter.gradient else { continue }
      if weightDecay != 0 { g.scaleAndAdd(parameter.value, alpha: weightDecay, beta: 1) }
      if momentum != 0 {
        var b: Tensor
        if let previous = buffers.values[name]?["momentum_buffer"] {
          b = previous
          b.scaleAndAdd(g, alpha: 1 - dampening, beta: momentum)
        } else {
          b = g
        }
        buffers.values[name] = ["momentum_buffer": b]
        if nesterov { g.scaleAndAdd(b, alpha: momentum, beta: 1) } else { g = b }
      }
      parameter.value.scaleAndAdd(g, alpha: -learningRate, beta: 1)
    }
  }

  /// A snapshot with kind `"sgd"`, the step count, the learning rate and each parameter's `momentum_buffer`
  /// (none without momentum).
  public func state() -> OptimizerState {
    OptimizerState(kind: "sgd", stepCount: stepCount, learningRate: learningRate, buffers: buffers.snapshot())
  }

  /// Restores the step count, learning rate and momentum buffers, throwing ``OptimizerStateError`` for a
  /// non-`"sgd"` state, an unknown parameter name or a buffer of the wrong size.
  public func load(_ state: OptimizerState) throws {
    guard state.kind == "sgd" else { throw OptimizerStateError.kindMismatch(expected: "sgd", found: state.kind) }
    try buffers.restore(state.buffers, parameters: parameters)
    stepCount = state.stepCount
    learningRate = state.learningRate
  }
}
