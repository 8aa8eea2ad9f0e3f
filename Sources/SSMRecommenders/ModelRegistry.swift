import Foundation
import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// Hyperparameter overrides a tool may give on its command line; each model descriptor decides
/// what they mean for its configuration.
public struct ModelOverrides: Sendable, Equatable {
  /// Model width D; the built-in models also set the feed-forward inner width to 4·D (GRU4Rec:
  /// the GRU width only).
  public var hiddenSize: Int?
  /// Number of layers.
  public var layers: Int?
  /// Dropout probability.
  public var dropout: Float?
  /// The run's maximum history length, for models whose configuration depends on it (SASRec's
  /// position table, SIGMA's flip prefix).
  public var maximumLength: Int?
  /// A JSON object of the model's configuration keys (any of them: SASRec's `heads`, SIGMA's
  /// `flipPrefix`, …), set over the official configuration before ``hiddenSize``, ``layers``
  /// and ``dropout`` are applied, so those win. A run's `model-configuration.json` is such an
  /// object; an `itemCount` in it must match the catalogue.
  public var settings: Data?

  /// Overrides of the given settings; `nil` keeps the model's official value.
  public init(
    hiddenSize: Int? = nil, layers: Int? = nil, dropout: Float? = nil, maximumLength: Int? = nil, settings: Data? = nil
  ) {
    (self.hiddenSize, self.layers, self.dropout, self.maximumLength) = (hiddenSize, layers, dropout, maximumLength)
    self.settings = settings
  }

  /// `configure`'s configuration with ``settings`` set over it and the other overrides over
  /// those: the official configuration, then the settings, then what `configure` changes for
  /// the flags.
  /// - Throws: `ConfigurationError.invalid` for settings that are not a JSON object, name a key
  ///   the configuration does not have, give a value of the wrong type or another `itemCount`.
  func configuration<C: Codable>(itemCount: Int, _ configure: (Int, ModelOverrides) throws -> C) throws -> C {
    guard let settings else { return try configure(itemCount, self) }
    func object(_ c: C) throws -> [String: Any] {
      try JSONSerialization.jsonObject(with: try JSONEncoder().encode(c)) as? [String: Any] ?? [:]
    }
    let official = try object(try configure(itemCount, ModelOverrides(maximumLength: maximumLength)))
    var flagsOnly = self
    flagsOnly.settings = nil
    let flagged = try object(try configure(itemCount, flagsOnly))
    guard let given = try? JSONSerialization.jsonObject(with: settings) as? [String: Any] else {
      throw ConfigurationError.invalid("the model settings are not a JSON object")
    }
    var merged = official
    for (key, value) in given.sorted(by: { $0.key < $1.key }) {
      guard official[key] != nil else {
        throw ConfigurationError.invalid(
          "the model has no setting \"\(key)\" (its settings: \(official.keys.sorted().joined(separator: ", ")))")
      }
      if key == "itemCount", (value as? NSNumber)?.intValue != itemCount {
        throw ConfigurationError.invalid("the model settings give itemCount \(value), the data has \(itemCount) item ids")
      }
      merged[key] = value
    }
    for (key, value) in flagged where !((official[key] as? NSObject)?.isEqual(value) ?? false) { merged[key] = value }
    do {
      return try JSONDecoder().decode(C.self, from: try JSONSerialization.data(withJSONObject: merged))
    } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
      throw ConfigurationError.invalid(
        "model setting \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\": \(context.debugDescription)")
    } catch {
      throw ConfigurationError.invalid("the model settings do not make a configuration: \(error)")
    }
  }
}

/// Everything a tool needs to know to offer a recommender by name: its checkpoint kind, its
/// official training settings, how to build it from a configuration (fresh or from a checkpoint)
/// and how command-line overrides change its configuration.
///
///     try ModelRegistry.shared.register(ModelDescriptor(MeanPooling.self, summary: "mean of the history") { items, _ in
///       MeanPooling.Configuration(itemCount: items)
///     } build: { configuration, seed in
///       MeanPooling(configuration: configuration, seed: seed)
///     })
public struct ModelDescriptor: Sendable {
  /// The model's name on the command line and its checkpoints' `model` tag (`Model.kind`).
  public let name: String
  /// One line saying what the model is.
  public let summary: String
  /// The configuration type's name, for messages and listings.
  public let configurationType: String
  /// The official training settings (epochs, batch size, seed, maximum length).
  public let defaultTraining: TrainingConfiguration
  private let makeFresh: @Sendable (Int, ModelOverrides, UInt64) throws -> any SequentialRecommender
  private let makeFromCheckpoint: @Sendable (Checkpoint.Contents) throws -> any SequentialRecommender

