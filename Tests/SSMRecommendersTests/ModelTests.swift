import SSMAutograd
import SSMLayers
import SSMMetrics
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

final class ModelTests: XCTestCase {
  static func tinyModels(itemCount: Int = 12, maximumLength: Int = 8) throws -> [any SequentialRecommender] {
    var mamba = Mamba4Rec.Configuration(itemCount: itemCount)
    (mamba.hiddenSize, mamba.stateSize, mamba.innerSize) = (8, 4, 16)
    var sigma = SIGMA.Configuration(itemCount: itemCount)
    (sigma.hiddenSize, sigma.stateSize, sigma.innerSize, sigma.flip) = (8, 4, 16, .prefix(count: 5))
    var sigmaPaper = sigma
    sigmaPaper.flip = .keepingLast(keep: 2)
    var ssd = SSD4Rec.Configuration(itemCount: itemCount)
    (ssd.hiddenSize, ssd.stateSize, ssd.headDimension, ssd.innerSize, ssd.layers, ssd.chunkSize) = (8, 4, 4, 16, 1, 4)
    var sasrec = SASRec.Configuration(itemCount: itemCount)
    (sasrec.hiddenSize, sasrec.innerSize, sasrec.maximumLength) = (8, 16, maximumLength)
    var gru = GRU4Rec.Configuration(itemCount: itemCount)
    (gru.embeddingSize, gru.hiddenSize) = (8, 12)
    return [
      try Mamba4Rec(configuration: mamba), try SIGMA(configuration: sigma), try SIGMA(configuration: sigmaPaper),
      try SSD4Rec(configuration: ssd), try SASRec(configuration: sasrec), try GRU4Rec(configuration: gru),
    ]
  }

  func testParameterCountsMatchTheOfficialModels() throws {
    // Docs/Models.md §10.3, ML-1M (V = 3,417) with the official hyperparameters.
    XCTAssertEqual(try Mamba4Rec(configuration: .init(itemCount: 3417)).parameterCount, 290_944)
    XCTAssertEqual(try SIGMA(configuration: .init(itemCount: 3417)).parameterCount, 348_675)
    XCTAssertEqual(try SSD4Rec(configuration: .init(itemCount: 3417)).parameterCount, 2_804_416)
    var sasrec = SASRec.Configuration(itemCount: 3417)
    sasrec.maximumLength = 200
    XCTAssertEqual(try SASRec(configuration: sasrec).parameterCount, 331_584)
    XCTAssertEqual(try GRU4Rec(configuration: .init(itemCount: 3417)).parameterCount, 300_672)
  }

  func testOfficialInitialisation() throws {
    let model = try Mamba4Rec(configuration: .init(itemCount: 500))
    let mamba = model.layers[0].mamba
    XCTAssertEqual(mamba.deltaProjection.bias!.value, Tensor(zeros: [128]), "blanket init zeroes dt_proj.bias")
    XCTAssertEqual(model.itemEmbedding.value.variance().squareRoot(), 0.02, accuracy: 0.002)
    XCTAssertEqual(mamba.logA.value[3, 31], Float(log(32.0)), accuracy: 1e-6, "A_log keeps its S4D-real init")
    XCTAssertEqual(model.layers[0].norm.weight.value, Tensor(ones: [64]))
    let again = try Mamba4Rec(configuration: .init(itemCount: 500))
    XCTAssertEqual(again.itemEmbedding.value, model.itemEmbedding.value, "seeded")
    let ssd = try SSD4Rec(configuration: .init(itemCount: 50))
    XCTAssertNotEqual(ssd.layers[0].ssd.deltaBias.value, Tensor(zeros: [32]), "SSD4Rec keeps Mamba-2's dt_bias init")
  }

  func testConfigurationValidation() {
    var m = Mamba4Rec.Configuration(itemCount: 1)
    XCTAssertThrowsError(try m.validate())
    m.itemCount = 10
    m.dropout = 1
    XCTAssertThrowsError(try Mamba4Rec(configuration: m))
    var s = SASRec.Configuration(itemCount: 10)
    s.heads = 3
    XCTAssertThrowsError(try s.validate())
    var ssd = SSD4Rec.Configuration(itemCount: 10)
    ssd.headDimension = 7
    XCTAssertThrowsError(try ssd.validate())
    var sigma = SIGMA.Configuration(itemCount: 10)
    sigma.featureKernelSize = 2
    XCTAssertThrowsError(try sigma.validate())
    XCTAssertThrowsError(try SequenceBatch(histories: [[1, 2], []]))
    XCTAssertThrowsError(try SequenceBatch(items: IndexTensor(rows: [[1, 2]]), lengths: [3]))
  }

