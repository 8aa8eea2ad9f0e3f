import SSMAutograd
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The training loss over the catalogue (Docs/Models.md §7.10).
public enum CatalogueLoss: String, Codable, Sendable, CaseIterable {
  /// Softmax cross-entropy over every item (the official objective), blocked so that the
  /// `[rows, V]` logits are never held at once.
  case crossEntropy = "ce"
  /// Softmax cross-entropy over the target and N negatives shared by the batch, each logit
  /// corrected by the log-probability of drawing it (`s − log Q`), a negative that is the row's
  /// target masked out.
  case sampledSoftmax = "sampled-softmax"
  /// Bayesian personalised ranking: `softplus(s⁻ − s⁺)` averaged over every (target, negative)
  /// pair (RecBole's BPR loss with shared negatives).
  case bpr
  /// Binary cross-entropy: the target labelled 1 and every negative 0, `softplus(−s⁺)` and
  /// `softplus(s⁻)` averaged over all labels.
  case bce
}

/// Where negatives are drawn from.
public enum NegativeProposal: String, Codable, Sendable, CaseIterable {
  /// Every item id (the padding id excluded) equally likely.
  case uniform
  /// Items in proportion to how often they are training targets (the padding id never);
  /// items that never are get the smallest positive count, so every item can be drawn.
  case popularity
}

/// Negatives drawn for one batch, shared by all its rows, and the proposal they came from.
public struct NegativeSample: Sendable {
  /// The loss they are for (not ``CatalogueLoss/crossEntropy``).
  public var loss: CatalogueLoss
  /// The drawn item ids, `[N]` (with replacement).
  public var items: IndexTensor
  /// `log Q(i)` of every item id, `[V]`, for the log-Q correction of the sampled softmax.
  public var logProposal: Tensor

  /// A sample; ``NegativeSampler`` draws them.
  public init(loss: CatalogueLoss, items: IndexTensor, logProposal: Tensor) {
    (self.loss, self.items, self.logProposal) = (loss, items, logProposal)
  }
}

/// Draws the negatives of each batch from a proposal over the item ids, seeded.
public struct NegativeSampler: Sendable {
  /// The loss the samples are for.
  public let loss: CatalogueLoss
  /// Negatives per batch.
  public let count: Int
  /// `log Q` of every item id, `[V]` (−∞ for the padding id).
  public let logProposal: Tensor
  /// The cumulative proposal, for drawing by bisection.
  private let cumulative: [Double]

  /// A sampler of `count` negatives per batch from `proposal` over `itemCount` ids, popularity
  /// counted over `targets` (the training targets).
  public init(loss: CatalogueLoss, count: Int, proposal: NegativeProposal, itemCount: Int, targets: [Int32]) {
    precondition(loss != .crossEntropy && count > 0 && itemCount >= 2, "NegativeSampler: \(loss), \(count), \(itemCount)")
    var weights = [Double](repeating: proposal == .uniform ? 1 : 0, count: itemCount)
    weights[0] = 0
    if proposal == .popularity {
      for t in targets where t > 0 && Int(t) < itemCount { weights[Int(t)] += 1 }
      let smallest = weights.dropFirst().filter { $0 > 0 }.min() ?? 1
      for i in 1..<itemCount where weights[i] == 0 { weights[i] = smallest }
    }
    let total = weights.reduce(0, +)
    var running = 0.0
    cumulative = weights.map {
      running += $0 / total
      return running
    }
    logProposal = Tensor(shape: [itemCount], scalars: weights.map { Float(log($0 / total)) })
    (self.loss, self.count) = (loss, count)
  }

  /// The negatives of one batch.
  public func draw(using generator: inout SplitMix64) -> NegativeSample {
    let items = (0..<count).map { _ -> Int32 in
      // 53 random bits: a float's 24 would quantise the probabilities of a large catalogue.
      let u = generator.nextUnitDouble() * cumulative[cumulative.count - 1]
      var (low, high) = (1, cumulative.count - 1)
      while low < high {
        let middle = (low + high) / 2
        if cumulative[middle] <= u { low = middle + 1 } else { high = middle }
      }
      return Int32(low)
    }
    return NegativeSample(loss: loss, items: IndexTensor(shape: [count], values: items), logProposal: logProposal)
  }
}

extension Variable {
  /// The sampled loss of hidden states `[R, D]` against their targets `[R]` and the batch's
  /// negatives, scored by dot products with the rows of `weight` `[V, D]` (Docs/Models.md §7.10).
  /// A negative equal to a row's target does not count for that row.
  public static func sampledCatalogueLoss(
    hidden: Variable, weight: Variable, targets: IndexTensor, negatives: NegativeSample
  ) -> Variable {
    let rows = hidden.shape[0]
    let n = negatives.items.elementCount
    precondition(targets.shape == [rows], "sampledCatalogueLoss: targets \(targets.shape) for \(rows) rows")
    let positive = (hidden * weight.gatherRows(targets)).sum(alongAxis: 1, keepingDimension: true)  // [R, 1]
    let negative = Variable.matmul(hidden, weight.gatherRows(negatives.items), transposeB: true)  // [R, N]
    // 1 where negative j counts for row r (it is not r's target), 0 where it is.
    var valid = [Float](repeating: 1, count: rows * n)
    for r in 0..<rows {
      let t = targets.values[r]
      for j in 0..<n where negatives.items.values[j] == t { valid[r * n + j] = 0 }
    }
    let mask = Tensor(shape: [rows, n], scalars: valid)
    switch negatives.loss {
    case .sampledSoftmax:
      let logQ = negatives.logProposal
      let targetCorrection = Tensor(shape: [rows, 1], scalars: targets.values.map { logQ.scalars[Int($0)] })
      let negativeCorrection = Tensor(shape: [1, n], scalars: negatives.items.values.map { logQ.scalars[Int($0)] })
      // An accidental hit's logit is pushed far below every other: it takes no probability.
      let hits = Tensor(shape: [rows, n], scalars: valid.map { $0 == 1 ? 0 : -1e9 })
      let logits = Variable.concatenate(
        [positive - Variable(targetCorrection), negative - Variable(negativeCorrection) + Variable(hits)], alongAxis: 1)
      return softmaxCrossEntropy(logits: logits, targets: IndexTensor(shape: [rows], values: [Int32](repeating: 0, count: rows)))
    case .bpr:
      let pairs = Swift.max(1, valid.reduce(0, +))
      return ((negative - positive).softplus() * Variable(mask)).sum() * (1 / pairs)
    case .bce:
      let labels = Float(rows) + valid.reduce(0, +)
      return ((-positive).softplus().sum() + (negative.softplus() * Variable(mask)).sum()) * (1 / labels)
    case .crossEntropy:
      preconditionFailure("sampledCatalogueLoss: cross-entropy is the full softmax, not a sampled loss")
    }
  }
}