  /// Describes `Model`: `configure` gives its configuration for a catalogue of `itemCount` ids
  /// under the overrides, `build` constructs it from a configuration and a seed.
  public init<Model: SequentialRecommender>(
    _ type: Model.Type, summary: String, defaultTraining: TrainingConfiguration = TrainingConfiguration(),
    configure: @escaping @Sendable (_ itemCount: Int, _ overrides: ModelOverrides) throws -> Model.Configuration,
    build: @escaping @Sendable (_ configuration: Model.Configuration, _ seed: UInt64) throws -> Model
  ) {
    name = Model.kind
    self.summary = summary
    configurationType = String(describing: Model.Configuration.self)
    self.defaultTraining = defaultTraining
    makeFresh = { itemCount, overrides, seed in
      try build(try overrides.configuration(itemCount: itemCount, configure), seed)
    }
    makeFromCheckpoint = { contents in
      let configuration = try contents.configuration(for: Model.self)
      try Model.checkConfiguration(configuration, storedShapes: contents.storedShapes)
      let model: Model
      do { model = try build(configuration, 0) } catch let e as ConfigurationError {
        throw CheckpointError.invalidConfiguration("\(e)")
      }
      try contents.apply(to: model)
      return model
    }
  }

  /// A freshly initialised model for `itemCount` item ids (padding included).
  public func makeModel(itemCount: Int, overrides: ModelOverrides = .init(), seed: UInt64) throws -> any SequentialRecommender {
    try makeFresh(itemCount, overrides, seed)
  }

  /// The model a checkpoint of this kind holds, its parameters loaded.
  public func loadModel(from contents: Checkpoint.Contents) throws -> any SequentialRecommender {
    try makeFromCheckpoint(contents)
  }
}

/// Why a model could not be registered or found.
public enum ModelRegistryError: Error, Equatable, CustomStringConvertible {
  /// Another model is registered under the name.
  case duplicateName(String)
  /// No model is registered under the name; `known` lists those that are.
  case unknownModel(String, known: [String])

  /// One line naming the model.
  public var description: String {
    switch self {
    case .duplicateName(let n): return "a model named \(n) is already registered"
    case .unknownModel(let n, let known): return "unknown model \(n) (known: \(known.joined(separator: ", ")))"
    }
  }
}

/// The models a tool can offer by name and load from checkpoints: the built-in five, and any a
/// package registers. The `ssmrec` command, `Checkpoint.loadModel(from:registry:)` and the
/// examples all go through ``shared``.
public final class ModelRegistry: @unchecked Sendable {
  /// The registry of the process, holding the built-in models from the start.
  public static let shared = ModelRegistry(BuiltInModels.descriptors)

  private let lock = NSLock()
  private var descriptors: [ModelDescriptor]

  /// A registry holding `descriptors` (their names must differ).
  public init(_ descriptors: [ModelDescriptor] = []) {
    precondition(Set(descriptors.map(\.name)).count == descriptors.count, "ModelRegistry: duplicate model names")
    self.descriptors = descriptors
  }

  /// Adds a model.
  /// - Throws: ``ModelRegistryError/duplicateName(_:)`` if its name is taken.
  public func register(_ descriptor: ModelDescriptor) throws {
    lock.lock()
    defer { lock.unlock() }
    guard !descriptors.contains(where: { $0.name == descriptor.name }) else {
      throw ModelRegistryError.duplicateName(descriptor.name)
    }
    descriptors.append(descriptor)
  }

  /// Every registered model, built-in ones first, in registration order.
  public var all: [ModelDescriptor] {
    lock.lock()
    defer { lock.unlock() }
    return descriptors
  }

  /// The registered names, in registration order.
  public var names: [String] { all.map(\.name) }

  /// The model registered under `name`.
  /// - Throws: ``ModelRegistryError/unknownModel(_:known:)``.
  public func descriptor(named name: String) throws -> ModelDescriptor {
    let all = self.all
    guard let found = all.first(where: { $0.name == name }) else {
      throw ModelRegistryError.unknownModel(name, known: all.map(\.name))
    }
    return found
  }
}
