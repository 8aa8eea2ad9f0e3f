import SSMTensor

// Elementwise arithmetic with NumPy broadcasting. Pullbacks sum gradients back over broadcast
// axes (`Tensor.summed(toShape:)`). Memory kept: `+`/`−` nothing but shapes; `×` both operands;
// `÷` both operands.

extension Variable {
  /// Elementwise sum with broadcasting.
  public static func + (lhs: Variable, rhs: Variable) -> Variable {
    let (sa, sb) = (lhs.shape, rhs.shape)
    return record(value: lhs.value + rhs.value, inputs: [lhs, rhs]) {
      { g in [lhs.requiresGradient ? g.summed(toShape: sa) : nil, rhs.requiresGradient ? g.summed(toShape: sb) : nil] }
    }
  }

  /// Elementwise difference with broadcasting.
  public static func - (lhs: Variable, rhs: Variable) -> Variable {
    let (sa, sb) = (lhs.shape, rhs.shape)
    return record(value: lhs.value - rhs.value, inputs: [lhs, rhs]) {
      { g in [lhs.requiresGradient ? g.summed(toShape: sa) : nil, rhs.requiresGradient ? (-g).summed(toShape: sb) : nil] }
    }
  }

  /// Elementwise product with broadcasting.
  public static func * (lhs: Variable, rhs: Variable) -> Variable {
    let (a, b) = (lhs.value, rhs.value)
    return record(value: a * b, inputs: [lhs, rhs]) {
      { g in
        [
          lhs.requiresGradient ? (g * b).summed(toShape: a.shape) : nil,
          rhs.requiresGradient ? (g * a).summed(toShape: b.shape) : nil,
        ]
      }
    }
  }

  /// Elementwise quotient with broadcasting.
  public static func / (lhs: Variable, rhs: Variable) -> Variable {
    let (a, b) = (lhs.value, rhs.value)
    return record(value: a / b, inputs: [lhs, rhs]) {
      { g in
        let ga = g / b
        return [
          lhs.requiresGradient ? ga.summed(toShape: a.shape) : nil,
          rhs.requiresGradient ? (-(ga * a) / b).summed(toShape: b.shape) : nil,
        ]
      }
    }
  }

  /// Negation.
  public static prefix func - (operand: Variable) -> Variable {
    record(value: -operand.value, inputs: [operand]) { { g in [-g] } }
  }

  /// Adds a constant tensor (broadcast).
  public static func + (lhs: Variable, rhs: Tensor) -> Variable { lhs + Variable(rhs) }
  /// Subtracts a constant tensor (broadcast).
  public static func - (lhs: Variable, rhs: Tensor) -> Variable { lhs - Variable(rhs) }
  /// Multiplies by a constant tensor (broadcast).
  public static func * (lhs: Variable, rhs: Tensor) -> Variable { lhs * Variable(rhs) }
  /// Divides by a constant tensor (broadcast).
  public static func / (lhs: Variable, rhs: Tensor) -> Variable { lhs / Variable(rhs) }

  /// Adds a scalar.
  public static func + (lhs: Variable, rhs: Float) -> Variable {
    record(value: lhs.value + rhs, inputs: [lhs]) { { g in [g] } }
  }
  /// Subtracts a scalar.
  public static func - (lhs: Variable, rhs: Float) -> Variable { lhs + (-rhs) }
  /// `s − x`.
  public static func - (lhs: Float, rhs: Variable) -> Variable { -rhs + lhs }
  /// Adds to a scalar.
  public static func + (lhs: Float, rhs: Variable) -> Variable { rhs + lhs }
  /// Multiplies by a scalar.
  public static func * (lhs: Variable, rhs: Float) -> Variable {
    record(value: lhs.value * rhs, inputs: [lhs]) { { g in [g * rhs] } }
  }
  /// Multiplies a scalar.
  public static func * (lhs: Float, rhs: Variable) -> Variable { rhs * lhs }
  /// Divides by a scalar.
  public static func / (lhs: Variable, rhs: Float) -> Variable { lhs * (1 / rhs) }
  /// `s / x`.
  public static func / (lhs: Float, rhs: Variable) -> Variable {
    let x = rhs.value
    return record(value: lhs / x, inputs: [rhs]) { { g in [-(g * lhs) / (x * x)] } }
  }
}
