import Foundation

/// Timing for the XCTest benchmarks: medians over repeats after a warm-up, printed as one
/// machine-readable `BENCH` line per case (XCTest's own output is prose).
public enum Benchmark {
  /// Whether full-size cases were asked for with `SSMREC_BENCH=full`.
  public static var isFull: Bool { ProcessInfo.processInfo.environment["SSMREC_BENCH"] == "full" }

  /// Summary of one timed case, in seconds.
  public struct Timing: Sendable {
    public var median: Double
    public var minimum: Double
    public var maximum: Double
    public var samples: [Double]

    /// A summary measured elsewhere (in seconds), without its samples.
    public init(median: Double, minimum: Double, maximum: Double, samples: [Double] = []) {
      (self.median, self.minimum, self.maximum, self.samples) = (median, minimum, maximum, samples)
    }
  }

  /// Runs `body` `warmup` times untimed, then `repeats` times timed.
  public static func time(repeats: Int = 10, warmup: Int = 1, _ body: () -> Void) -> Timing {
    for _ in 0..<warmup { body() }
    let clock = ContinuousClock()
    var samples = [Double]()
    samples.reserveCapacity(repeats)
    for _ in 0..<repeats {
      let d = clock.measure(body)
      samples.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }
    let sorted = samples.sorted()
    return Timing(median: sorted[sorted.count / 2], minimum: sorted[0], maximum: sorted[sorted.count - 1], samples: samples)
  }

  /// Times several variants of the same work in alternation (one run of each per round), so slow
  /// drifts of a shared machine's speed hit all of them alike; returns one timing per variant.
  public static func interleaved(repeats: Int = 15, warmup: Int = 2, _ variants: [() -> Void]) -> [Timing] {
    for _ in 0..<warmup { for v in variants { v() } }
    let clock = ContinuousClock()
    var samples = [[Double]](repeating: [], count: variants.count)
    for _ in 0..<repeats {
      for (i, v) in variants.enumerated() {
        let d = clock.measure(v)
        samples[i].append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
      }
    }
    return samples.map { s in
      let sorted = s.sorted()
      return Timing(median: sorted[sorted.count / 2], minimum: sorted[0], maximum: sorted[sorted.count - 1], samples: s)
    }
  }

  /// Prints `BENCH name=… key=value …` with the timing and any extra fields.
  public static func report(_ name: String, _ timing: Timing, _ fields: KeyValuePairs<String, Double> = [:]) {
    var line =
      "BENCH name=\(name) median_ms=\(fmt(timing.median * 1e3)) min_ms=\(fmt(timing.minimum * 1e3)) max_ms=\(fmt(timing.maximum * 1e3))"
    for (key, value) in fields { line += " \(key)=\(fmt(value))" }
    print(line)
  }

  /// Peak resident memory of this process so far, in KiB (`ru_maxrss`).
  public static var peakResidentKiB: Int {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss
  }

  /// Current resident memory in KiB, from /proc/self/statm (Linux), or the peak elsewhere.
  public static var currentResidentKiB: Int {
    if let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
      let fields = text.split(separator: " ")
      if fields.count > 1, let pages = Int(fields[1]) { return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024 }
    }
    return peakResidentKiB
  }

  static func fmt(_ v: Double) -> String { String(format: "%.4g", v) }
}
