import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Why a dataset could not be read.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
  /// No file exists at the given path.
  case fileNotFound(String)
  /// The file at the given path exists but cannot be opened for reading.
  case unreadable(String)
  /// The header of `file` (a RecBole `.inter` or CSV file) has no column of the given name.
  case missingColumn(String, file: String)
  /// Line `line` (1-based) has too few fields, or the file is empty; `detail` says which.
  case malformedLine(line: Int, detail: String)
  /// The timestamp field of line `line` (1-based) is `value`, which is not a finite number.
  case badTimestamp(line: Int, value: String)
  /// Line `line` (1-based) names a user or an item `[PAD]`, the token of the padding id 0.
  case reservedToken(line: Int)
  /// The user and item count intervals removed every interaction.
  case emptyAfterFiltering
  /// No format was given and the file name does not imply one (see
  /// ``InteractionFileFormat/guess(for:)``).
  case unknownFormat(String)

  /// One line naming the file, column or line at fault, for command-line errors.
  public var description: String {
    switch self {
    case .fileNotFound(let p): return "no dataset file at \(p)"
    case .unreadable(let p): return "cannot read \(p)"
    case .missingColumn(let c, let f): return "\(f) has no column \(c)"
    case .malformedLine(let l, let d): return "line \(l): \(d)"
    case .badTimestamp(let l, let v): return "line \(l): timestamp \"\(v)\" is not a finite number"
    case .reservedToken(let l): return "line \(l): [PAD] is reserved for the padding id and cannot name a user or an item"
    case .emptyAfterFiltering: return "no interactions are left after filtering"
    case .unknownFormat(let p):
      return "cannot tell the format of \(p) (expected a RecBole .inter file, u.data, ratings.dat or .csv)"
    }
  }
}

/// The layouts of interaction files SSMRec reads.
public enum InteractionFileFormat: Equatable, Sendable {
  /// RecBole atomic `.inter`: tab-separated, typed header such as
  /// `user_id:token  item_id:token  rating:float  timestamp:float`.
  case atomic
  /// MovieLens-100K `u.data`: `user  item  rating  timestamp`, tab-separated, no header.
  case movieLens100K
  /// MovieLens-1M `ratings.dat`: `user::item::rating::timestamp`, no header.
  case movieLens1M
  /// Comma-separated with a header naming the user, item and timestamp columns.
  case csv(user: String, item: String, timestamp: String)

  /// The format implied by a file name.
  public static func guess(for url: URL) -> InteractionFileFormat? {
    let name = url.lastPathComponent.lowercased()
    if name.hasSuffix(".inter") { return .atomic }
    if name == "u.data" { return .movieLens100K }
    if name.hasSuffix(".dat") { return .movieLens1M }
    if name.hasSuffix(".csv") { return .csv(user: "user_id", item: "item_id", timestamp: "timestamp") }
    return nil
  }
}

/// An interval of interaction counts, as RecBole writes them: `[5,inf)`, `[5,200)`, `(0,10]`.
public struct CountInterval: Codable, Sendable, Equatable, CustomStringConvertible {
  /// The lower bound of the count.
  public var lower: Int
  /// The upper bound of the count; `nil` is RecBole's `inf` (no upper bound).
  public var upper: Int?
  /// Whether a count equal to `lower` is inside (`[`) or outside (`(`).
  public var lowerInclusive: Bool
  /// Whether a count equal to `upper` is inside (`]`) or outside (`)`); irrelevant when `upper`
  /// is `nil`.
  public var upperInclusive: Bool

  /// An interval from its bounds; the defaults give RecBole's usual lower bound `[lower,inf)`.
  public init(lower: Int, upper: Int? = nil, lowerInclusive: Bool = true, upperInclusive: Bool = false) {
    (self.lower, self.upper, self.lowerInclusive, self.upperInclusive) = (lower, upper, lowerInclusive, upperInclusive)
  }

