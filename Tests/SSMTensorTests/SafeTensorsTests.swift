import Foundation
import SSMTestSupport
import XCTest

final class SafeTensorsTests: XCTestCase {
  /// A file built by hand: header JSON and raw data.
  func file(_ header: String, _ data: [UInt8]) -> [UInt8] {
    let json = [UInt8](header.utf8)
    var out = [UInt8]()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    return out + json + data
  }

  func bytes<T>(_ values: [T]) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v) { Array($0) } } }

  func testRoundTripWithMetadataAndAtomicWrite() throws {
    var writer = SafeTensorsWriter(metadata: ["model": "test", "config": "{\"a\": 1}"])
    let t = Tensor.random([3, 7], seed: 1)
    let ids = IndexTensor(rows: [[1, 2], [30000, -4]])
    writer.add("weight", t)
    writer.add("ids", ids)
    writer.add("scalar", Tensor(2.5))
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-st-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let url = folder.appendingPathComponent("model.safetensors")
    try writer.write(to: url)
    try writer.write(to: url)  // overwriting goes through the same rename
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["model.safetensors"])
    let read = try SafeTensorsFile(contentsOf: url)
    XCTAssertEqual(read.metadata, writer.metadata)
    XCTAssertEqual(try read.tensor("weight"), t)
    XCTAssertEqual(try read.indices("ids"), ids)
    XCTAssertEqual(try read.tensor("scalar").shape, [])
    XCTAssertEqual(read.entries["ids"]?.dtype, "I64")
  }

  func testReadsEveryDTypeItConverts() throws {
    let f64 = bytes([1.5, -2.25] as [Double])
    let f16 = bytes([0x3C00, 0xC100, 0x0001, 0x7C00] as [UInt16])  // 1, -2.5, smallest subnormal, +inf
    let bf16 = bytes([0x3F80, 0xC020] as [UInt16])  // 1, -2.5
    let i32 = bytes([7, -3] as [Int32])
    let data = f64 + f16 + bf16 + i32
    let header = """
      {"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
       "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [16, 24]},
       "c": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]},
       "d": {"dtype": "I32", "shape": [2], "data_offsets": [28, 36]}}
      """
    let st = try SafeTensorsFile(bytes: file(header, data))
    XCTAssertEqual(try st.tensor("a").scalars, [1.5, -2.25])
    XCTAssertEqual(try st.tensor("b").scalars, [1, -2.5, Float(sign: .plus, exponent: -24, significand: 1), .infinity])
    XCTAssertEqual(try st.tensor("c").scalars, [1, -2.5])
    XCTAssertEqual(try st.indices("d").values, [7, -3])
    XCTAssertEqual(try st.tensor("d").scalars, [7, -3])
  }

  func isMalformed(_ e: SafeTensorsError) -> Bool { if case .malformedHeader = e { return true } else { return false } }
  func isLayout(_ e: SafeTensorsError) -> Bool { if case .dataLayout = e { return true } else { return false } }

  func testMalformedFilesGiveTypedErrors() {
    let good = bytes([1, 2] as [Float])
    let cases: [(String, [UInt8], SafeTensorsError)] = [
      ("short", [1, 2, 3], .truncatedPrefix(size: 3)),
      ("header past end", [255, 0, 0, 0, 0, 0, 0, 0, 0x7b], .headerLargerThanFile(declared: 255, fileSize: 9)),
      ("not json", file("{nope", good), .malformedHeader("expected a key at byte 1 of the header")),
      ("not object", file("[1]", good), .malformedHeader("not a JSON object")),
      (
        "bad dtype", file(#"{"x": {"dtype": "Q8", "shape": [2], "data_offsets": [0, 8]}}"#, good),
        .unsupportedDType(tensor: "x", dtype: "Q8")
      ),
      (
        "past data", file(#"{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, good),
        .invalidOffsets(tensor: "x", detail: "[0, 16] outside a data section of 8 bytes")
      ),
      (
        "size mismatch", file(#"{"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, good),
        .invalidOffsets(tensor: "x", detail: "8 bytes for shape [3] of F32")
      ),
      ("missing fields", file(#"{"x": {"dtype": "F32"}}"#, good), .malformedHeader("entry x lacks dtype, shape or data_offsets")),
    ]
    for (name, data, expected) in cases {
      XCTAssertThrowsError(try SafeTensorsFile(bytes: data), name) { error in
        XCTAssertEqual(error as? SafeTensorsError, expected, name)
      }
    }
    let two = bytes([1, 2, 3, 4] as [Float])
    func entry(_ name: String, _ dtype: String = "F32", shape: String, offsets: String) -> String {
      #""\#(name)": {"dtype": "\#(dtype)", "shape": \#(shape), "data_offsets": \#(offsets)}"#
    }
    // Each of these is refused with a typed error; the case name says why.
    let refused: [(String, [UInt8], (SafeTensorsError) -> Bool)] = [
      (
        "shape product overflows", file("{" + entry("x", shape: "[4294967296, 4294967296, 16]", offsets: "[0, 16]") + "}", two),
        {
          if case .invalidOffsets = $0 { return true } else { return false }
        }
      ),
      (
        "shape entry beyond Int", file("{" + entry("x", shape: "[99999999999999999999999]", offsets: "[0, 16]") + "}", two),
        isMalformed
      ),
      ("fractional shape entry", file("{" + entry("x", shape: "[4.0]", offsets: "[0, 16]") + "}", two), isMalformed),
      ("exponent shape entry", file("{" + entry("x", shape: "[4e0]", offsets: "[0, 16]") + "}", two), isMalformed),
      ("boolean shape entry", file("{" + entry("x", shape: "[true]", offsets: "[0, 4]") + "}", two), isMalformed),
      ("negative shape entry", file("{" + entry("x", shape: "[-4]", offsets: "[0, 16]") + "}", two), isMalformed),
      ("fractional offset", file("{" + entry("x", shape: "[4]", offsets: "[0, 16.5]") + "}", two), isMalformed),
      ("three offsets", file("{" + entry("x", shape: "[4]", offsets: "[0, 8, 16]") + "}", two), isMalformed),
      (
        "duplicate tensor name",
        file("{" + entry("x", shape: "[2]", offsets: "[0, 8]") + ", " + entry("x", shape: "[2]", offsets: "[8, 16]") + "}", two),
        isMalformed
      ),
      (
        "overlapping ranges",
        file("{" + entry("x", shape: "[3]", offsets: "[0, 12]") + ", " + entry("y", shape: "[2]", offsets: "[8, 16]") + "}", two),
        isLayout
      ),
      (
        "aliased ranges",
        file("{" + entry("x", shape: "[4]", offsets: "[0, 16]") + ", " + entry("y", shape: "[4]", offsets: "[0, 16]") + "}", two),
        isLayout
      ),
      (
        "gap between ranges",
        file("{" + entry("x", shape: "[1]", offsets: "[0, 4]") + ", " + entry("y", shape: "[2]", offsets: "[8, 16]") + "}", two),
        isLayout
      ),
      ("unused trailing bytes", file("{" + entry("x", shape: "[2]", offsets: "[0, 8]") + "}", two), isLayout),
      (
        "unknown entry field", file(#"{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], "extra": 1}}"#, two),
        isMalformed
      ),
      ("metadata not strings", file(#"{"__metadata__": {"a": 1}}"#, []), isMalformed),
      (
        "nesting too deep",
        file("{\"x\": " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "}", []), isMalformed
      ),
      ("invalid UTF-8 name", file("{\"\u{FF}\": 1}", []).map { $0 == 0xC3 ? 0xFF : $0 }, isMalformed),
      ("trailing text", file("{} {}", []), isMalformed),
    ]
    for (name, data, matches) in refused {
      XCTAssertThrowsError(try SafeTensorsFile(bytes: data), name) { error in
        guard let e = error as? SafeTensorsError else { return XCTFail("\(name): \(error) is not a SafeTensorsError") }
        XCTAssertTrue(matches(e), "\(name): \(e)")
      }
    }
    // Empty tensors read no bytes and may sit anywhere; the others still tile the section.
    let empty = file(
      "{" + entry("x", shape: "[4]", offsets: "[0, 16]") + ", " + entry("e", shape: "[0, 3]", offsets: "[8, 8]") + "}", two)
    XCTAssertEqual(try SafeTensorsFile(bytes: empty).entries["e"]?.shape, [0, 3])
    // A file cut in half: its header now promises more data than there is.
    var writer = SafeTensorsWriter()
    writer.add("w", Tensor.random([64], seed: 1))
    let whole = try! writer.serialized()
    XCTAssertThrowsError(try SafeTensorsFile(bytes: Array(whole[0..<(whole.count / 2)])))
    let st = try! SafeTensorsFile(bytes: whole)
    XCTAssertThrowsError(try st.tensor("nope")) { XCTAssertEqual($0 as? SafeTensorsError, .missingTensor("nope")) }
    XCTAssertThrowsError(try st.tensor("w", shape: [8, 8])) {
      XCTAssertEqual($0 as? SafeTensorsError, .shapeMismatch(tensor: "w", expected: [8, 8], found: [64]))
    }
    XCTAssertThrowsError(try st.indices("w")) {
      XCTAssertEqual($0 as? SafeTensorsError, .dtypeMismatch(tensor: "w", expected: "I64 or I32", found: "F32"))
    }
    XCTAssertThrowsError(try SafeTensorsFile(contentsOf: URL(fileURLWithPath: "/nonexistent/x.safetensors")))
  }
}
