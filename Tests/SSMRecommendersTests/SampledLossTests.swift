import Foundation
import SSMAutograd
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// The sampled losses against their definitions (Docs/Models.md §7.10), in Double.
final class SampledLossTests: XCTestCase {
  let (rows, width, itemCount) = (5, 4, 9)

  func inputs() -> (hidden: Tensor, weight: Tensor, targets: IndexTensor, negatives: IndexTensor) {
    // Negative 3 is row 1's target and 7 appears twice: an accidental hit and a repeat.
    (
      Tensor.random([rows, width], seed: 1), Tensor.random([itemCount, width], seed: 2), IndexTensor([2, 3, 5, 8, 1]),
      IndexTensor([3, 7, 4, 7, 6, 1])
    )
  }

  /// The losses written out from their definitions: scores s = h·e, a negative equal to a row's
  /// target dropped for that row.
  func reference(
    _ loss: CatalogueLoss, hidden: Tensor, weight: Tensor, targets: IndexTensor, negatives: IndexTensor, logQ: [Double]
  ) -> Double {
    let h = hidden.doubles
    let e = weight.doubles
    func score(_ r: Int, _ item: Int) -> Double { (0..<width).reduce(0) { $0 + h[r * width + $1] * e[item * width + $1] } }
    func softplus(_ x: Double) -> Double { Foundation.log(1 + Foundation.exp(x)) }
    var total = 0.0
    var count = 0.0
    for r in 0..<rows {
      let t = Int(targets.values[r])
      let counted = negatives.values.map(Int.init).filter { $0 != t }
      switch loss {
      case .sampledSoftmax:
        let logits = [score(r, t) - logQ[t]] + counted.map { score(r, $0) - logQ[$0] }
        let largest = logits.max()!
        total += largest + Foundation.log(logits.reduce(0) { $0 + Foundation.exp($1 - largest) }) - logits[0]
        count += 1
      case .bpr:
        for j in counted { total += softplus(score(r, j) - score(r, t)) }
        count += Double(counted.count)
      case .bce:
        total += softplus(-score(r, t)) + counted.reduce(0) { $0 + softplus(score(r, $1)) }
        count += 1 + Double(counted.count)
      case .crossEntropy: XCTFail("not sampled")
      }
    }
    return total / count
  }

  func testEachLossEqualsItsDefinition() {
    let (hidden, weight, targets, negatives) = inputs()
    for proposal in NegativeProposal.allCases {
      let sampler = NegativeSampler(
        loss: .bpr, count: 6, proposal: proposal, itemCount: itemCount, targets: [1, 1, 1, 2, 5, 5, 8])
      let logQ = sampler.logProposal.scalars.map(Double.init)
      for loss in CatalogueLoss.allCases where loss != .crossEntropy {
        let sample = NegativeSample(loss: loss, items: negatives, logProposal: sampler.logProposal)
        let value = Variable.sampledCatalogueLoss(
          hidden: Variable(hidden), weight: Variable(weight), targets: targets, negatives: sample)
        let expected = reference(loss, hidden: hidden, weight: weight, targets: targets, negatives: negatives, logQ: logQ)
        assertClose([Double(value.value.scalar)], [expected], rtol: 1e-5, atol: 1e-6, "\(loss) \(proposal)")
      }
    }
  }

  func testGradientsMatchFiniteDifferences() {
    let (hidden, weight, targets, negatives) = inputs()
    let sampler = NegativeSampler(loss: .bpr, count: 6, proposal: .popularity, itemCount: itemCount, targets: [1, 2, 2, 6])
    for loss in CatalogueLoss.allCases where loss != .crossEntropy {
      let sample = NegativeSample(loss: loss, items: negatives, logProposal: sampler.logProposal)
      GradientCheck.assertGradients([hidden, weight]) { v in
        Variable.sampledCatalogueLoss(hidden: v[0], weight: v[1], targets: targets, negatives: sample)
      }
    }
  }

