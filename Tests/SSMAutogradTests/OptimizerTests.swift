import Foundation
import SSMAutograd
import SSMTestSupport
import XCTest

/// Optimizer steps against PyTorch's update rules written out by hand in Double.
final class OptimizerTests: XCTestCase {
  /// Gradients for step t (1-based) of a `count`-element parameter.
  func gradient(_ t: Int, count: Int = 5) -> [Float] {
    (0..<count).map { Float(sin(Double($0 + 1) * Double(t))) * Float(t) }
  }

  /// torch.optim.Adam / AdamW, one parameter, in Double.
  func referenceAdam(steps: Int, lr: Double, wd: Double, decoupled: Bool, start: [Double]) -> [Double] {
    var p = start
    var m = [Double](repeating: 0, count: p.count)
    var v = [Double](repeating: 0, count: p.count)
    let (b1, b2, eps) = (0.9, 0.999, 1e-8)
    for t in 1...steps {
      let g0 = gradient(t, count: p.count).map(Double.init)
      for i in p.indices {
        var g = g0[i]
        if decoupled { p[i] *= 1 - lr * wd } else { g += wd * p[i] }
        m[i] = b1 * m[i] + (1 - b1) * g
        v[i] = b2 * v[i] + (1 - b2) * g * g
        let bc1 = 1 - Foundation.pow(b1, Double(t))
        let bc2 = 1 - Foundation.pow(b2, Double(t))
        p[i] -= lr / bc1 * m[i] / (v[i].squareRoot() / bc2.squareRoot() + eps)
      }
    }
    return p
  }

  func run(_ optimizer: Optimizer, _ parameter: Parameter, steps: Int) {
    for t in 1...steps {
      parameter.gradient = Tensor([Float](gradient(t, count: parameter.value.elementCount)))
      optimizer.step()
    }
  }

  let start: [Float] = [0.5, -1, 2, 0.25, -0.75]

  /// `start` extended to `count` elements in [−2, 2].
  func initialValues(count: Int) -> [Float] {
    (0..<count).map { $0 < start.count ? start[$0] : Float(2 * cos(Double($0) * 0.73)) }
  }

  /// Parameter sizes below the fused update's vector width and at awkward sizes above it, so that
  /// the vector body and its tail are both checked.
  let adamCounts = [5, 16, 17, 33, 65, 100]

  func testAdamMatchesPyTorchRule() {
    withEvery("count", in: adamCounts) { count in
      withEvery("weightDecay", in: [0.0, 0.1]) { wd in
        let p = Parameter(Tensor(initialValues(count: count)))
        let adam = Adam(parameters: [("w", p)], learningRate: 0.01, weightDecay: wd == 0 ? .none : .l2(Float(wd)))
        run(adam, p, steps: 7)
        let expected = referenceAdam(
          steps: 7, lr: 0.01, wd: wd, decoupled: false, start: initialValues(count: count).map(Double.init))
        assertClose(p.value.doubles, expected, rtol: 0, atol: 1e-6)
      }
    }
  }

  func testAdamWMatchesPyTorchRule() {
    withEvery("count", in: adamCounts) { count in
      withEvery("weightDecay", in: [0.0, 0.05]) { wd in
        let p = Parameter(Tensor(initialValues(count: count)))
        let adamw = Adam.adamW(parameters: [("w", p)], learningRate: 0.01, weightDecay: Float(wd))
        run(adamw, p, steps: 7)
        let expected = referenceAdam(
          steps: 7, lr: 0.01, wd: wd, decoupled: true, start: initialValues(count: count).map(Double.init))
        assertClose(p.value.doubles, expected, rtol: 0, atol: 1e-6)
      }
    }
  }

  func testSGDMomentumAndNesterov() {
    withEvery("nesterov", in: [false, true]) { nesterov in
      let p = Parameter(Tensor(start))
      let sgd = SGD(parameters: [("w", p)], learningRate: 0.1, momentum: 0.9, nesterov: nesterov, weightDecay: 0.01)
      run(sgd, p, steps: 4)
      var w = start.map(Double.init)
      var b = [Double](repeating: 0, count: 5)
      for t in 1...4 {
        for i in 0..<5 {
          var g = Double(gradient(t)[i]) + 0.01 * w[i]
          b[i] = t == 1 ? g : 0.9 * b[i] + g
          g = nesterov ? g + 0.9 * b[i] : b[i]
          w[i] -= 0.1 * g
        }
      }
      assertClose(p.value.doubles, w, rtol: 1e-6, atol: 1e-6)
    }
  }

  func testStateRoundTripResumesExactly() throws {
    let p1 = Parameter(Tensor(start))
    let a1 = Adam(parameters: [("w", p1)], learningRate: 0.01)
    run(a1, p1, steps: 3)
    let saved = try JSONDecoder().decode(OptimizerState.self, from: JSONEncoder().encode(a1.state()))
    let p2 = Parameter(p1.value)
    let a2 = Adam(parameters: [("w", p2)], learningRate: 0.5)
    try a2.load(saved)
    XCTAssertEqual(a2.stepCount, 3)
    XCTAssertEqual(a2.learningRate, 0.01)
    for t in 4...6 {
      p1.gradient = Tensor(gradient(t))
      p2.gradient = Tensor(gradient(t))
      a1.step()
      a2.step()
    }
    XCTAssertEqual(p1.value, p2.value)
    XCTAssertThrowsError(try SGD(parameters: [("w", p2)], learningRate: 1).load(saved))
    var bad = saved
    bad.buffers["w"]!["exp_avg"] = [1, 2]
    XCTAssertThrowsError(try a2.load(bad)) { error in
      XCTAssertEqual(error as? OptimizerStateError, .sizeMismatch(parameter: "w", buffer: "exp_avg", expected: 5, found: 2))
    }
  }

  func testGradientClippingAndSchedules() {
    let p = Parameter(Tensor([3, 4]))
    p.gradient = Tensor([3, 4])
    XCTAssertEqual(clipGradientNorm([p], maxNorm: 1), 5, accuracy: 1e-6)
    XCTAssertEqual(p.gradient!.scalars[0], 0.6, accuracy: 1e-5)
    XCTAssertEqual(clipGradientNorm([p], maxNorm: 10), 1, accuracy: 1e-5)
    XCTAssertEqual(p.gradient!.scalars[1], 0.8, accuracy: 1e-5)

    XCTAssertEqual(ConstantSchedule(0.1).learningRate(at: 1000), 0.1)
    let stepDecay = StepDecaySchedule(rate: 1, stepSize: 10, gamma: 0.5)
    XCTAssertEqual(stepDecay.learningRate(at: 9), 1)
    XCTAssertEqual(stepDecay.learningRate(at: 25), 0.25)
    let cosine = CosineWarmupSchedule(rate: 1, warmupSteps: 4, totalSteps: 14, minimumRate: 0.1)
    XCTAssertEqual(cosine.learningRate(at: 0), 0.25)
    XCTAssertEqual(cosine.learningRate(at: 3), 1)
    XCTAssertEqual(cosine.learningRate(at: 9), 0.55, accuracy: 1e-6)
    XCTAssertEqual(cosine.learningRate(at: 14), 0.1)
  }
}
