import Foundation
import SSMAutograd
import SSMTensor

/// Times one event of a growing history: the streaming update (``HistoryStream/append(_:)``)
/// against encoding the whole history again, and the top-K that follows either, for a built-in
/// model at its official hyperparameters; the measurement behind `ssmrec bench --streaming`.
package enum StreamingBenchmark {
  /// One model at one history length.
  package struct Case: Sendable, Hashable {
    /// The recommender's registered name.
    package var model: String
    /// The history's length ℓ when the event arrives.
    package var length: Int
    /// Item ids V, padding included.
    package var items: Int

    /// A case.
    package init(model: String, length: Int, items: Int = 3417) { (self.model, self.length, self.items) = (model, length, items) }
  }

  /// The measurements of one case, in microseconds (medians, with the fastest and slowest run).
  package struct Result: Sendable {
    /// What was measured.
    package var configuration: Case
    /// How the model streams.
    package var update: StreamingUpdate
    /// One ``HistoryStream/append(_:)`` at length ℓ.
    package var append: StepBenchmark.Timing
    /// One ``SequentialRecommender/encodeHistory(_:batching:)`` of the ℓ items.
    package var reencode: StepBenchmark.Timing
    /// The top 10 of the catalogue for one representation.
    package var topK: StepBenchmark.Timing

    /// How many times faster the streaming update is than encoding again.
    package var speedup: Double { reencode.median / append.median }

    /// The result as a flat JSON-friendly dictionary.
    package var dictionary: [String: Any] {
      [
        "model": configuration.model, "length": configuration.length, "items": configuration.items,
        "update": update.rawValue, "append_us": append.median, "append_min_us": append.minimum,
        "reencode_us": reencode.median, "reencode_min_us": reencode.minimum, "top10_us": topK.median, "speedup": speedup,
      ]
    }
  }

  /// Measures a case: a history of ℓ − 1 random items, then `repeats` events timed as streaming
  /// updates (the history grows to ℓ + repeats, within the model's window), `repeats`
  /// re-encodings of ℓ items and `repeats` top-10s.
  package static func run(_ c: Case, repeats: Int) throws -> Result {
    precondition(repeats > 0 && c.length > 1 && c.items > 1, "StreamingBenchmark: bad case \(c)")
    let window = c.length + repeats
    let model = try ModelRegistry.shared.descriptor(named: c.model).makeModel(
      itemCount: c.items, overrides: .init(maximumLength: window), seed: 1)
    var rng = SplitMix64(seed: 3)
    let history = (0..<(c.length + repeats)).map { _ in 1 + Int(rng.next() % UInt64(c.items - 1)) }
    let batching = model.batching(maximumLength: window)
    var stream = try HistoryStream(model: model, batching: batching)
    try stream.append(contentsOf: Array(history[..<(c.length - 1)]))
    func microseconds(_ body: () throws -> Void) rethrows -> Double {
      let start = ContinuousClock.now
      try body()
      return seconds(ContinuousClock.now - start) * 1e6
    }
    // Each kind timed in a loop of its own, so that one does not run on caches the other emptied;
    // the first of each warms up.
    var appends: [Double] = []
    for r in 0...repeats {
      let t = try microseconds { try stream.append(history[c.length - 1 + r]) }
      if r > 0 { appends.append(t) }
    }
    var reencodes: [Double] = []
    for r in 0...repeats {
      let recent = Array(history[r..<(c.length + r)])
      let t = microseconds { _ = model.encodeHistory(recent, batching: batching) }
      if r > 0 { reencodes.append(t) }
    }
    var tops: [Double] = []
    for r in 0...repeats {
      let t = try microseconds { _ = try stream.recommend(k: 10) }
      if r > 0 { tops.append(t) }
    }
    return Result(
      configuration: c, update: model.streamingUpdate, append: StepBenchmark.Timing(samples: appends),
      reencode: StepBenchmark.Timing(samples: reencodes), topK: StepBenchmark.Timing(samples: tops))
  }
}
