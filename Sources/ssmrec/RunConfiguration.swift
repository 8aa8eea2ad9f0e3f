import ArgumentParser
import Foundation
import SSMLayers
import SSMRecommenders
import Yams

/// Every setting of a training run, as `ssmrec train` takes it: from its flags, from a
/// configuration file (`--config run.yaml` or `.json`, keys named like the long flags), or both
/// (flags win). A finished run writes its resolved configuration, every setting filled in, to
/// `config.json` in its output folder, so `ssmrec train --config OUTPUT/config.json` repeats it.
struct RunConfiguration: Codable, Equatable {
  var model: String?
  var data: String?
  var userInterval: String?
  var itemInterval: String?
  var epochs: Int?
  var batchSize: Int?
  var maxLength: Int?
  var seed: UInt64?
  var learningRate: Float?
  var stoppingStep: Int?
  var hiddenSize: Int?
  var layers: Int?
  var dropout: Float?
  var output: String?
  var objective: String?
  var loss: String?
  var negatives: Int?
  var proposal: String?
  var padded: Bool?
  var modelSettings: String?

  enum CodingKeys: String, CodingKey, CaseIterable {
    case model, data, epochs, seed, layers, dropout, output, objective, loss, negatives, proposal, padded
    case modelSettings = "model-settings"
    case userInterval = "user-interval"
    case itemInterval = "item-interval"
    case batchSize = "batch-size"
    case maxLength = "max-length"
    case learningRate = "learning-rate"
    case stoppingStep = "stopping-step"
    case hiddenSize = "hidden-size"
  }

