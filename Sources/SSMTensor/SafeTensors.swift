import Foundation

/// Why a safetensors file could not be read or does not fit what was asked of it.
public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
  /// The file is shorter than the 8-byte header length.
  case truncatedPrefix(size: Int)
  /// The declared header length runs past the end of the file.
  case headerLargerThanFile(declared: UInt64, fileSize: Int)
  /// The header is not a JSON object of the expected form.
  case malformedHeader(String)
  /// A tensor's dtype is not one this reader converts.
  case unsupportedDType(tensor: String, dtype: String)
  /// A tensor's byte range is outside the data section or does not match its shape and dtype.
  case invalidOffsets(tensor: String, detail: String)
  /// The byte ranges of two tensors overlap, or leave part of the data section unused.
  case dataLayout(String)
  /// A tensor that was asked for is not in the file.
  case missingTensor(String)
  /// A tensor in the file that the reader did not expect.
  case unexpectedTensor(String)
  /// A tensor's shape differs from the expected one.
  case shapeMismatch(tensor: String, expected: Shape, found: Shape)
  /// A tensor has a floating-point dtype where integers were expected, or the reverse.
  case dtypeMismatch(tensor: String, expected: String, found: String)
  /// Reading or writing the file failed.
  case io(String)

  /// One line naming the tensor, sizes or dtypes at fault; for `.io`, the underlying message as is.
  public var description: String {
    switch self {
    case .truncatedPrefix(let size): return "safetensors file of \(size) bytes is too short to hold its header length"
    case .headerLargerThanFile(let declared, let size):
      return "safetensors header declares \(declared) bytes but the file has only \(size)"
    case .malformedHeader(let detail): return "malformed safetensors header: \(detail)"
    case .unsupportedDType(let t, let d): return "tensor \(t) has unsupported dtype \(d)"
    case .invalidOffsets(let t, let d): return "tensor \(t) has invalid data offsets: \(d)"
    case .dataLayout(let d): return "safetensors data section: \(d)"
    case .missingTensor(let t): return "tensor \(t) is missing"
    case .unexpectedTensor(let t): return "unexpected tensor \(t)"
    case .shapeMismatch(let t, let e, let f): return "tensor \(t) has shape \(f), expected \(e)"
    case .dtypeMismatch(let t, let e, let f): return "tensor \(t) has dtype \(f), expected \(e)"
    case .io(let detail): return detail
    }
  }
}

/// A safetensors file: an 8-byte little-endian header length, a JSON header mapping tensor names
/// to `{dtype, shape, data_offsets}` (plus an optional `__metadata__` string map), then the raw
/// little-endian tensor bytes.
///
/// Reading accepts F32, F64, F16 and BF16 (converted to `Float`) and I64, I32 (converted to
/// indices, or to `Float`); writing produces F32 and I64. Reading is strict, as the reference
/// implementation is: the header is JSON without duplicate keys, shapes and offsets are
/// non-negative integers (not `2.0`, not `true`), sizes are computed with overflow checks, and
/// the tensors' byte ranges tile the data section exactly, without overlap or unused bytes. Every
/// malformed input raises a ``SafeTensorsError``; nothing traps.
public struct SafeTensorsFile: Sendable {
  /// A tensor's entry in the header.
  public struct Entry: Sendable, Equatable {
    /// The dtype as written in the file (`F32`, `I64`, …).
    public var dtype: String
    /// The tensor's shape, from the header's `shape` list.
    public var shape: Shape
    /// Byte range within the data section.
    public var range: Range<Int>
  }

  /// The header's `__metadata__` map.
  public var metadata: [String: String]
  /// Every tensor's entry, by name.
  public var entries: [String: Entry]
  private let bytes: [UInt8]
  private let dataStart: Int

