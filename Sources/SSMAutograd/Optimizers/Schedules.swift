import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Scales every gradient so that their global L2 norm is at most `maxNorm`
/// (`torch.nn.utils.clip_grad_norm_`: factor `maxNorm / (norm + 1e-6)` when below 1).
/// - Returns: the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
  var total = 0.0
  for p in parameters {
    guard let g = p.gradient else { continue }
    let norm = Double(g.squared().sum())
    total += norm
  }
  let norm = Float(total.squareRoot())
  let factor = maxNorm / (norm + 1e-6)
  if factor < 1 {
    for p in parameters where p.gradient != nil { p.gradient! *= factor }
  }
  return norm
}

/// A learning rate as a function of the step number (0-based: the rate for the first step is
/// `learningRate(at: 0)`).
public protocol LearningRateSchedule: Sendable {
  /// The learning rate for step `step`.
  func learningRate(at step: Int) -> Float
}

/// The same rate at every step.
public struct ConstantSchedule: LearningRateSchedule {
  /// The learning rate returned for every step.
  public var rate: Float
  /// Creates a schedule that always returns `rate`.
  public init(_ rate: Float) { self.rate = rate }
  /// Returns ``rate`` whatever the step.
  public func learningRate(at step: Int) -> Float { rate }
}

/// `rate · γ^⌊step / stepSize⌋` (`torch.optim.lr_scheduler.StepLR`).
public struct StepDecaySchedule: LearningRateSchedule {
  /// The learning rate of the first `stepSize` steps (PyTorch: the optimizer's initial `lr`).
  public var rate: Float
  /// The number of steps between decays (PyTorch's `step_size`).
  public var stepSize: Int
  /// The factor the rate is multiplied by every `stepSize` steps (PyTorch's `gamma`).
  public var gamma: Float
  /// Creates a step decay schedule; `gamma` defaults to PyTorch's 0.1.
  /// - Precondition: `stepSize > 0`.
  public init(rate: Float, stepSize: Int, gamma: Float = 0.1) {
    precondition(stepSize > 0, "StepDecaySchedule needs a positive step size")
    self.rate = rate
    self.stepSize = stepSize
    self.gamma = gamma
  }
  /// ``rate`` for steps `0..<stepSize`, then multiplied by ``gamma`` every further `stepSize` steps.
  public func learningRate(at step: Int) -> Float {
    rate * Float(pow(Double(gamma), Double(step / stepSize)))
  }
}

/// Linear warm-up from 0 to `rate` over `warmupSteps`, then cosine decay to `minimumRate` at
/// `totalSteps` (and `minimumRate` after).
public struct CosineWarmupSchedule: LearningRateSchedule {
  /// The peak learning rate, reached on the last warm-up step (on step 0 when `warmupSteps` is 0).
  public var rate: Float
  /// The number of warm-up steps; step `s < warmupSteps` gets `rate·(s + 1)/warmupSteps`.
  public var warmupSteps: Int
  /// The step at which the cosine decay reaches `minimumRate`, counting the warm-up steps.
  public var totalSteps: Int
  /// The rate at the end of the decay and after it.
  public var minimumRate: Float
  /// Creates a warm-up and cosine decay schedule; `minimumRate` defaults to 0.
  /// - Precondition: `0 ≤ warmupSteps < totalSteps`.
  public init(rate: Float, warmupSteps: Int, totalSteps: Int, minimumRate: Float = 0) {
    precondition(warmupSteps >= 0 && totalSteps > warmupSteps, "CosineWarmupSchedule needs 0 ≤ warm-up < total steps")
    self.rate = rate
    self.warmupSteps = warmupSteps
    self.totalSteps = totalSteps
    self.minimumRate = minimumRate
  }
  /// `rate·(step + 1)/warmupSteps` during warm-up, then a half cosine from ``rate`` down to ``minimumRate``
  /// at `totalSteps`, and ``minimumRate`` from there on.
  public func learningRate(at step: Int) -> Float {
    if step < warmupSteps { return rate * Float(step + 1) / Float(warmupSteps) }
    if step >= totalSteps { return minimumRate }
    let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
    return minimumRate + (rate - minimumRate) * Float(0.5 * (1 + cos(Double.pi * progress)))
  }
}
