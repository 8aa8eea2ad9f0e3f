import CKernels
import Foundation
import SSMTestSupport
import XCTest

/// Double references for every elementwise function and its derivative.
enum Reference {
  static func value(_ f: ElementwiseFunction, _ x: Double) -> Double {
    switch f {
    case .exp: return Foundation.exp(x)
    case .log: return Foundation.log(x)
    case .log1p: return Foundation.log1p(x)
    case .expm1: return Foundation.expm1(x)
    case .sqrt: return x.squareRoot()
    case .rsqrt: return 1 / x.squareRoot()
    case .tanh: return Foundation.tanh(x)
    case .sigmoid: return 1 / (1 + Foundation.exp(-x))
    case .silu: return x / (1 + Foundation.exp(-x))
    case .softplus: return x > 20 ? x : Foundation.log1p(Foundation.exp(x))
    case .gelu: return 0.5 * x * Foundation.erfc(-x / 2.0.squareRoot())
    case .relu: return Swift.max(x, 0)
    case .abs: return Swift.abs(x)
    case .negate: return -x
    case .square: return x * x
    case .reciprocal: return 1 / x
    }
  }

  static func derivative(_ f: ElementwiseFunction, _ x: Double) -> Double {
    let s = 1 / (1 + Foundation.exp(-x))
    switch f {
    case .exp, .expm1: return Foundation.exp(x)
    case .log: return 1 / x
    case .log1p: return 1 / (1 + x)
    case .sqrt: return 0.5 / x.squareRoot()
    case .rsqrt: return -0.5 / (x * x.squareRoot())
    case .tanh: return 1 - Foundation.tanh(x) * Foundation.tanh(x)
    case .sigmoid: return s * (1 - s)
    case .silu: return s * (1 + x * (1 - s))
    case .softplus: return x > 20 ? 1 : s
    case .gelu:
      return 0.5 * Foundation.erfc(-x / 2.0.squareRoot()) + x * Foundation.exp(-x * x / 2) / (2 * Double.pi).squareRoot()
    case .relu: return x > 0 ? 1 : 0
    case .abs: return x > 0 ? 1 : (x < 0 ? -1 : 0)
    case .negate: return -1
    case .square: return 2 * x
    case .reciprocal: return -1 / (x * x)
    }
  }

  /// Inputs inside each function's domain, spanning small and large magnitudes.
  static func domain(_ f: ElementwiseFunction) -> ClosedRange<Float> {
    switch f {
    case .log, .sqrt, .rsqrt: return 0.001...50
    case .log1p: return -0.99...50
    case .exp, .expm1: return -80...80
    case .reciprocal: return 0.05...10
    default: return -30...30
    }
  }
}

final class ElementwiseTests: XCTestCase {
  /// Instruction-set levels this CPU supports: every one is compared with the reference.
  static var levels: [Int32] { Array(0...ssm_isa_supported()) }
  /// Counts below, at and just above the 4-float (portable) and 16-float (AVX2, AVX-512) blocks
  /// of the vector loops, whose tails run on a partial block.
  static let counts = [1, 3, 4, 5, 7, 15, 16, 17, 33]

  override func tearDown() {
    _ = ssm_isa_force(-1)
  }

  func testUnaryFunctionsMatchDoubleReference() {
    withEvery("isa", in: Self.levels) { level in
      _ = ssm_isa_force(level)
      withEvery("function", in: ElementwiseFunction.allCases) { f in
        withEvery("count", in: Self.counts + [1031]) { n in
          let x = Tensor.random([n], in: Reference.domain(f), seed: UInt64(n) &* 31 &+ UInt64(f.rawValue))
          let expected = x.doubles.map { Reference.value(f, $0) }
          // A few ulp of Float32 (1.2e-7 each) in the polynomial kernels; atol covers results
          // that cancel to ~0 (tanh, log near 1, gelu near 0).
          assertClose(x.applying(f), expected: expected, shape: x.shape, rtol: 2e-6, atol: 1e-6)
        }
      }
    }
  }

