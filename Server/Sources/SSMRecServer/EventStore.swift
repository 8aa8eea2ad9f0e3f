import Foundation
import GRDB

/// The events, the server's source of truth: one SQLite database in WAL mode, each request's
/// events written in one transaction that is durable before the request is answered.
final class EventStore: Sendable {
  /// How hard a commit waits for the disk.
  enum Durability: String, CaseIterable, Sendable {
    /// `synchronous = FULL`: a commit survives the process being killed and the machine losing
    /// power.
    case full
    /// `synchronous = NORMAL`: a commit survives the process being killed (SIGKILL included);
    /// the last commits may be lost if the machine loses power.
    case normal
  }

  private let pool: DatabasePool

  /// Opens (creating if needed) the database at `path`.
  init(path: String, durability: Durability) throws {
    var configuration = Configuration()
    configuration.busyMode = .timeout(10)
    pool = try DatabasePool(path: path, configuration: configuration)
    // GRDB sets NORMAL when it turns WAL on; the level can only change outside a transaction.
    try pool.writeWithoutTransaction { db in
      try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
    }
    var migrator = DatabaseMigrator()
    migrator.registerMigration("events") { db in
      try db.execute(
        sql: """
          CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            item TEXT NOT NULL
          );
          CREATE INDEX events_by_user ON events (user, id);
          """)
    }
    try migrator.migrate(pool)
  }

  /// Stores `items` (tokens, oldest first) after the user's earlier events, in one transaction;
  /// returns the user's number of events.
  func append(user: String, items: [String]) throws -> Int {
    try pool.write { db in
      let statement = try db.cachedStatement(sql: "INSERT INTO events (user, item) VALUES (?, ?)")
      for item in items { try statement.execute(arguments: [user, item]) }
      return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events WHERE user = ?", arguments: [user]) ?? 0
    }
  }

  /// The user's events in the order they were stored (none for an unknown user).
  func items(of user: String) throws -> [String] {
    try pool.read { db in
      try String.fetchAll(db, sql: "SELECT item FROM events WHERE user = ? ORDER BY id", arguments: [user])
    }
  }

  /// The number of users with events.
  func userCount() throws -> Int {
    try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(DISTINCT user) FROM events") ?? 0 }
  }
}
