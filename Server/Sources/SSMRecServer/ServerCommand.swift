import ArgumentParser
import Foundation
import Hummingbird
import Logging
import SSMRecommenders

@main
struct ServerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ssmrec-server",
    abstract: "Serve a checkpoint's recommendations over HTTP, with every event stored in SQLite.",
    discussion: "The routes and their answers are in Docs/Serving.md.")

  @Option(help: "A checkpoint written by `ssmrec train`.") var checkpoint: String
  @Option(help: "The interaction file (or RecBole folder) the checkpoint was trained on: it names the items.") var data: String
  @Option(help: "Keep users whose interaction count is in this interval, as in training, e.g. \"[5,inf)\".") var userInterval:
    String?
  @Option(help: "Keep items whose interaction count is in this interval, as in training.") var itemInterval: String?
  @Option(help: "The SQLite database of events (created if missing).") var database: String
  @Option(help: "The address to listen on.") var host = "127.0.0.1"
  @Option(help: "The port to listen on (0: any free port, printed at start).") var port = 8080
  @Option(help: "Users whose streams are kept in memory; others are rebuilt from the database.") var cachedUsers = 10_000
  @Option(help: "Past the training window: exact (what `ssmrec evaluate` computes) or unbounded (recurrent models).")
  var window = "exact"
  @Option(help: "full (a commit survives power loss) or normal (it survives the process being killed).") var durability =
    "full"
  @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.") var logLevel = "info"

  func validate() throws {
    guard StreamingWindow(rawValue: window) != nil else { throw ValidationError("--window must be exact or unbounded") }
    guard EventStore.Durability(rawValue: durability) != nil else { throw ValidationError("--durability must be full or normal") }
    guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not a level") }
    guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
    guard cachedUsers >= 1 else { throw ValidationError("--cached-users must be positive") }
    for (name, value) in [("--user-interval", userInterval), ("--item-interval", itemInterval)] {
      if let value, CountInterval(parsing: value) == nil { throw ValidationError("\(name) \"\(value)\" is not an interval") }
    }
  }

  func run() async throws {
    var logger = Logger(label: "ssmrec-server")
    logger.logLevel = Logger.Level(rawValue: logLevel)!
    let service: RecommendationService
    do {
      let contents = try Checkpoint.Contents(contentsOf: URL(fileURLWithPath: checkpoint))
      let model = try Checkpoint.loadModel(from: contents)
      let dataset = try InteractionDataset(
        contentsOf: try interactionFile(data), userInterval: userInterval.flatMap(CountInterval.init(parsing:)),
        itemInterval: itemInterval.flatMap(CountInterval.init(parsing:)))
      guard dataset.itemCount == model.itemCount else {
        throw ValidationError("the checkpoint scores \(model.itemCount) item ids but the dataset has \(dataset.itemCount)")
      }
      let store = try EventStore(path: database, durability: EventStore.Durability(rawValue: durability)!)
      service = try RecommendationService(
        model: model, batching: contents.batching(for: model), window: StreamingWindow(rawValue: window)!,
        itemTokens: dataset.itemTokens, store: store, cachedUsers: cachedUsers, metrics: ServerMetrics())
      let users = try store.userCount()
      logger.info(
        "\(service.modelKind): \(dataset.itemCount - 1) items, streaming by \(service.streaming); \(users) users stored in \(database)"
      )
    } catch let error as ValidationError {
      throw error
    } catch {
      throw ValidationError("\(error)")
    }
    let app = Application(
      router: makeRouter(service: service), configuration: .init(address: .hostname(host, port: port)),
      onServerRunning: { channel in
        // One line on standard output that scripts wait for, with the port actually bound.
        FileHandle.standardOutput.write(Data("listening on \(channel.localAddress?.port ?? port)\n".utf8))
      }, logger: logger)
    try await app.runService()
  }
}

/// The interaction file a path names: the file itself, or a RecBole folder's `NAME.inter`.
func interactionFile(_ path: String) throws -> URL {
  let url = URL(fileURLWithPath: path)
  var isFolder: ObjCBool = false
  guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else {
    throw DatasetError.fileNotFound(url.path)
  }
  return isFolder.boolValue ? url.appendingPathComponent(url.lastPathComponent + ".inter") : url
}