  func testUnaryDerivativesMatchDoubleReference() {
    withEvery("isa", in: Self.levels) { level in
      _ = ssm_isa_force(level)
      withEvery("function", in: ElementwiseFunction.allCases) { f in
        withEvery("count", in: Self.counts + [257]) { n in
          let x = Tensor.random([n], in: Reference.domain(f), seed: UInt64(n) &* 37 &+ 99 &+ UInt64(f.rawValue))
          let g = Tensor.random([n], seed: 7)
          let expected = zip(x.doubles, g.doubles).map { Reference.derivative(f, $0) * $1 }
          assertClose(
            Tensor.elementwiseGradient(of: f, at: x, outputGradient: g), expected: expected, shape: x.shape,
            rtol: 1e-5, atol: 1e-6)
        }
      }
    }
  }

  func testSpecialValues() {
    let x = Tensor([-Float.infinity, .infinity, 0, -1, 100, -100, .nan])
    let e = x.exp().scalars
    XCTAssertEqual(e[0], 0)
    XCTAssertEqual(e[1], .infinity)
    XCTAssertEqual(e[2], 1)
    XCTAssertEqual(e[4], .infinity)
    XCTAssertEqual(e[5], 0)
    XCTAssertTrue(e[6].isNaN)
    let l = x.log().scalars
    XCTAssertEqual(l[2], -.infinity)
    XCTAssertTrue(l[3].isNaN)
    XCTAssertEqual(l[1], .infinity)
    XCTAssertTrue(l[6].isNaN)
    let s = x.sigmoid().scalars
    XCTAssertEqual(s[0], 0)
    XCTAssertEqual(s[1], 1)
    XCTAssertEqual(x.tanh().scalars[4], 1)
    XCTAssertEqual(x.tanh().scalars[5], -1)
    XCTAssertEqual(Tensor([25]).softplus().scalar, 25)
    XCTAssertEqual(
      Tensor([Float.leastNormalMagnitude / 4]).log().scalar, Float(Foundation.log(Double(Float.leastNormalMagnitude / 4))),
      accuracy: 1e-4)
  }

  /// The kernels compute whole SIMD blocks with vector code and the tail with scalar code: the
  /// same special values at a block position (1…6) and a tail position (33…38 of 40) give the
  /// same result (derivatives too), and every function maps NaN to NaN.
  func testVectorBodiesAndScalarTailsAgreeOnSpecialValues() {
    let specials: [Float] = [.nan, -.infinity, .infinity, 100, -100, 25]
    var values = (0..<40).map { Float($0 % 7) * 0.5 - 1.5 }
    for (i, v) in specials.enumerated() {
      values[1 + i] = v
      values[33 + i] = v
    }
    let x = Tensor(values)
    let g = Tensor(repeating: 1, shape: [40])
    func same(_ a: Float, _ b: Float) -> Bool { a.isNaN ? b.isNaN : a == b }
    for function in ElementwiseFunction.allCases {
      let y = x.applying(function).scalars
      let dy = Tensor.elementwiseGradient(of: function, at: x, outputGradient: g).scalars
      for i in 0..<specials.count {
        XCTAssertTrue(same(y[1 + i], y[33 + i]), "\(function)(\(specials[i])): block \(y[1 + i]), tail \(y[33 + i])")
        XCTAssertTrue(same(dy[1 + i], dy[33 + i]), "\(function)′(\(specials[i])): block \(dy[1 + i]), tail \(dy[33 + i])")
      }
      XCTAssertTrue(y[1].isNaN, "\(function)(NaN) = \(y[1])")
    }
  }

  func testLargeTensorsSplitAcrossWorkersGiveTheSameResult() {
    let n = Parallel.elementwiseThreshold * 2 + 13
    let x = Tensor.random([n], in: -5...5, seed: 3)
    let whole = x.silu()
    let pieces = Tensor.concatenate(
      [x.slice(alongAxis: 0, 0..<1000).silu(), x.slice(alongAxis: 0, 1000..<n).silu()], alongAxis: 0)
    XCTAssertEqual(whole, pieces)
  }

  func testClampAndScaleAndAdd() {
    let x = Tensor.random([1031], in: -3...3, seed: 5)
    assertClose(x.clamped(to: -1, 2), expected: x.doubles.map { Swift.min(Swift.max($0, -1), 2) }, shape: x.shape)
    var y = Tensor.random([1031], seed: 6)
    let y0 = y
    y.scaleAndAdd(x, alpha: 0.5, beta: -2)
    assertClose(y, expected: zip(x.doubles, y0.doubles).map { 0.5 * $0 - 2 * $1 }, shape: x.shape)
  }
}