  /// With every item as a negative and a uniform proposal, the sampled softmax is the full
  /// softmax over the items (the padding id, which no proposal draws, aside).
  func testUniformOverEveryItemIsTheFullSoftmaxOverItems() {
    let (hidden, weight, targets, _) = inputs()
    let sampler = NegativeSampler(loss: .sampledSoftmax, count: 1, proposal: .uniform, itemCount: itemCount, targets: [])
    let everyItem = IndexTensor(Array(1..<itemCount))
    let sample = NegativeSample(loss: .sampledSoftmax, items: everyItem, logProposal: sampler.logProposal)
    let value = Variable.sampledCatalogueLoss(
      hidden: Variable(hidden), weight: Variable(weight), targets: targets, negatives: sample)
    let items = IndexTensor(Array(1..<itemCount))
    let full = Variable.softmaxCrossEntropy(
      logits: Variable.matmul(Variable(hidden), Variable(weight).gatherRows(items), transposeB: true),
      targets: IndexTensor(targets.values.map { Int($0) - 1 }))
    assertClose([Double(value.value.scalar)], [Double(full.value.scalar)], rtol: 1e-5, atol: 1e-6)
  }

  func testSamplerDrawsFromItsProposalAndNeverThePaddingId() {
    let targets: [Int32] = Array(repeating: 1, count: 600) + Array(repeating: 2, count: 300) + [3]
    let sampler = NegativeSampler(loss: .sampledSoftmax, count: 20_000, proposal: .popularity, itemCount: 5, targets: targets)
    var generator = SplitMix64(seed: 3)
    let draws = sampler.draw(using: &generator).items.values
    var counts = [Int](repeating: 0, count: 5)
    for d in draws { counts[Int(d)] += 1 }
    XCTAssertEqual(counts[0], 0)
    // Q ∝ (600, 300, 1, 1): item 4, never a target, gets the smallest count.
    let q = [600.0, 300, 1, 1].map { $0 / 902 }
    for i in 1...4 {
      XCTAssertEqual(Double(counts[i]) / 20_000, q[i - 1], accuracy: 4 * (q[i - 1] * (1 - q[i - 1]) / 20_000).squareRoot() + 1e-4)
    }
    XCTAssertEqual(sampler.logProposal.scalars[0], -.infinity)
    var again = SplitMix64(seed: 3)
    XCTAssertEqual(sampler.draw(using: &again).items.values, draws, "seeded")
    let uniform = NegativeSampler(loss: .bpr, count: 4, proposal: .uniform, itemCount: 5, targets: targets)
    assertClose(
      Tensor(shape: [4], scalars: Array(uniform.logProposal.scalars[1...])),
      Tensor(shape: [4], scalars: [Float](repeating: -log(4), count: 4)))
  }

  /// Training with each sampled loss runs and learns on a small dataset.
  func testTrainingWithEachSampledLoss() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-sampled-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    var lines = ["user_id:token\titem_id:token"]
    for u in 0..<30 { for t in 0..<8 { lines.append("u\(u)\ti\((u + t * 3) % 20)") } }
    let url = folder.appendingPathComponent("d.inter")
    try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    let split = SequentialSplit(try InteractionDataset(contentsOf: url), maximumLength: 10)
    for loss in CatalogueLoss.allCases where loss != .crossEntropy {
      var model = Mamba4Rec.Configuration(itemCount: split.itemCount)
      (model.hiddenSize, model.stateSize, model.innerSize) = (8, 4, 16)
      var settings = TrainingConfiguration()
      (settings.epochs, settings.batchSize, settings.maximumLength, settings.loss, settings.negatives) = (3, 32, 10, loss, 5)
      settings.proposal = .popularity
      let trainer = try Trainer(model: try Mamba4Rec(configuration: model, seed: 1), split: split, configuration: settings)
      let result = try trainer.fit()
      XCTAssertEqual(result.epochs, 3, "\(loss)")
      XCTAssertTrue(result.test.values.allSatisfy(\.isFinite), "\(loss)")
    }
  }
}
