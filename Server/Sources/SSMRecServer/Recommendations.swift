import Dispatch
import Foundation
import SSMRecommenders

/// A request the server refuses: its HTTP status and one line for the JSON error body.
struct RequestError: Error {
  var status: Int
  var message: String

  static func badRequest(_ message: String) -> RequestError { RequestError(status: 400, message: message) }
  static func notFound(_ message: String) -> RequestError { RequestError(status: 404, message: message) }
}

/// The model, its item vocabulary and the per-user streams: everything a request needs besides
/// HTTP.
///
/// Users are spread over serial queues by a hash of their name: requests for one user run one
/// after another in the order they reach its queue (once their bodies are read), so a client
/// that waits for each answer has its events applied in order; requests for users on different
/// queues run in parallel. A user's stream is a cache entry, rebuilt from the
/// stored events on a miss, so the cache can forget any user at any time.
final class RecommendationService: @unchecked Sendable {
  /// The longest answer a request may ask for.
  static let largestK = 1000
  /// The most events one request may post.
  static let largestPost = 10_000
  /// The longest user name.
  static let longestUser = 256

  private let model: any SequentialRecommender
  private let batching: BatchingPolicy
  private let window: StreamingWindow
  private let itemTokens: [String]
  private let itemIDs: [String: Int]
  private let store: EventStore
  let metrics: ServerMetrics

  /// A serial queue and the streams of its users; `streams` is touched on `queue` only.
  private final class Shard: @unchecked Sendable {
    let queue: DispatchQueue
    var streams: [String: (stream: HistoryStream, used: UInt64)] = [:]
    var clock: UInt64 = 0
    init(_ index: Int) { queue = DispatchQueue(label: "ssmrec-server.users.\(index)") }
  }

  private let shards: [Shard]
  private let usersPerShard: Int

  /// - Parameters:
  ///   - cachedUsers: how many users' streams to keep in memory (in all).
  init(
    model: any SequentialRecommender, batching: BatchingPolicy, window: StreamingWindow, itemTokens: [String],
    store: EventStore, cachedUsers: Int, shardCount: Int = 16, metrics: ServerMetrics
  ) throws {
    // Fails now, not at the first request, for a window the model cannot stream.
    _ = try HistoryStream(model: model, batching: batching, window: window)
    (self.model, self.batching, self.window, self.itemTokens, self.store, self.metrics) = (
      model, batching, window, itemTokens, store, metrics
    )
    var ids: [String: Int] = [:]
    for (id, token) in itemTokens.enumerated() where id > 0 { ids[token] = id }
    itemIDs = ids
    shards = (0..<shardCount).map(Shard.init)
    usersPerShard = Swift.max(1, cachedUsers / shardCount)
  }

  var modelKind: String { type(of: model).kind }
  var itemCount: Int { model.itemCount }
  var streaming: String { "\(model.streamingUpdate), \(window.rawValue) window, \(batching)" }

  /// Item ids of tokens, or a 400 naming the unknown ones.
  func ids(of tokens: [String]) throws -> [Int] {
    var ids: [Int] = []
    var unknown: [String] = []
    for token in tokens {
      if let id = itemIDs[token] { ids.append(id) } else { unknown.append(token) }
    }
    guard unknown.isEmpty else {
      let shown = unknown.prefix(5).map { "\"\($0.prefix(64))\"" }.joined(separator: ", ")
      throw RequestError.badRequest("unknown item\(unknown.count > 1 ? "s" : "") \(shown)\(unknown.count > 5 ? ", …" : "")")
    }
    return ids
  }

  /// The user's name in Unicode normalisation form C: Swift compares strings by canonical
  /// equivalence, SQLite by bytes, so both must see the same bytes for the same name.
  static func checkUser(_ user: String) throws -> String {
    let name = user.precomposedStringWithCanonicalMapping
    guard !name.isEmpty, name.utf8.count <= longestUser else {
      throw RequestError.badRequest("a user name has 1 to \(longestUser) bytes")
    }
    return name
  }

  func checkK(_ k: Int) throws {
    let largest = Swift.min(Self.largestK, itemCount - 1)
    guard (1...largest).contains(k) else { throw RequestError.badRequest("k must be in 1...\(largest), got \(k)") }
  }

