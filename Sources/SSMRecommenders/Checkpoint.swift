import Foundation
import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// Why a checkpoint could not be written, read or applied.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
  /// The file is not an SSMRec checkpoint (no or another `format` in its metadata).
  case notACheckpoint(String)
  /// The checkpoint holds another kind of model than the one asked for.
  case modelKindMismatch(expected: String, found: String)
  /// No registered model has the checkpoint's model kind.
  case unknownModelKind(String)
  /// The stored configuration does not decode or does not validate.
  case invalidConfiguration(String)
  /// The file itself is unreadable or malformed.
  case file(SafeTensorsError)
  /// The stored parameters do not fit the model.
  case parameters(ParameterLoadingError)
  /// The stored optimizer state does not fit the optimizer.
  case optimizer(String)

  /// One line saying what is wrong (format, model kind, configuration, file, parameters or optimizer state),
  /// with the underlying error's text.
  public var description: String {
    switch self {
    case .notACheckpoint(let d): return "not an SSMRec checkpoint: \(d)"
    case .modelKindMismatch(let e, let f): return "checkpoint holds a \(f) model, not \(e)"
    case .unknownModelKind(let k): return "checkpoint holds an unknown model kind \(k)"
    case .invalidConfiguration(let d): return "checkpoint configuration is invalid: \(d)"
    case .file(let e): return "checkpoint file: \(e)"
    case .parameters(let e): return "checkpoint parameters: \(e)"
    case .optimizer(let d): return "checkpoint optimizer state: \(d)"
    }
  }
}

/// Model checkpoints as safetensors files: parameters under their official names (F32), and in
/// `__metadata__` the format tag, the model kind, its configuration and the batching policy it
/// was trained with as JSON, plus optional optimizer state (its buffers as tensors named
/// `optimizer/<parameter>/<buffer>`) and any caller metadata (epoch, metrics). Files are written
/// atomically.
public enum Checkpoint {
  /// The `format` value of SSMRec checkpoints.
  public static let format = "ssmrec-checkpoint-1"

