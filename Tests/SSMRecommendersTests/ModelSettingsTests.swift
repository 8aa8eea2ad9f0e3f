import Foundation
import SSMLayers
import SSMRecommenders
import XCTest

/// Model settings from a file: any configuration key over the official configuration, the
/// flags over them, and a typed error for anything that does not make a configuration.
final class ModelSettingsTests: XCTestCase {
  func sasrec(_ json: String, _ overrides: ModelOverrides = .init()) throws -> SASRec.Configuration {
    var o = overrides
    o.settings = Data(json.utf8)
    let model = try ModelRegistry.shared.descriptor(named: "sasrec").makeModel(itemCount: 40, overrides: o, seed: 1)
    return try XCTUnwrap(model as? SASRec).configuration
  }

  func testSettingsChangeTheirKeysAndTheFlagsWin() throws {
    let official = SASRec.Configuration(itemCount: 40)
    let c = try sasrec(#"{"heads": 8, "hiddenDropout": 0.2, "innerSize": 128}"#)
    XCTAssertEqual(c.heads, 8)
    XCTAssertEqual(c.hiddenDropout, 0.2)
    XCTAssertEqual(c.innerSize, 128)
    XCTAssertEqual(c.attentionDropout, official.attentionDropout)
    XCTAssertEqual(c.layers, official.layers)
    // --dropout sets both dropouts and wins over the file; --hidden-size sets the inner width too.
    let flagged = try sasrec(#"{"heads": 8, "hiddenDropout": 0.2}"#, .init(hiddenSize: 32, dropout: 0.3))
    XCTAssertEqual(flagged.heads, 8)
    XCTAssertEqual(flagged.hiddenDropout, 0.3)
    XCTAssertEqual(flagged.attentionDropout, 0.3)
    XCTAssertEqual(flagged.hiddenSize, 32)
    XCTAssertEqual(flagged.innerSize, 128)
    // A run's whole model-configuration.json is a valid settings file.
    let whole = try JSONEncoder().encode(c)
    XCTAssertEqual(try sasrec(String(decoding: whole, as: UTF8.self)), c)
  }

  func testSettingsThatMakeNoConfigurationAreTypedErrors() {
    for (json, expected) in [
      (#"{"headz": 8}"#, "no setting \"headz\""),
      (#"{"heads": "eight"}"#, "\"heads\""),
      (#"{"itemCount": 7}"#, "itemCount 7"),
      (#"[1, 2]"#, "not a JSON object"),
      (#"{"heads": 3}"#, "heads"),
    ] {
      XCTAssertThrowsError(try sasrec(json), json) { error in
        guard case ConfigurationError.invalid(let message) = error else { return XCTFail("\(json): \(error)") }
        XCTAssertTrue(message.contains(expected), "\(json): \(message)")
      }
    }
  }
}
