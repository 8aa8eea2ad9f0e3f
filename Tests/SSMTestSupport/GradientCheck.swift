import SSMAutograd
import XCTest

/// Finite-difference checks of SSMAutograd's pullbacks.
public enum GradientCheck {
  /// Checks the gradients of `function` with respect to every input against central differences.
  ///
  /// The function is scalarised with a seeded random cotangent `c`, `L = Σ c ∘ f(x)`, and
  /// `backward(seed: c)` gives the analytic gradients. Each input element is moved by ±`step`
  /// (relative to its magnitude, at least `step`), `f` is re-evaluated without recording and
  /// `L±` is summed in Double; the divisor is the difference of the two rounded Float inputs, so
  /// input rounding does not enter the quotient. Float evaluation limits the numeric derivative
  /// to about 1e-3 relative accuracy, hence the default tolerance; the elementwise derivatives
  /// themselves are also checked against Double references in SSMTensorTests.
  ///
  /// - Parameters:
  ///   - inputs: the points at which to differentiate.
  ///   - checked: which inputs to check (default all).
  ///   - tolerance: on `|a − n| / max(|a| + |n|, 1e-2·max|n|)`.
  public static func assertGradients(
    _ inputs: [Tensor], checked: [Bool]? = nil, step: Float = 1e-2, tolerance: Double = 1e-2,
    globalScale: Bool = false, seed: UInt64 = 7, file: StaticString = #filePath, line: UInt = #line,
    _ function: ([Variable]) -> Variable
  ) {
    let variables = inputs.map { Variable($0, requiresGradient: true) }
    let output = function(variables)
    let cotangent = Tensor.random(output.shape, in: -1...1, seed: seed)
    output.backward(seed: cotangent)
    let c = cotangent.doubles
    func loss(_ xs: [Tensor]) -> Double {
      let y = withoutGradients { function(xs.map { Variable($0) }) }
      return zip(y.value.doubles, c).reduce(0) { $0 + $1.0 * $1.1 }
    }
    var results: [(index: Int, analytic: [Double], numeric: [Double])] = []
    for (index, input) in inputs.enumerated() where checked?[index] ?? true {
      let analytic = (variables[index].gradient ?? Tensor(zeros: input.shape)).doubles
      XCTAssertEqual(
        variables[index].gradient?.shape ?? input.shape, input.shape, "gradient shape of input \(index)",
        file: file, line: line)
      var numeric = [Double](repeating: 0, count: input.elementCount)
      var xs = inputs
      for i in 0..<input.elementCount {
        let x0 = input.scalars[i]
        let h = step * Swift.max(1, Swift.abs(x0))
        let (xp, xm) = (x0 + h, x0 - h)
        xs[index][flat: i] = xp
        let plus = loss(xs)
        xs[index][flat: i] = xm
        let minus = loss(xs)
        xs[index][flat: i] = x0
        numeric[i] = (plus - minus) / (Double(xp) - Double(xm))
      }
      results.append((index, analytic, numeric))
    }
    // Float evaluation resolves a numeric derivative only to ~ε·|L|/h, so entries far below the
    // largest are compared against a floor: 1% of the largest entry of the same input, or with
    // `globalScale` of all inputs (for layers whose parameters have gradients orders of
    // magnitude apart; their exact values are checked by the PyTorch parity fixtures).
    let globalMax = largest(results.flatMap(\.numeric).map(Swift.abs))
    for (index, analytic, numeric) in results {
      let scale = Swift.max(globalScale ? globalMax : largest(numeric.map(Swift.abs)), 1e-6)
      let (error, worst) = FiniteDifference.worstRelativeError(analytic, numeric, floor: 1e-2 * scale)
      if !(error <= tolerance) {
        XCTFail(
          "input \(index): relative error \(error) at flat index \(worst) (analytic \(analytic[worst]), numeric \(numeric[worst]))\(TestContext.description)",
          file: file, line: line)
      }
    }
  }
}

extension Tensor {
  /// Writes one element by its flat (row-major) index.
  public subscript(flat index: Int) -> Float {
    get { scalars[index] }
    set { withUnsafeMutableBufferPointer { $0[index] = newValue } }
  }
}

extension GradientCheck {
  /// Checks the gradients of a module's output with respect to its input and every parameter.
  /// The parameters are moved through the finite-difference points and their accumulated
  /// gradients are handed back through ``ParameterBridge``.
  public static func assertLayerGradients(
    _ container: ParameterContainer, input: Tensor, step: Float = 1e-2, tolerance: Double = 1e-2,
    file: StaticString = #filePath, line: UInt = #line, _ run: (Variable) -> Variable
  ) {
    let params = container.namedParameters().map(\.parameter)
    let originals = params.map(\.value)
    assertGradients([input] + originals, step: step, tolerance: tolerance, globalScale: true, file: file, line: line) { v in
      for (p, value) in zip(params, v.dropFirst()) { p.value = value.value }
      return ParameterBridge.attach(run(v[0]), params: params, leaves: Array(v.dropFirst()))
    }
    for (p, value) in zip(params, originals) { p.value = value }
  }
}

/// Connects leaf variables to parameters for gradient checks: the forward reads the parameters
/// (whose values were set from the leaves), and the op's pullback hands each leaf the gradient
/// its parameter accumulated during the backward pass of the wrapped output.
public enum ParameterBridge {
  public static func attach(_ output: Variable, params: [Parameter], leaves: [Variable]) -> Variable {
    for p in params { p.zeroGradient() }
    return Variable.record(value: output.value, inputs: [output] + leaves) {
      { g in
        output.backward(seed: g)
        return [nil] + params.map { $0.gradient ?? Tensor(zeros: $0.shape) }
      }
    }
  }
}
