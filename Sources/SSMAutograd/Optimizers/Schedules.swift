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
  public var rate: Float
  public init(_ rate: Float) { self.rate = rate }
  public func learningRate(at step: Int) -> Float { rate }
}

/// `rate · γ^⌊step / stepSize⌋` (`torch.optim.lr_scheduler.StepLR`).
public struct StepDecaySchedule: LearningRateSchedule {
  public var rate: Float
  public var stepSize: Int
  public var gamma: Float
  public init(rate: Float, stepSize: Int, gamma: Float = 0.1) {
    precondition(stepSize > 0, "StepDecaySchedule needs a positive step size")
    self.rate = rate
    self.stepSize = stepSize
    self.gamma = gamma
  }
  public func learningRate(at step: Int) -> Float {
    rate * Float(pow(Double(gamma), Double(step / stepSize)))
  }
}

/// Linear warm-up from 0 to `rate` over `warmupSteps`, then cosine decay to `minimumRate` at
/// `totalSteps` (and `minimumRate` after).
public struct CosineWarmupSchedule: LearningRateSchedule {
  public var rate: Float
  public var warmupSteps: Int
  public var totalSteps: Int
  public var minimumRate: Float
  public init(rate: Float, warmupSteps: Int, totalSteps: Int, minimumRate: Float = 0) {
    precondition(warmupSteps >= 0 && totalSteps > warmupSteps, "CosineWarmupSchedule needs 0 ≤ warm-up < total steps")
    self.rate = rate
    self.warmupSteps = warmupSteps
    self.totalSteps = totalSteps
    self.minimumRate = minimumRate
  }
  public func learningRate(at step: Int) -> Float {
    if step < warmupSteps { return rate * Float(step + 1) / Float(warmupSteps) }
    if step >= totalSteps { return minimumRate }
    let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
    return minimumRate + (rate - minimumRate) * Float(0.5 * (1 + cos(Double.pi * progress)))
  }
}
