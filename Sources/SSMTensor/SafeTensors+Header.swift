/// A strict reader of the JSON in a safetensors header.
///
/// Foundation's `JSONSerialization` cannot serve here: it keeps the last of two equal keys
/// without a word, turns `true` and `2.5` into numbers that `intValue` reads as 1 and 2, and
/// recurses without a depth limit. This reader keeps every integer exact, refuses duplicate keys
/// and nesting deeper than a safetensors header ever needs, and reports the first problem with
/// its byte offset.
struct HeaderJSON {
  /// A parsed JSON value; numbers keep their text so integers stay exact.
  indirect enum Value: Equatable {
    case object([(key: String, value: Value)])
    case array([Value])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    static func == (a: Value, b: Value) -> Bool {
      switch (a, b) {
      case (.object(let x), .object(let y)):
        return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
      case (.array(let x), .array(let y)): return x == y
      case (.string(let x), .string(let y)), (.number(let x), .number(let y)): return x == y
      case (.bool(let x), .bool(let y)): return x == y
      case (.null, .null): return true
      default: return false
      }
    }

    /// The value as a non-negative integer, if it is one written without a fraction or exponent
    /// and fits in `Int`.
    var nonNegativeInteger: Int? {
      guard case .number(let text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
        return nil
      }
      return Int(text)
    }

    /// A short name of the value's kind, for messages.
    var kind: String {
      switch self {
      case .object: return "an object"
      case .array: return "an array"
      case .string: return "a string"
      case .number(let t): return "the number \(t)"
      case .bool(let b): return "\(b)"
      case .null: return "null"
      }
    }
  }

  /// Nesting deeper than this is refused (a header needs 3: object, entry, shape list).
  static let maximumDepth = 16

  private let bytes: [UInt8]
  private var position: Int

  /// Parses one JSON value filling `bytes` (surrounding whitespace allowed).
  static func parse(_ bytes: ArraySlice<UInt8>) throws -> Value {
    var reader = HeaderJSON(bytes: Array(bytes), position: 0)
    reader.skipWhitespace()
    let value = try reader.value(depth: 0)
    reader.skipWhitespace()
    guard reader.position == reader.bytes.count else { throw reader.failure("unexpected text after the header object") }
    return value
  }

  private func failure(_ message: String) -> SafeTensorsError {
    .malformedHeader("\(message) at byte \(position) of the header")
  }

  private mutating func skipWhitespace() {
    while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
  }

  private mutating func value(depth: Int) throws -> Value {
    guard depth <= Self.maximumDepth else { throw failure("nesting deeper than \(Self.maximumDepth) levels") }
    guard position < bytes.count else { throw failure("unexpected end") }
    switch bytes[position] {
    case UInt8(ascii: "{"): return try object(depth: depth)
    case UInt8(ascii: "["): return try array(depth: depth)
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"):
      try literal("true")
      return .bool(true)
    case UInt8(ascii: "f"):
      try literal("false")
      return .bool(false)
    case UInt8(ascii: "n"):
      try literal("null")
      return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
    default: throw failure("unexpected character")
    }
  }

  private mutating func literal(_ word: String) throws {
    let w = Array(word.utf8)
    guard position + w.count <= bytes.count, Array(bytes[position..<position + w.count]) == w else {
      throw failure("unexpected character")
    }
    position += w.count
  }

  private mutating func expect(_ byte: UInt8, _ what: String) throws {
    skipWhitespace()
    guard position < bytes.count, bytes[position] == byte else { throw failure("expected \(what)") }
    position += 1
  }

  private mutating func object(depth: Int) throws -> Value {
    position += 1
    var members: [(key: String, value: Value)] = []
    var keys = Set<String>()
    skipWhitespace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
      position += 1
      return .object(members)
    }
    while true {
      skipWhitespace()
      guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a key") }
      let key = try string()
      guard keys.insert(key).inserted else { throw failure("duplicate key \"\(key)\"") }
      try expect(UInt8(ascii: ":"), "':'")
      skipWhitespace()
      members.append((key, try value(depth: depth + 1)))
      skipWhitespace()
      guard position < bytes.count else { throw failure("unexpected end") }
      if bytes[position] == UInt8(ascii: ",") {
        position += 1
        continue
      }
      try expect(UInt8(ascii: "}"), "',' or '}'")
      return .object(members)
    }
  }

  private mutating func array(depth: Int) throws -> Value {
    position += 1
    var elements: [Value] = []
    skipWhitespace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
      position += 1
      return .array(elements)
    }
    while true {
      skipWhitespace()
      elements.append(try value(depth: depth + 1))
      skipWhitespace()
      guard position < bytes.count else { throw failure("unexpected end") }
      if bytes[position] == UInt8(ascii: ",") {
        position += 1
        continue
      }
      try expect(UInt8(ascii: "]"), "',' or ']'")
      return .array(elements)
    }
  }

  /// A number's text, checked against JSON's grammar.
  private mutating func number() throws -> String {
    let start = position
    func digits() -> Int {
      let from = position
      while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 { position += 1 }
      return position - from
    }
    if bytes[position] == UInt8(ascii: "-") { position += 1 }
    let integerStart = position
    guard digits() > 0 else { throw failure("malformed number") }
    if bytes[integerStart] == UInt8(ascii: "0"), position - integerStart > 1 { throw failure("number with a leading zero") }
    if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
      position += 1
      guard digits() > 0 else { throw failure("malformed number") }
    }
    if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
      position += 1
      if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
      guard digits() > 0 else { throw failure("malformed number") }
    }
    return String(decoding: bytes[start..<position], as: UTF8.self)
  }

  private mutating func hexQuad() throws -> UInt32 {
    guard position + 4 <= bytes.count else { throw failure("truncated \\u escape") }
    var v: UInt32 = 0
    for _ in 0..<4 {
      let c = bytes[position]
      let digit: UInt8
      switch c {
      case 0x30...0x39: digit = c - 0x30
      case 0x41...0x46: digit = c - 0x41 + 10
      case 0x61...0x66: digit = c - 0x61 + 10
      default: throw failure("bad \\u escape")
      }
      v = v << 4 | UInt32(digit)
      position += 1
    }
    return v
  }

  /// A string's value, escapes resolved; the raw bytes must be valid UTF-8.
  private mutating func string() throws -> String {
    position += 1
    var out: [UInt8] = []
    while true {
      guard position < bytes.count else { throw failure("unterminated string") }
      let c = bytes[position]
      position += 1
      switch c {
      case UInt8(ascii: "\""):
        guard let text = String(validating: out, as: UTF8.self) else { throw failure("string is not valid UTF-8") }
        return text
      case UInt8(ascii: "\\"):
        guard position < bytes.count else { throw failure("unterminated string") }
        let e = bytes[position]
        position += 1
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
          var scalar = try hexQuad()
          if (0xD800..<0xDC00).contains(scalar) {
            guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
            else {
              throw failure("unpaired surrogate in \\u escape")
            }
            position += 2
            let low = try hexQuad()
            guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired surrogate in \\u escape") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let unicode = Unicode.Scalar(scalar) else { throw failure("invalid \\u escape") }
          out.append(contentsOf: Array(String(Character(unicode)).utf8))
        default: throw failure("unknown escape")
        }
      case 0x00..<0x20: throw failure("control character in a string")
      default: out.append(c)
      }
    }
  }
}
