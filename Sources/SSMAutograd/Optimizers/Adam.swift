import CKernels
import SSMTensor

/// Adam and AdamW with PyTorch's semantics.
///
/// Each step, for every parameter `p` with gradient `g` (t counts steps from 1):
///
///     g ← g + λ·p                      (Adam: L2 decay added to the gradient)
///     p ← p·(1 − lr·λ)                 (AdamW: decoupled decay, instead of the line above)
///     m ← β₁·m + (1 − β₁)·g
///     v ← β₂·v + (1 − β₂)·g²
///     p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)
///
/// ε is added after the square root, as in `torch.optim.Adam`. The update runs as one fused SIMD
/// pass per parameter (CKernels `ssm_adam_update`).
public final class Adam: Optimizer {
  /// How weight decay is applied.
  public enum WeightDecay: Sendable, Equatable {
    /// No decay.
    case none
    /// L2 regularisation: `λ·p` added to the gradient (`torch.optim.Adam(weight_decay:)`).
    case l2(Float)
    /// Decoupled decay: `p ← p·(1 − lr·λ)` before the update (`torch.optim.AdamW`).
    case decoupled(Float)
  }

  /// The step size lr (PyTorch's `lr`, default 1e-3) used by the next ``step()``; saved and restored with the
  /// state.
  public var learningRate: Float
  /// β₁, the decay rate of the running mean of gradients (`exp_avg`): PyTorch's `betas[0]`,
  /// default 0.9.
  public let beta1: Float
  /// β₂, the decay rate of the running mean of squared gradients (`exp_avg_sq`): PyTorch's
  /// `betas[1]`, default 0.999.
  public let beta2: Float
  /// ε, added to the denominator after the square root to keep steps finite where `v` is
  /// near zero: PyTorch's `eps`, default 1e-8.
  public let epsilon: Float
  /// Whether weight decay is off, L2 (Adam) or decoupled (AdamW), and its strength λ.
  public let weightDecay: WeightDecay
  /// The number of ``step()`` calls so far: t in the bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ`.
  public private(set) var stepCount = 0
  private let parameters: [(path: String, parameter: Parameter)]
  private var buffers: NamedBuffers

  /// Creates an optimizer over named parameters (defaults are PyTorch's).
  public init(
    parameters: [(path: String, parameter: Parameter)], learningRate: Float = 1e-3, beta1: Float = 0.9,
    beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: WeightDecay = .none
  ) {
    self.parameters = parameters
    self.learningRate = learningRate
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.weightDecay = weightDecay
    self.buffers = NamedBuffers(names: parameters.map(\.path))
  }

  /// AdamW: Adam with decoupled weight decay (PyTorch's default λ = 0.01).
  public static func adamW(
    parameters: [(path: String, parameter: Parameter)], learningRate: Float = 1e-3, beta1: Float = 0.9,
    beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01
  ) -> Adam {
    Adam(
      parameters: parameters, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
      weightDecay: .decoupled(weightDecay))
  }

  private var kind: String {
    if case .decoupled = weightDecay { return "adamw" }
    return "adam"
  }

  /// Updates every parameter that has a gradient in one fused pass, creating its `exp_avg` and `exp_avg_sq`
  /// at zero on its first gradient; parameters without a gradient are skipped.
  public func step() {
    stepCount += 1
    let t = Float(stepCount)
    let bc1 = 1 - Float.pow(beta1, t)
    let bc2 = 1 - Float.pow(beta2, t)
    let (lambda, decoupled): (Float, Int32) = {
      switch weightDecay {
      case .none: return (0, 0)
      case .l2(let l): return (l, 0)
      case .decoupled(let l): return (l, 1)
      }
    }()
    for (name, parameter) in parameters {
      guard let gradient = parameter.gradient else { continue }
      var m = buffers.values[name]?["exp_avg"] ?? Tensor(zeros: parameter.shape)
      var v = buffers.values[name]?["exp_avg_sq"] ?? Tensor(zeros: parameter.shape)
      let count = parameter.value.elementCount
      let (lr, b1, b2, eps) = (learningRate, beta1, beta2, epsilon)
      parameter.value.withUnsafeMutableBufferPointer { p in
        gradient.withUnsafeBufferPointer { g in
          m.withUnsafeMutableBufferPointer { mb in
            v.withUnsafeMutableBufferPointer { vb in
              nonisolated(unsafe) let ptr = (p.baseAddress!, g.baseAddress!, mb.baseAddress!, vb.baseAddress!)
              Parallel.forEachChunk(count: count, minimumPerWorker: Parallel.elementwiseThreshold) { r in
                let o = r.lowerBound
                ssm_adam_update(ptr.0 + o, ptr.1 + o, ptr.2 + o, ptr.3 + o, r.count, lr, b1, b2, eps, lambda, decoupled, bc1, bc2)
              }
            }
          }
        }
      }
      buffers.values[name] = ["exp_avg": m, "exp_avg_sq": v]
    }
  }

  /// A snapshot with kind `"adam"` or `"adamw"`, the step count, the learning rate and each parameter's
  /// `exp_avg` and `exp_avg_sq`.
  public func state() -> OptimizerState {
    OptimizerState(kind: kind, stepCount: stepCount, learningRate: learningRate, buffers: buffers.snapshot())
  }

  /// Restores the step count, learning rate and moments, throwing ``OptimizerStateError`` for another kind
  /// (Adam and AdamW differ), an unknown parameter name or a buffer of the wrong size.
  public func load(_ state: OptimizerState) throws {
    guard state.kind == kind else { throw OptimizerStateError.kindMismatch(expected: kind, found: state.kind) }
    try buffers.restore(state.buffers, parameters: parameters)
    stepCount = state.stepCount
    learningRate = state.learningRate
  }
}

extension Float {
  static func pow(_ base: Float, _ exponent: Float) -> Float {
    Float(libmPow(Double(base), Double(exponent)))
  }
}

#if canImport(Glibc)
  import Glibc
  @inline(__always) func libmPow(_ a: Double, _ b: Double) -> Double { Glibc.pow(a, b) }
#elseif canImport(Darwin)
  import Darwin
  @inline(__always) func libmPow(_ a: Double, _ b: Double) -> Double { Darwin.pow(a, b) }
#endif