  /// Finite differences through whole models cover the layers only they use (SASRec's
  /// attention and feed-forward sublayers) besides the per-layer checks of SSMLayersTests. The
  /// input is a dummy scalar added to the embeddings path; the parameters are what is checked.
  /// SASRec's additive mask against its definition: 0 where key `j ≤ i` holds an item, −10000
  /// elsewhere, for rows of every length in one batch (right padding, a row of one item).
  func testSASRecMaskIsCausalOverItems() throws {
    let histories = [[5, 3, 9, 2, 7], [4], [8, 8, 1]]
    let batch = try SequenceBatch(histories: histories, width: 5)
    let mask = SASRec.attentionMask(batch)
    XCTAssertEqual(mask.shape, [3, 1, 5, 5])
    for (s, history) in histories.enumerated() {
      for i in 0..<5 {
        for j in 0..<5 {
          XCTAssertEqual(mask[s, 0, i, j], j <= i && j < history.count ? 0 : -10000, "row \(s) query \(i) key \(j)")
        }
      }
    }
  }

  func testModelGradientsMatchFiniteDifferences() throws {
    var sasrec = SASRec.Configuration(itemCount: 7)
    (sasrec.hiddenSize, sasrec.innerSize, sasrec.maximumLength, sasrec.layers) = (4, 8, 4, 1)
    var gru = GRU4Rec.Configuration(itemCount: 7)
    (gru.embeddingSize, gru.hiddenSize) = (3, 4)
    let batch = try SequenceBatch(histories: [[1, 2, 3], [4, 5]], targets: [4, 6], width: 4)
    for model in [try SASRec(configuration: sasrec), try GRU4Rec(configuration: gru)] as [any SequentialRecommender] {
      // Larger weights than the 0.02 initialisation make every gradient large against the
      // rounding noise of a Float finite difference.
      var rng = SplitMix64(seed: 4)
      model.applyBlanketInitialization(standardDeviation: 0.3, using: &rng)
      // A whole-model loss of magnitude ~2 leaves Float differences ~4e-5 of rounding noise,
      // hence 3 % of the largest gradient as the tolerance; a wrong formula misses by far more.
      GradientCheck.assertLayerGradients(model, input: Tensor(zeros: [1]), step: 3e-3, tolerance: 3e-2) { dummy in
        var context = ForwardContext.evaluation
        return model.loss(batch, context: &context) + dummy.sum() * 0
      }
    }
  }

  /// Appending padding columns to a batch changes no score (the SIGMA flip prefix stays within
  /// the original width, as it must for the official model to see the same window).
  func testPaddingInvarianceForEveryModel() throws {
    let histories = [[3, 5, 7], [1], [2, 4, 6, 8, 10]]
    for model in try Self.tinyModels(maximumLength: 9) {
      let narrow = try SequenceBatch(histories: histories, width: 6)
      let wide = try SequenceBatch(histories: histories, width: 9)
      assertClose(model.scores(wide), model.scores(narrow), rtol: 1e-5, atol: 1e-5, "\(type(of: model))")
    }
  }

  /// Each model fits a tiny synthetic dataset (every history has one fixed next item) to
  /// near-zero loss with Adam, with dropout on.
  func testEveryModelTrainsToNearZeroLoss() throws {
    let histories = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [2, 4], [9, 8, 7]]
    let targets = [4, 6, 10, 11, 5]
    let batch = try SequenceBatch(histories: histories, targets: targets)
    for model in try Self.tinyModels() {
      let adam = Adam(parameters: model.namedParameters(), learningRate: 0.01)
      var context = ForwardContext.training(seed: 1)
      var last: Float = 0
      for _ in 0..<300 {
        model.zeroGradients()
        let loss = model.loss(batch, context: &context)
        loss.backward()
        adam.step()
        last = loss.value.scalar
      }
      var evaluation = ForwardContext.evaluation
      let final = withoutGradients { model.loss(batch, context: &evaluation).value.scalar }
      XCTAssertLessThan(final, 0.1, "\(type(of: model)): training loss \(last), evaluation loss \(final)")
      let predicted = model.scores(batch).argmax(alongAxis: 1).values.map(Int.init)
      XCTAssertEqual(predicted, targets, "\(type(of: model))")
    }
  }
}