  /// Parses RecBole's notation.
  public init?(parsing text: String) {
    let t = text.replacingOccurrences(of: " ", with: "")
    guard t.count >= 5, let first = t.first, let last = t.last, "[(".contains(first), "])".contains(last) else { return nil }
    let parts = t.dropFirst().dropLast().split(separator: ",", omittingEmptySubsequences: false)
    guard parts.count == 2, let low = Int(parts[0]) else { return nil }
    let upperText = parts[1].lowercased()
    let high: Int?
    if upperText == "inf" { high = nil } else if let h = Int(upperText) { high = h } else { return nil }
    self.init(lower: low, upper: high, lowerInclusive: first == "[", upperInclusive: last == "]")
  }

  /// Whether the count `n` lies inside the interval (filtering keeps the users and items whose
  /// interaction counts do).
  public func contains(_ n: Int) -> Bool {
    let aboveLower = lowerInclusive ? n >= lower : n > lower
    guard let upper else { return aboveLower }
    return aboveLower && (upperInclusive ? n <= upper : n < upper)
  }

  /// RecBole's notation, such as `[5,inf)` or `(0,10]`, which ``init(parsing:)`` reads back.
  public var description: String {
    "\(lowerInclusive ? "[" : "(")\(lower),\(upper.map(String.init) ?? "inf")\(upperInclusive ? "]" : ")")"
  }
}

/// Interactions after filtering and id remapping, in file order: users and items get ids
/// `1, 2, …` in order of first appearance in the filtered data (`pandas.factorize`), id 0 is
/// padding (Docs/Models.md §7.2).
public struct InteractionDataset: Sendable {
  /// `userTokens[id]` is the original token of user `id` (`"[PAD]"` at 0).
  public var userTokens: [String]
  /// `itemTokens[id]` is the original token of item `id` (`"[PAD]"` at 0).
  public var itemTokens: [String]
  /// One entry per interaction, file order.
  public var users: [Int32]
  /// The item id of each interaction, aligned with `users`.
  public var items: [Int32]
  /// The timestamp of each interaction in the file's units (usually Unix seconds), aligned with
  /// `users`; 0 when the file has no timestamp column.
  public var timestamps: [Double]
  /// Whether the file had a timestamp column. Without one (RecBole's Amazon files, say) each
  /// user's interactions are taken in file order, which the caller should say.
  public var hasTimestamps: Bool

  /// Users including the padding id (RecBole's count).
  public var userCount: Int { userTokens.count }
  /// Items including the padding id (`V`).
  public var itemCount: Int { itemTokens.count }
  /// Interactions kept after filtering.
  public var interactionCount: Int { users.count }

  /// Reads a file as a stream of lines (memory grows with the interactions kept, not the file
  /// size), drops rows without a user or item, filters by interaction counts to a fixed point
  /// and remaps ids.
  public init(
    contentsOf url: URL, format: InteractionFileFormat? = nil, userInterval: CountInterval? = nil,
    itemInterval: CountInterval? = nil
  ) throws {
    guard FileManager.default.fileExists(atPath: url.path) else { throw DatasetError.fileNotFound(url.path) }
    guard let format = format ?? InteractionFileFormat.guess(for: url) else { throw DatasetError.unknownFormat(url.path) }
    try self.init(format: format, name: url.lastPathComponent, userInterval: userInterval, itemInterval: itemInterval) {
      try Self.forEachLine(of: url, $0)
    }
  }

  /// Parses the bytes of an interaction file in `format` (`name` is the file name errors give),
  /// then filters and remaps as ``init(contentsOf:format:userInterval:itemInterval:)`` does.
  public init(
    bytes: [UInt8], format: InteractionFileFormat, name: String = "interactions", userInterval: CountInterval? = nil,
    itemInterval: CountInterval? = nil
  ) throws {
    try self.init(format: format, name: name, userInterval: userInterval, itemInterval: itemInterval) {
      try Self.forEachLine(in: bytes, $0)
    }
  }