  static let elementSizes: [String: Int] = ["F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4]

  /// Reads and validates a file.
  public init(contentsOf url: URL) throws {
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), isFolder.boolValue {
      throw SafeTensorsError.io("\(url.path) is a folder, not a safetensors file")
    }
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw SafeTensorsError.io("cannot read \(url.path): \(error.localizedDescription)")
    }
    try self.init(bytes: [UInt8](data))
  }

  /// The largest header accepted, as in the reference implementation (100 MB).
  public static let maximumHeaderLength = 100_000_000

  /// Parses and validates the bytes of a file.
  public init(bytes: [UInt8]) throws {
    guard bytes.count >= 8 else { throw SafeTensorsError.truncatedPrefix(size: bytes.count) }
    var headerLength: UInt64 = 0
    for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
    guard headerLength <= UInt64(bytes.count - 8) else {
      throw SafeTensorsError.headerLargerThanFile(declared: headerLength, fileSize: bytes.count)
    }
    guard headerLength <= UInt64(Self.maximumHeaderLength) else {
      throw SafeTensorsError.malformedHeader("header of \(headerLength) bytes exceeds \(Self.maximumHeaderLength)")
    }
    let headerEnd = 8 + Int(headerLength)
    guard case .object(let members) = try HeaderJSON.parse(bytes[8..<headerEnd]) else {
      throw SafeTensorsError.malformedHeader("not a JSON object")
    }
    var metadata: [String: String] = [:]
    var entries: [String: Entry] = [:]
    let dataSize = bytes.count - headerEnd
    for (name, value) in members {
      if name == "__metadata__" {
        guard case .object(let map) = value else { throw SafeTensorsError.malformedHeader("__metadata__ is not an object") }
        for (k, v) in map {
          guard case .string(let text) = v else {
            throw SafeTensorsError.malformedHeader("__metadata__[\(k)] is \(v.kind), not a string")
          }
          metadata[k] = text
        }
        continue
      }
      entries[name] = try Self.entry(name, value, dataSize: dataSize)
    }
    try Self.checkLayout(entries, dataSize: dataSize)
    self.metadata = metadata
    self.entries = entries
    self.bytes = bytes
    self.dataStart = headerEnd
  }

  /// One tensor's header entry, with its size computed without overflow and its range checked
  /// against the data section.
  private static func entry(_ name: String, _ value: HeaderJSON.Value, dataSize: Int) throws -> Entry {
    guard case .object(let fields) = value else {
      throw SafeTensorsError.malformedHeader("entry \(name) is \(value.kind), not an object")
    }
    var dtype: String?
    var dims: [Int]?
    var bounds: [Int]?
    for (key, field) in fields {
      switch key {
      case "dtype":
        guard case .string(let d) = field else {
          throw SafeTensorsError.malformedHeader("entry \(name) has a dtype that is \(field.kind)")
        }
        dtype = d
      case "shape", "data_offsets":
        guard case .array(let list) = field else {
          throw SafeTensorsError.malformedHeader("entry \(name) has a \(key) that is \(field.kind)")
        }
        let integers = try list.map { element -> Int in
          guard let n = element.nonNegativeInteger else {
            throw SafeTensorsError.malformedHeader("entry \(name) has \(element.kind) in its \(key), not a non-negative integer")
          }
          return n
        }
        if key == "shape" { dims = integers } else { bounds = integers }
      default:
        throw SafeTensorsError.malformedHeader("entry \(name) has an unknown field \(key)")
      }
    }
    guard let dtype, let dims, let bounds else {
      throw SafeTensorsError.malformedHeader("entry \(name) lacks dtype, shape or data_offsets")
    }
    guard bounds.count == 2 else {
      throw SafeTensorsError.malformedHeader("entry \(name) has \(bounds.count) data offsets, not 2")
    }
    guard let size = elementSizes[dtype] else { throw SafeTensorsError.unsupportedDType(tensor: name, dtype: dtype) }
    var byteCount = size
    for d in dims {
      let (product, overflow) = byteCount.multipliedReportingOverflow(by: d)
      guard !overflow else {
        throw SafeTensorsError.invalidOffsets(tensor: name, detail: "the size of shape \(dims) of \(dtype) overflows")
      }
      byteCount = product
    }
    guard bounds[0] <= bounds[1], bounds[1] <= dataSize else {
      throw SafeTensorsError.invalidOffsets(tensor: name, detail: "\(bounds) outside a data section of \(dataSize) bytes")
    }
    guard bounds[1] - bounds[0] == byteCount else {
      throw SafeTensorsError.invalidOffsets(tensor: name, detail: "\(bounds[1] - bounds[0]) bytes for shape \(dims) of \(dtype)")
    }
    return Entry(dtype: dtype, shape: Shape(dims), range: bounds[0]..<bounds[1])
  }

  /// The ranges, in order, must tile `0..<dataSize`: no byte read by two tensors, none by no tensor.
  private static func checkLayout(_ entries: [String: Entry], dataSize: Int) throws {
    let ordered = entries.sorted {
      ($0.value.range.lowerBound, $0.value.range.upperBound, $0.key) < (
        $1.value.range.lowerBound, $1.value.range.upperBound, $1.key
      )
    }
    var end = 0
    var previous: String?
    // An empty range reads no byte, so it can sit anywhere inside the section.
    for (name, entry) in ordered where !entry.range.isEmpty {
      if entry.range.lowerBound < end {
        throw SafeTensorsError.dataLayout("tensors \(previous ?? "?") and \(name) share bytes \(entry.range.lowerBound)..<\(end)")
      }
      if entry.range.lowerBound > end {
        throw SafeTensorsError.dataLayout("bytes \(end)..<\(entry.range.lowerBound) belong to no tensor")
      }
      (end, previous) = (entry.range.upperBound, name)
    }
    if end != dataSize { throw SafeTensorsError.dataLayout("bytes \(end)..<\(dataSize) belong to no tensor") }
  }

  /// The tensor names, sorted.
  public var names: [String] { entries.keys.sorted() }

  /// A tensor converted to `Float`, optionally checked against an expected shape.
  public func tensor(_ name: String, shape expected: Shape? = nil) throws -> Tensor {
    let entry = try entry(name, shape: expected)
    let count = entry.shape.elementCount
    let base = dataStart + entry.range.lowerBound
    var values = [Float](repeating: 0, count: count)
    switch entry.dtype {
    case "F32": for i in 0..<count { values[i] = Float(bitPattern: readU32(base + 4 * i)) }
    case "F64": for i in 0..<count { values[i] = Float(Double(bitPattern: readU64(base + 8 * i))) }
    case "F16": for i in 0..<count { values[i] = Self.halfToFloat(readU16(base + 2 * i)) }
    case "BF16": for i in 0..<count { values[i] = Float(bitPattern: UInt32(readU16(base + 2 * i)) << 16) }
    case "I64": for i in 0..<count { values[i] = Float(Int64(bitPattern: readU64(base + 8 * i))) }
    case "I32": for i in 0..<count { values[i] = Float(Int32(bitPattern: readU32(base + 4 * i))) }
    default: throw SafeTensorsError.unsupportedDType(tensor: name, dtype: entry.dtype)
    }
    return Tensor(shape: entry.shape, scalars: values)
  }

  /// An integer tensor (I64 or I32) as indices.
  public func indices(_ name: String, shape expected: Shape? = nil) throws -> IndexTensor {
    let entry = try entry(name, shape: expected)
    let count = entry.shape.elementCount
    let base = dataStart + entry.range.lowerBound
    var values = [Int32](repeating: 0, count: count)
    switch entry.dtype {
    case "I64":
      for i in 0..<count {
        let v = Int64(bitPattern: readU64(base + 8 * i))
        guard let narrow = Int32(exactly: v) else {
          throw SafeTensorsError.invalidOffsets(tensor: name, detail: "index \(v) does not fit in 32 bits")
        }
        values[i] = narrow
      }
    case "I32": for i in 0..<count { values[i] = Int32(bitPattern: readU32(base + 4 * i)) }
    default: throw SafeTensorsError.dtypeMismatch(tensor: name, expected: "I64 or I32", found: entry.dtype)
    }
    return IndexTensor(shape: entry.shape, values: values)
  }

  /// The entry of `name`, checked against an expected shape.
  private func entry(_ name: String, shape expected: Shape?) throws -> Entry {
    guard let entry = entries[name] else { throw SafeTensorsError.missingTensor(name) }
    if let expected, expected != entry.shape {
      throw SafeTensorsError.shapeMismatch(tensor: name, expected: expected, found: entry.shape)
    }
    return entry
  }

  private func readU16(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
  private func readU32(_ i: Int) -> UInt32 {
    UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
  }
  private func readU64(_ i: Int) -> UInt64 { UInt64(readU32(i)) | UInt64(readU32(i + 4)) << 32 }

  /// IEEE half precision to single precision, subnormals and specials included.
  static func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31
    let exponent = Int((h >> 10) & 0x1f)
    let mantissa = UInt32(h & 0x3ff)
    if exponent == 0 {
      let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
      return sign == 0 ? magnitude : -magnitude
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13)) }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
  }
}

