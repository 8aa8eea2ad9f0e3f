import SSMTensor

// Elementwise functions. Memory kept: the input (the derivative is evaluated from it in one
// fused SIMD pass, `Tensor.elementwiseGradient`).

extension Variable {
  /// `f(x)` elementwise for any of SSMTensor's elementwise functions.
  public func applying(_ function: ElementwiseFunction) -> Variable {
    let x = value
    return Variable.record(value: x.applying(function), inputs: [self]) {
      { g in [Tensor.elementwiseGradient(of: function, at: x, outputGradient: g)] }
    }
  }

  /// `eˣ`.
  public func exp() -> Variable { applying(.exp) }
  /// Natural logarithm.
  public func log() -> Variable { applying(.log) }
  /// `log(1 + x)`.
  public func log1p() -> Variable { applying(.log1p) }
  /// `√x`.
  public func sqrt() -> Variable { applying(.sqrt) }
  /// `1/√x`.
  public func rsqrt() -> Variable { applying(.rsqrt) }
  /// Hyperbolic tangent.
  public func tanh() -> Variable { applying(.tanh) }
  /// Logistic sigmoid.
  public func sigmoid() -> Variable { applying(.sigmoid) }
  /// `x·σ(x)`.
  public func silu() -> Variable { applying(.silu) }
  /// Softplus with threshold 20 (derivative σ(x) below, 1 above).
  public func softplus() -> Variable { applying(.softplus) }
  /// Exact (erf) GELU.
  public func gelu() -> Variable { applying(.gelu) }
  /// `max(x, 0)`.
  public func relu() -> Variable { applying(.relu) }
  /// `x²`.
  public func squared() -> Variable { applying(.square) }
  /// `|x|`.
  public func abs() -> Variable { applying(.abs) }
}