  init(
    format: InteractionFileFormat, name: String, userInterval: CountInterval?, itemInterval: CountInterval?,
    lines forEachLine: ((Int, String) throws -> Void) throws -> Void
  ) throws {
    var userIDs: [String: Int32] = [:]
    var itemIDs: [String: Int32] = [:]
    var userNames: [String] = []
    var itemNames: [String] = []
    var users: [Int32] = []
    var items: [Int32] = []
    var times: [Double] = []
    func id(_ token: Substring, _ table: inout [String: Int32], _ names: inout [String]) -> Int32 {
      let key = String(token)
      if let existing = table[key] { return existing }
      let new = Int32(names.count)
      table[key] = new
      names.append(key)
      return new
    }
    var columns: (user: Int, item: Int, time: Int?) = (0, 1, 3)
    var separator: Character = "\t"
    var headerPending = false
    switch format {
    case .atomic: headerPending = true
    case .movieLens100K: columns = (0, 1, 3)
    case .movieLens1M: columns = (0, 1, 3)
    case .csv: (separator, headerPending) = (",", true)
    }
    try forEachLine { number, line in
      if line.isEmpty { return }
      let fields: [Substring]
      if format == .movieLens1M {
        fields = line.components(separatedBy: "::").map { Substring($0) }
      } else {
        fields = line.split(separator: separator, omittingEmptySubsequences: false)
      }
      if headerPending {
        headerPending = false
        let names = fields.map { $0.split(separator: ":").first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "" }
        func find(_ wanted: String) throws -> Int {
          guard let i = names.firstIndex(of: wanted) else { throw DatasetError.missingColumn(wanted, file: name) }
          return i
        }
        switch format {
        case .csv(let u, let i, let t): columns = (try find(u), try find(i), try find(t))
        default: columns = (try find("user_id"), try find("item_id"), names.firstIndex(of: "timestamp"))
        }
        return
      }
      let needed = Swift.max(columns.user, columns.item, columns.time ?? 0)
      guard fields.count > needed else {
        throw DatasetError.malformedLine(line: number, detail: "expected at least \(needed + 1) fields, found \(fields.count)")
      }
      let userToken = fields[columns.user].trimmingCharacters(in: .whitespaces)
      let itemToken = fields[columns.item].trimmingCharacters(in: .whitespaces)
      if userToken.isEmpty || itemToken.isEmpty { return }  // missing ids are dropped (Docs/Models.md §7.2)
      if userToken == Self.paddingToken || itemToken == Self.paddingToken { throw DatasetError.reservedToken(line: number) }
      var time = 0.0
      if let t = columns.time {
        let text = fields[t].trimmingCharacters(in: .whitespaces)
        // NaN and infinities would make the chronological sort inconsistent.
        guard let value = Double(text), value.isFinite else { throw DatasetError.badTimestamp(line: number, value: text) }
        time = value
      }
      users.append(id(Substring(userToken), &userIDs, &userNames))
      items.append(id(Substring(itemToken), &itemIDs, &itemNames))
      times.append(time)
    }
    if headerPending { throw DatasetError.malformedLine(line: 1, detail: "the file is empty") }
    let hasTimestamps = columns.time != nil
    // Interval filtering iterated to a fixed point, both sides judged on the same counts.
    var keep = [Bool](repeating: true, count: users.count)
    if userInterval != nil || itemInterval != nil {
      while true {
        var userCounts = [Int](repeating: 0, count: userNames.count)
        var itemCounts = [Int](repeating: 0, count: itemNames.count)
        for i in users.indices where keep[i] {
          userCounts[Int(users[i])] += 1
          itemCounts[Int(items[i])] += 1
        }
        let badUser = userCounts.map { $0 > 0 && !(userInterval?.contains($0) ?? true) }
        let badItem = itemCounts.map { $0 > 0 && !(itemInterval?.contains($0) ?? true) }
        var changed = false
        for i in users.indices where keep[i] && (badUser[Int(users[i])] || badItem[Int(items[i])]) {
          keep[i] = false
          changed = true
        }
        if !changed { break }
      }
    }
    // Remap to 1, 2, … in order of first appearance among the kept rows.
    var userMap = [Int32](repeating: -1, count: userNames.count)
    var itemMap = [Int32](repeating: -1, count: itemNames.count)
    var finalUsers = [Self.paddingToken]
    var finalItems = [Self.paddingToken]
    var outUsers: [Int32] = []
    var outItems: [Int32] = []
    var outTimes: [Double] = []
    for i in users.indices where keep[i] {
      let (u, it) = (Int(users[i]), Int(items[i]))
      if userMap[u] < 0 {
        userMap[u] = Int32(finalUsers.count)
        finalUsers.append(userNames[u])
      }
      if itemMap[it] < 0 {
        itemMap[it] = Int32(finalItems.count)
        finalItems.append(itemNames[it])
      }
      outUsers.append(userMap[u])
      outItems.append(itemMap[it])
      outTimes.append(times[i])
    }
    guard !outUsers.isEmpty else { throw DatasetError.emptyAfterFiltering }
    (self.userTokens, self.itemTokens, self.users, self.items, self.timestamps) = (
      finalUsers, finalItems, outUsers, outItems, outTimes
    )
    self.hasTimestamps = hasTimestamps
  }