  /// Writes `model` (and optionally `optimizer`) to `url`.
  /// `batching` records how histories were cut and padded in training, so that evaluation and
  /// serving batch them the same way (``Contents/batching``).
  public static func save<Model: SequentialRecommender>(
    _ model: Model, optimizer: Optimizer? = nil, batching: BatchingPolicy? = nil, metadata extra: [String: String] = [:],
    to url: URL
  ) throws {
    var writer = SafeTensorsWriter()
    for (path, parameter) in model.namedParameters() { writer.add(path, parameter.value) }
    var metadata = extra
    metadata["format"] = format
    metadata["model"] = Model.kind
    do {
      metadata["config"] = String(decoding: try JSONEncoder().encode(model.configuration), as: UTF8.self)
      if let batching { metadata["batching"] = String(decoding: try JSONEncoder().encode(batching), as: UTF8.self) }
    } catch {
      throw CheckpointError.invalidConfiguration("cannot encode: \(error)")
    }
    if let optimizer {
      let state = optimizer.state()
      let header = OptimizerHeader(kind: state.kind, stepCount: state.stepCount, learningRate: state.learningRate)
      metadata["optimizer"] = String(decoding: try JSONEncoder().encode(header), as: UTF8.self)
      let shapes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.path, $0.parameter.shape) })
      for (name, buffers) in state.buffers.sorted(by: { $0.key < $1.key }) {
        for (buffer, values) in buffers.sorted(by: { $0.key < $1.key }) {
          writer.add("optimizer/\(name)/\(buffer)", Tensor(shape: shapes[name] ?? [values.count], scalars: values))
        }
      }
    }
    writer.metadata = metadata
    do { try writer.write(to: url) } catch let e as SafeTensorsError { throw CheckpointError.file(e) }
  }

  /// A checkpoint read from disk, not yet applied to a model.
  public struct Contents {
    /// The model kind recorded in the file.
    public let kind: String
    /// The configuration JSON.
    public let configuration: Data
    /// The whole `__metadata__` map.
    public let metadata: [String: String]
    let file: SafeTensorsFile

    /// Reads and checks the format tag.
    public init(contentsOf url: URL) throws {
      do { try self.init(file: try SafeTensorsFile(contentsOf: url)) } catch let e as SafeTensorsError {
        throw CheckpointError.file(e)
      }
    }

    /// Parses the bytes of a checkpoint file and checks the format tag.
    public init(bytes: [UInt8]) throws {
      do { try self.init(file: try SafeTensorsFile(bytes: bytes)) } catch let e as SafeTensorsError {
        throw CheckpointError.file(e)
      }
    }

    init(file: SafeTensorsFile) throws {
      self.file = file
      metadata = file.metadata
      guard metadata["format"] == Checkpoint.format else {
        throw CheckpointError.notACheckpoint("format is \(metadata["format"] ?? "missing")")
      }
      guard let kind = metadata["model"], let config = metadata["config"] else {
        throw CheckpointError.notACheckpoint("model kind or configuration missing")
      }
      self.kind = kind
      self.configuration = Data(config.utf8)
      if let text = metadata["batching"] {
        do { batching = try JSONDecoder().decode(BatchingPolicy.self, from: Data(text.utf8)) } catch {
          throw CheckpointError.invalidConfiguration("batching policy does not decode: \(error)")
        }
        do { try batching!.validate() } catch { throw CheckpointError.invalidConfiguration("batching policy: \(error)") }
      } else {
        batching = nil
      }
    }

    /// The batching policy the model was trained with; `nil` for a checkpoint written without
    /// one (take the model's ``SequentialRecommender/batching(maximumLength:)``).
    public let batching: BatchingPolicy?

    /// How to batch histories for `model` (the model this checkpoint holds): the model's policy
    /// at the maximum length the checkpoint recorded, or at `maximumLength` when the caller
    /// overrides it, or, for a checkpoint that records none, at the registered model's official
    /// maximum length. The model always has the last word, so a recorded policy cannot take a
    /// SASRec past its position table or a prefix-flip SIGMA off its window.
    public func batching(
      for model: any SequentialRecommender, overriding maximumLength: Int? = nil, registry: ModelRegistry = .shared
    ) -> BatchingPolicy {
      if let maximumLength { return model.batching(maximumLength: maximumLength) }
      if let batching { return model.batching(maximumLength: batching.maximumLength) }
      let official = (try? registry.descriptor(named: kind))?.defaultTraining.maximumLength
      return model.batching(maximumLength: official)
    }

    /// The shapes of the stored model parameters (optimizer buffers excluded), by name.
    public var storedShapes: [String: Shape] {
      file.entries.filter { !$0.key.hasPrefix("optimizer/") }.mapValues(\.shape)
    }

    /// The stored configuration, decoded and validated as the configuration of `Model`.
    public func configuration<Model: SequentialRecommender>(for model: Model.Type) throws -> Model.Configuration {
      guard kind == Model.kind else { throw CheckpointError.modelKindMismatch(expected: Model.kind, found: kind) }
      do { return try JSONDecoder().decode(Model.Configuration.self, from: configuration) } catch {
        throw CheckpointError.invalidConfiguration("\(error)")
      }
    }

    /// The stored model parameters by name.
    public func parameters() throws -> [String: Tensor] {
      var values: [String: Tensor] = [:]
      do {
        for name in file.names where !name.hasPrefix("optimizer/") { values[name] = try file.tensor(name) }
      } catch let e as SafeTensorsError { throw CheckpointError.file(e) }
      return values
    }

    /// Loads the parameters into `model` (same kind, same names and shapes; nothing changes on error).
    public func apply<Model: SequentialRecommender>(to model: Model) throws {
      guard kind == Model.kind else { throw CheckpointError.modelKindMismatch(expected: Model.kind, found: kind) }
      let values = try parameters()
      do { try model.loadParameters(values) } catch let e as ParameterLoadingError { throw CheckpointError.parameters(e) }
    }

    /// Restores the optimizer state saved with the model, if any; returns whether there was one.
    @discardableResult
    public func restore(_ optimizer: Optimizer) throws -> Bool {
      guard let text = metadata["optimizer"] else { return false }
      let header: OptimizerHeader
      do { header = try JSONDecoder().decode(OptimizerHeader.self, from: Data(text.utf8)) } catch {
        throw CheckpointError.optimizer("header does not decode")
      }
      var buffers: [String: [String: [Float]]] = [:]
      for name in file.names where name.hasPrefix("optimizer/") {
        let parts = name.split(separator: "/", maxSplits: 2).map(String.init)
        guard parts.count == 3 else { throw CheckpointError.optimizer("bad buffer name \(name)") }
        do { buffers[parts[1], default: [:]][parts[2]] = try file.tensor(name).scalars } catch let e as SafeTensorsError {
          throw CheckpointError.file(e)
        }
      }
      do {
        try optimizer.load(
          OptimizerState(kind: header.kind, stepCount: header.stepCount, learningRate: header.learningRate, buffers: buffers))
      } catch { throw CheckpointError.optimizer("\(error)") }
      return true
    }
  }

  /// Builds the model a checkpoint holds, through the registered descriptor of its kind, and
  /// loads its parameters.
  public static func loadModel(from url: URL, registry: ModelRegistry = .shared) throws -> any SequentialRecommender {
    try loadModel(from: try Contents(contentsOf: url), registry: registry)
  }

  /// Builds the model of a checkpoint already read and loads its parameters.
  public static func loadModel(from contents: Contents, registry: ModelRegistry = .shared) throws -> any SequentialRecommender {
    guard let descriptor = try? registry.descriptor(named: contents.kind) else {
      throw CheckpointError.unknownModelKind(contents.kind)
    }
    return try descriptor.loadModel(from: contents)
  }

  struct OptimizerHeader: Codable {
    var kind: String
    var stepCount: Int
    var learningRate: Float
  }
}