  /// Runs `body` on the user's queue, in arrival order.
  private func onQueue<T: Sendable>(of user: String, _ body: @escaping @Sendable (Shard) throws -> T) async throws -> T {
    var hasher = Hasher()
    hasher.combine(user)
    let shard = shards[Int(UInt(bitPattern: hasher.finalize()) % UInt(shards.count))]
    return try await withCheckedThrowingContinuation { continuation in
      shard.queue.async {
        continuation.resume(with: Result(catching: { try body(shard) }))
      }
    }
  }

  /// The user's stream, from the cache or rebuilt from the stored events; `nil` for a user
  /// without events. Call on the shard's queue.
  private func stream(of user: String, in shard: Shard) throws -> HistoryStream? {
    shard.clock += 1
    if let cached = shard.streams[user] {
      shard.streams[user]!.used = shard.clock
      return cached.stream
    }
    metrics.count(cacheMiss: true)
    let tokens = try store.items(of: user)
    guard !tokens.isEmpty else { return nil }
    var stream = try HistoryStream(model: model, batching: batching, window: window)
    let ids = try tokens.map { token in
      guard let id = itemIDs[token] else {
        throw RequestError(status: 500, message: "a stored event of this user names item \"\(token)\", unknown to the dataset")
      }
      return id
    }
    try stream.append(contentsOf: ids)
    remember(stream, of: user, in: shard)
    return stream
  }

  private func remember(_ stream: HistoryStream, of user: String, in shard: Shard) {
    shard.streams[user] = (stream, shard.clock)
    if shard.streams.count > usersPerShard {
      // Forget the least recently used quarter at once, so eviction stays O(1) amortised.
      let oldest = shard.streams.sorted { $0.value.used < $1.value.used }.prefix(Swift.max(1, usersPerShard / 4))
      for (name, _) in oldest where name != user { shard.streams[name] = nil }
    }
  }

  /// Stores the events, then applies them to the user's stream; returns the user's length.
  func append(user name: String, items tokens: [String]) async throws -> Int {
    let user = try Self.checkUser(name)
    guard !tokens.isEmpty else { throw RequestError.badRequest("\"items\" is empty") }
    guard tokens.count <= Self.largestPost else {
      throw RequestError(status: 413, message: "at most \(Self.largestPost) events per request")
    }
    let ids = try ids(of: tokens)
    return try await onQueue(of: user) { shard in
      let cached = shard.streams[user] != nil
      let length = try self.store.append(user: user, items: tokens)
      self.metrics.count(events: tokens.count)
      if cached {
        shard.clock += 1
        var entry = shard.streams.removeValue(forKey: user)!
        try entry.stream.append(contentsOf: ids)
        shard.streams[user] = (entry.stream, shard.clock)
      } else {
        // Rebuilt from the store, which now holds these events too.
        _ = try self.stream(of: user, in: shard)
      }
      return length
    }
  }

  /// The user's top `k`.
  func recommend(user name: String, k: Int, excludingSeen: Bool) async throws -> [ScoredItem] {
    let user = try Self.checkUser(name)
    try checkK(k)
    return try await onQueue(of: user) { shard in
      guard let stream = try self.stream(of: user, in: shard) else {
        throw RequestError.notFound("no events for user \"\(user)\"")
      }
      return try stream.recommend(k: k, excludingSeen: excludingSeen)
    }
  }

  /// The top `k` for a history that is not stored.
  func recommend(history tokens: [String], k: Int, excludingSeen: Bool) throws -> [ScoredItem] {
    try checkK(k)
    guard !tokens.isEmpty else { throw RequestError.badRequest("\"history\" is empty") }
    guard tokens.count <= Self.largestPost else {
      throw RequestError(status: 413, message: "at most \(Self.largestPost) items per history")
    }
    var stream = try HistoryStream(model: model, batching: batching, window: window)
    try stream.append(contentsOf: try ids(of: tokens))
    return try stream.recommend(k: k, excludingSeen: excludingSeen)
  }

  func token(of item: Int) -> String { itemTokens[item] }

  /// Users whose streams are in memory.
  func cachedUserCount() -> Int {
    var total = 0
    for shard in shards { total += shard.queue.sync { shard.streams.count } }
    return total
  }
}