final class BroadcastingTests: XCTestCase {
  /// Naive NumPy broadcasting in Double.
  static func reference(_ a: Tensor, _ b: Tensor, _ op: (Double, Double) -> Double) -> (Shape, [Double]) {
    let out = a.shape.broadcast(with: b.shape)!
    let rank = out.rank
    func offset(_ index: [Int], _ shape: Shape) -> Int {
      var flat = 0
      for axis in 0..<shape.rank {
        let i = index[axis + rank - shape.rank]
        flat = flat * shape[axis] + (shape[axis] == 1 ? 0 : i)
      }
      return flat
    }
    var values = [Double]()
    var index = [Int](repeating: 0, count: rank)
    for _ in 0..<out.elementCount {
      values.append(op(Double(a.scalars[offset(index, a.shape)]), Double(b.scalars[offset(index, b.shape)])))
      var axis = rank - 1
      while axis >= 0 {
        index[axis] += 1
        if index[axis] < out[axis] { break }
        index[axis] = 0
        axis -= 1
      }
    }
    return (out, values)
  }

  static let shapePairs: [(Shape, Shape)] = [
    ([7], [7]), ([3, 7], [7]), ([7], [3, 7]), ([3, 1, 7], [17, 1]), ([1], [3, 17]),
    ([3, 17, 7], [3, 1, 7]), ([3, 17, 7], [3, 17, 1]), ([2, 1, 3, 1], [1, 5, 1, 4]), ([], [3, 7]),
    ([1000, 3], [1, 3]), ([2, 3, 4], [2, 3, 4]),
  ]

  func testBinaryOperationsBroadcastLikeNumPy() {
    let ops: [(String, (Tensor, Tensor) -> Tensor, (Double, Double) -> Double)] = [
      ("+", { $0 + $1 }, { $0 + $1 }), ("-", { $0 - $1 }, { $0 - $1 }),
      ("*", { $0 * $1 }, { $0 * $1 }), ("/", { $0 / $1 }, { $0 / $1 }),
      ("max", { $0.maximum($1) }, { Swift.max($0, $1) }), ("min", { $0.minimum($1) }, { Swift.min($0, $1) }),
    ]
    withEvery("shapes", in: Self.shapePairs.indices) { p in
      let (sa, sb) = Self.shapePairs[p]
      let a = Tensor.random(sa, in: 0.5...2, seed: UInt64(p))
      let b = Tensor.random(sb, in: 0.5...2, seed: UInt64(p + 100))
      withEvery("op", in: ops.indices) { o in
        let (shape, expected) = Self.reference(a, b, ops[o].2)
        assertClose(ops[o].1(a, b), expected: expected, shape: shape, rtol: 1e-6)
      }
    }
  }

  func testScalarAndInPlaceForms() {
    let a = Tensor.random([3, 17], in: 1...2, seed: 1)
    assertClose(a + 2, expected: a.doubles.map { $0 + 2 }, shape: a.shape)
    assertClose(2 - a, expected: a.doubles.map { 2 - $0 }, shape: a.shape)
    assertClose(a * 3, expected: a.doubles.map { $0 * 3 }, shape: a.shape)
    assertClose(1 / a, expected: a.doubles.map { 1 / $0 }, shape: a.shape, rtol: 1e-6)
    assertClose(-a, expected: a.doubles.map { -$0 }, shape: a.shape)
    var c = a
    let row = Tensor.random([17], seed: 2)
    c += row
    c *= 2
    c -= 1
    c /= row
    let (ad, rd) = (a.doubles, row.doubles)
    let expected: [Double] = (0..<a.elementCount).map { (i: Int) -> Double in
      let r: Double = rd[i % 17]
      return ((ad[i] + r) * 2 - 1) / r
    }
    assertClose(c, expected: expected, shape: a.shape, rtol: 1e-5)
  }

  func testShapeErrorsNameBothShapes() {
    XCTAssertNil(Shape([3, 4]).broadcast(with: [2, 4]))
    XCTAssertEqual(
      Tensor.broadcastMismatchMessage(Shape([3, 4]), Shape([2, 4])), "Shapes [3, 4] and [2, 4] do not broadcast")
    XCTAssertEqual(
      Tensor.matmulShapeError(Shape([3, 4]), Shape([5, 6]), transposeA: false, transposeB: false),
      "matmul inner dimensions differ: [3, 4] × [5, 6]")
  }
}