  /// The token of the padding id 0 (RecBole's); a file may not use it for a user or an item.
  public static let paddingToken = "[PAD]"

  /// Calls `body` with each line (without its newline) and its 1-based number, reading the file
  /// in chunks.
  static func forEachLine(of url: URL, _ body: (Int, String) throws -> Void) throws {
    guard let file = fopen(url.path, "r") else { throw DatasetError.unreadable(url.path) }
    defer { fclose(file) }
    var buffer: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0
    defer { free(buffer) }
    var number = 0
    while true {
      let read = getline(&buffer, &capacity, file)
      if read < 0 { break }
      number += 1
      var line = String(cString: buffer!)
      // Scalars, not Characters: "\r\n" is one Character, equal to neither "\r" nor "\n".
      while let last = line.unicodeScalars.last, last == "\n" || last == "\r" { line.unicodeScalars.removeLast() }
      try body(number, line)
    }
  }

  /// Calls `body` with each line of `bytes` (split at newlines, a trailing carriage return
  /// removed, invalid UTF-8 repaired) and its 1-based number.
  static func forEachLine(in bytes: [UInt8], _ body: (Int, String) throws -> Void) throws {
    var number = 0
    var start = 0
    while start < bytes.count {
      let end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
      number += 1
      var line = String(decoding: bytes[start..<end], as: UTF8.self)
      while line.unicodeScalars.last == "\r" { line.unicodeScalars.removeLast() }
      try body(number, line)
      start = end + 1
    }
  }

  /// Counts and ratios as RecBole logs them.
  public struct Statistics: Codable, Sendable, Equatable {
    /// Users including the padding id (RecBole's count, as ``InteractionDataset/userCount``).
    public var users: Int
    /// Items including the padding id (`V`, as ``InteractionDataset/itemCount``).
    public var items: Int
    /// Interactions kept after filtering.
    public var interactions: Int
    /// Interactions per real user.
    public var averageLength: Double
    /// `1 − interactions / (real users · real items)`.
    public var sparsity: Double
  }

  /// The dataset's counts, average history length and sparsity, as RecBole logs them after loading.
  public var statistics: Statistics {
    let realUsers = userCount - 1
    let realItems = itemCount - 1
    return Statistics(
      users: userCount, items: itemCount, interactions: interactionCount,
      averageLength: Double(interactionCount) / Double(Swift.max(realUsers, 1)),
      sparsity: 1 - Double(interactionCount) / Double(Swift.max(realUsers * realItems, 1)))
  }
}
