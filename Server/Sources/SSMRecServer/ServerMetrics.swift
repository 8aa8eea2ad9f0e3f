import Foundation

/// Request counts and latencies, rendered in the Prometheus text exposition format.
final class ServerMetrics: @unchecked Sendable {
  /// Upper bounds of the latency histogram's buckets, in seconds.
  static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

  private struct Route: Hashable {
    var path: String
    var method: String
  }

  private struct Latencies {
    var buckets = [Int](repeating: 0, count: ServerMetrics.bounds.count)
    var count = 0
    var sum = 0.0
  }

  private let lock = NSLock()
  private var requests: [Route: [Int: Int]] = [:]
  private var latencies: [Route: Latencies] = [:]
  private var events = 0
  private var cacheMisses = 0

  /// One answered request: its route template (not the concrete path, so user names do not
  /// become label values), method, status and time taken.
  func record(path: String, method: String, status: Int, seconds: Double) {
    let route = Route(path: path, method: method)
    lock.withLock {
      requests[route, default: [:]][status, default: 0] += 1
      var l = latencies[route, default: Latencies()]
      if let bucket = Self.bounds.firstIndex(where: { seconds <= $0 }) { l.buckets[bucket] += 1 }
      l.count += 1
      l.sum += seconds
      latencies[route] = l
    }
  }

  /// Stored events, and rebuilds of a user's stream from the store.
  func count(events stored: Int = 0, cacheMiss: Bool = false) {
    lock.withLock {
      events += stored
      if cacheMiss { cacheMisses += 1 }
    }
  }

  /// The metrics as Prometheus text, with the number of users whose streams are in memory.
  func render(cachedUsers: Int) -> String {
    lock.withLock {
      var lines = [
        "# HELP ssmrec_requests_total Requests answered, by route, method and status.",
        "# TYPE ssmrec_requests_total counter",
      ]
      let routes = requests.keys.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
      for route in routes {
        for (status, count) in requests[route]!.sorted(by: { $0.key < $1.key }) {
          lines.append("ssmrec_requests_total{\(labels(route)),status=\"\(status)\"} \(count)")
        }
      }
      lines += [
        "# HELP ssmrec_request_duration_seconds Time from a request's arrival to its answer.",
        "# TYPE ssmrec_request_duration_seconds histogram",
      ]
      for route in routes {
        let l = latencies[route]!
        var cumulative = 0
        for (bound, count) in zip(Self.bounds, l.buckets) {
          cumulative += count
          lines.append("ssmrec_request_duration_seconds_bucket{\(labels(route)),le=\"\(bound)\"} \(cumulative)")
        }
        lines.append("ssmrec_request_duration_seconds_bucket{\(labels(route)),le=\"+Inf\"} \(l.count)")
        lines.append("ssmrec_request_duration_seconds_sum{\(labels(route))} \(l.sum)")
        lines.append("ssmrec_request_duration_seconds_count{\(labels(route))} \(l.count)")
      }
      lines += [
        "# HELP ssmrec_events_total Events stored since the server started.", "# TYPE ssmrec_events_total counter",
        "ssmrec_events_total \(events)",
        "# HELP ssmrec_stream_rebuilds_total User streams rebuilt from the stored events (cache misses).",
        "# TYPE ssmrec_stream_rebuilds_total counter", "ssmrec_stream_rebuilds_total \(cacheMisses)",
        "# HELP ssmrec_cached_users Users whose streams are in memory.", "# TYPE ssmrec_cached_users gauge",
        "ssmrec_cached_users \(cachedUsers)",
      ]
      return lines.joined(separator: "\n") + "\n"
    }
  }

  private func labels(_ route: Route) -> String { "route=\"\(route.path)\",method=\"\(route.method)\"" }
}