/// Builds a safetensors file from `Float` tensors (written as F32) and index tensors (I64).
public struct SafeTensorsWriter: Sendable {
  private var tensors: [(name: String, dtype: String, shape: Shape, bytes: [UInt8])] = []
  /// The `__metadata__` map to write.
  public var metadata: [String: String]

  /// Creates a writer with no tensors yet and an optional `__metadata__` map (omitted from the
  /// header when empty).
  public init(metadata: [String: String] = [:]) { self.metadata = metadata }

  /// Adds a tensor as F32.
  public mutating func add(_ name: String, _ tensor: Tensor) {
    var bytes = [UInt8]()
    bytes.reserveCapacity(tensor.elementCount * 4)
    for v in tensor.scalars { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
    tensors.append((name, "F32", tensor.shape, bytes))
  }

  /// Adds an index tensor as I64.
  public mutating func add(_ name: String, _ indices: IndexTensor) {
    var bytes = [UInt8]()
    bytes.reserveCapacity(indices.elementCount * 8)
    for v in indices.values { withUnsafeBytes(of: Int64(v).littleEndian) { bytes.append(contentsOf: $0) } }
    tensors.append((name, "I64", indices.shape, bytes))
  }

  /// The complete file.
  public func serialized() throws -> [UInt8] {
    var header: [String: Any] = [:]
    var offset = 0
    for t in tensors {
      header[t.name] = ["dtype": t.dtype, "shape": t.shape.dimensions, "data_offsets": [offset, offset + t.bytes.count]]
      offset += t.bytes.count
    }
    if !metadata.isEmpty { header["__metadata__"] = metadata }
    var json: [UInt8]
    do {
      json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
    } catch {
      throw SafeTensorsError.io("cannot encode the safetensors header: \(error)")
    }
    // Pad the header with spaces to a multiple of 8 so the data section stays aligned.
    while json.count % 8 != 0 { json.append(0x20) }
    var out = [UInt8]()
    out.reserveCapacity(8 + json.count + offset)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out += json
    for t in tensors { out += t.bytes }
    return out
  }

  /// Writes the file atomically: to a temporary file in the same folder, then renamed over the
  /// destination, so a crash never leaves a half-written file.
  public func write(to url: URL) throws {
    let bytes = try serialized()
    let folder = url.deletingLastPathComponent()
    let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UInt32.random(in: 0...UInt32.max))")
    do {
      try Data(bytes).write(to: temporary)
    } catch {
      try? FileManager.default.removeItem(at: temporary)
      throw SafeTensorsError.io("cannot write \(url.path): \(error.localizedDescription)")
    }
    // rename(2) replaces the destination atomically.
    if rename(temporary.path, url.path) != 0 {
      let reason = String(cString: strerror(errno))
      try? FileManager.default.removeItem(at: temporary)
      throw SafeTensorsError.io("cannot move the new file into place at \(url.path): \(reason)")
    }
  }
}