  /// Reads a `.json`, `.yaml` or `.yml` file; a key that is not a setting is an error, so a
  /// misspelt one is never ignored.
  init(contentsOf path: String) throws {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
      throw ValidationError("cannot read the configuration \(path): \(error.localizedDescription)")
    }
    let isJSON = path.lowercased().hasSuffix(".json")
    guard isJSON || path.lowercased().hasSuffix(".yaml") || path.lowercased().hasSuffix(".yml") else {
      throw ValidationError("the configuration \(path) must be a .json, .yaml or .yml file")
    }
    let keys: [String]
    do {
      if isJSON {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
          throw ValidationError("the configuration \(path) is not a JSON object")
        }
        keys = Array(object.keys)
        self = try JSONDecoder().decode(RunConfiguration.self, from: Data(text.utf8))
      } else {
        guard let object = try Yams.load(yaml: text) as? [String: Any] else {
          throw ValidationError("the configuration \(path) is not a YAML mapping")
        }
        keys = Array(object.keys)
        self = try YAMLDecoder().decode(RunConfiguration.self, from: text)
      }
    } catch let error as ValidationError {
      throw error
    } catch {
      throw ValidationError("the configuration \(path) is not valid: \(Self.describe(error))")
    }
    let known = Set(CodingKeys.allCases.map(\.rawValue))
    if let unknown = keys.sorted().first(where: { !known.contains($0) }) {
      throw ValidationError("the configuration \(path) has an unknown setting \"\(unknown)\"")
    }
  }

  init() {}

  /// One line for a decoding error: the setting and what was wrong with it.
  static func describe(_ error: any Error) -> String {
    switch error as? DecodingError {
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
      let key = context.codingPath.map(\.stringValue).joined(separator: ".")
      return (key.isEmpty ? "" : "\"\(key)\": ") + context.debugDescription
    case .keyNotFound(let key, _): return "\"\(key.stringValue)\" is missing"
    default: return "\(error)"
    }
  }

  /// These settings, each replaced by `other`'s where `other` has one.
  func overridden(by other: RunConfiguration) -> RunConfiguration {
    var result = self
    result.model = other.model ?? model
    result.data = other.data ?? data
    result.userInterval = other.userInterval ?? userInterval
    result.itemInterval = other.itemInterval ?? itemInterval
    result.epochs = other.epochs ?? epochs
    result.batchSize = other.batchSize ?? batchSize
    result.maxLength = other.maxLength ?? maxLength
    result.seed = other.seed ?? seed
    result.learningRate = other.learningRate ?? learningRate
    result.stoppingStep = other.stoppingStep ?? stoppingStep
    result.hiddenSize = other.hiddenSize ?? hiddenSize
    result.layers = other.layers ?? layers
    result.dropout = other.dropout ?? dropout
    result.output = other.output ?? output
    result.objective = other.objective ?? objective
    result.loss = other.loss ?? loss
    result.negatives = other.negatives ?? negatives
    result.proposal = other.proposal ?? proposal
    result.padded = other.padded ?? padded
    result.modelSettings = other.modelSettings ?? modelSettings
    return result
  }

  /// The file named by `model-settings`, a JSON object or YAML mapping of model configuration
  /// keys, as JSON for ``ModelOverrides/settings``.
  func modelSettingsJSON() throws -> Data? {
    guard let path = modelSettings else { return nil }
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
      throw ValidationError("cannot read the model settings \(path): \(error.localizedDescription)")
    }
    let object: Any?
    if path.lowercased().hasSuffix(".json") {
      object = try? JSONSerialization.jsonObject(with: Data(text.utf8))
    } else if path.lowercased().hasSuffix(".yaml") || path.lowercased().hasSuffix(".yml") {
      object = try? Yams.load(yaml: text)
    } else {
      throw ValidationError("the model settings \(path) must be a .json, .yaml or .yml file")
    }
    guard let mapping = object as? [String: Any], JSONSerialization.isValidJSONObject(mapping) else {
      throw ValidationError("the model settings \(path) are not a JSON object or YAML mapping of settings")
    }
    return try JSONSerialization.data(withJSONObject: mapping, options: [.sortedKeys])
  }

  /// Throws `ValidationError` naming the first setting out of range (a run needs a model and data).
  func validate() throws {
    guard let model else { throw ValidationError("give --model (or \"model\" in the configuration)") }
    _ = try descriptor(named: model)
    guard data != nil else { throw ValidationError("give --data (or \"data\" in the configuration)") }
    for (name, value) in [("--user-interval", userInterval), ("--item-interval", itemInterval)] {
      if let value, CountInterval(parsing: value) == nil {
        throw ValidationError("\(name) \"\(value)\" is not an interval like \"[5,inf)\"")
      }
    }
    if let objective, TrainingObjective(rawValue: objective) == nil { throw ValidationError("--objective must be last or all") }
    if let loss, CatalogueLoss(rawValue: loss) == nil {
      throw ValidationError("--loss must be one of \(CatalogueLoss.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    if let proposal, NegativeProposal(rawValue: proposal) == nil {
      throw ValidationError("--proposal must be uniform or popularity")
    }
    if let negatives, !(1...(1 << 20)).contains(negatives) { throw ValidationError("--negatives must be in 1...1048576") }
    if let epochs, epochs <= 0 { throw ValidationError("--epochs must be positive") }
    if let batchSize, !(1...(1 << 24)).contains(batchSize) { throw ValidationError("--batch-size must be in 1...16777216") }
    if let maxLength, !(1...ConfigurationLimits.length).contains(maxLength) {
      throw ValidationError("--max-length must be in 1...\(ConfigurationLimits.length)")
    }
    if let hiddenSize, !(1...ConfigurationLimits.width).contains(hiddenSize) {
      throw ValidationError("--hidden-size must be in 1...\(ConfigurationLimits.width)")
    }
    if let layers, !(1...ConfigurationLimits.layers).contains(layers) {
      throw ValidationError("--layers must be in 1...\(ConfigurationLimits.layers)")
    }
    if let learningRate, !(learningRate > 0 && learningRate.isFinite) {
      throw ValidationError("--learning-rate must be positive and finite")
    }
    if let stoppingStep, stoppingStep < 0 { throw ValidationError("--stopping-step must be non-negative") }
    if let dropout, !(dropout >= 0 && dropout < 1) { throw ValidationError("--dropout must be in [0, 1)") }
    _ = try modelSettingsJSON()
  }
}
