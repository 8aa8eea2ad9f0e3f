import Foundation
import Hummingbird
import SSMRecommenders

/// The request context: bodies above 64 KiB are refused with 413 before they are read whole.
struct ServerContext: RequestContext {
  var coreContext: CoreRequestContextStorage
  init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
  var maxUploadSize: Int { 64 * 1024 }
}

/// An item given as a JSON string or integer: the dataset's token either way.
struct ItemToken: Decodable {
  var token: String

  init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if let number = try? container.decode(Int.self) {
      token = String(number)
    } else {
      token = try container.decode(String.self)
    }
  }
}

struct EventsRequest: Decodable {
  var items: [ItemToken]
}

struct HistoryRequest: Decodable {
  var history: [ItemToken]
  var k: Int?
  var exclude_seen: Bool?
}

struct LengthAnswer: ResponseEncodable {
  var user: String
  var length: Int
}

struct RecommendationAnswer: ResponseEncodable {
  var user: String?
  var items: [String]
  /// `null` for a score that is not a number (a diverged model), which JSON cannot carry.
  var scores: [Float?]
}

struct HealthAnswer: ResponseEncodable {
  var status: String
  var model: String
  var items: Int
  var streaming: String
}

struct ErrorAnswer: Encodable {
  var error: String
}

/// Every failure as `{"error": "…"}` with its status: the service's own errors, Hummingbird's
/// (a malformed body, a body too large, an unknown route) and anything unexpected (a 500,
/// logged). Also times every request for `/metrics`.
struct ErrorsAndMetricsMiddleware: RouterMiddleware {
  typealias Context = ServerContext
  let metrics: ServerMetrics

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
    let start = ContinuousClock.now
    let response: Response
    do {
      response = try await next(request, context)
    } catch let error as RequestError {
      if error.status >= 500 { context.logger.error("\(request.method) \(request.uri.path): \(error.message)") }
      response = try Self.errorResponse(error.status, error.message, request, context)
    } catch let error as HTTPError {
      let message = error.body.flatMap(Self.decodedMessage) ?? error.status.reasonPhrase
      response = try Self.errorResponse(error.status.code, message, request, context)
    } catch let error as any HTTPResponseError {
      let message = error.status == .contentTooLarge ? "the body is larger than 64 KiB" : error.status.reasonPhrase
      response = try Self.errorResponse(error.status.code, message, request, context)
    } catch {
      context.logger.error("\(request.method) \(request.uri.path): \(error)")
      response = try Self.errorResponse(500, "internal error", request, context)
    }
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    metrics.record(
      path: context.endpointPath ?? "unmatched", method: request.method.rawValue, status: response.status.code,
      seconds: seconds)
    return response
  }

  /// Hummingbird's `{"error":{"message":"…"}}` body, or the text itself.
  static func decodedMessage(_ body: String) -> String? {
    struct Wrapped: Decodable {
      struct Inner: Decodable { var message: String }
      var error: Inner
    }
    return (try? JSONDecoder().decode(Wrapped.self, from: Data(body.utf8)))?.error.message ?? body
  }

  static func errorResponse(_ status: Int, _ message: String, _ request: Request, _ context: Context) throws -> Response {
    var response = try context.responseEncoder.encode(ErrorAnswer(error: message), from: request, context: context)
    response.status = HTTPResponse.Status(code: status)
    return response
  }
}

/// The routes of Docs/Serving.md.
func makeRouter(service: RecommendationService) -> Router<ServerContext> {
  let router = Router(context: ServerContext.self)
  router.add(middleware: ErrorsAndMetricsMiddleware(metrics: service.metrics))

  router.get("/healthz") { _, _ in
    HealthAnswer(status: "ok", model: service.modelKind, items: service.itemCount - 1, streaming: service.streaming)
  }

  router.get("/metrics") { _, _ in
    Response(
      status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
      body: .init(byteBuffer: ByteBuffer(string: service.metrics.render(cachedUsers: service.cachedUserCount()))))
  }

  router.post("/v1/users/:user/events") { request, context in
    let user = try context.parameters.require("user")
    let body = try await request.decode(as: EventsRequest.self, context: context)
    let length = try await service.append(user: user, items: body.items.map(\.token))
    return LengthAnswer(user: user, length: length)
  }

  router.get("/v1/users/:user/recommendations") { request, context in
    let user = try context.parameters.require("user")
    let query = request.uri.queryParameters
    let k = try integer(query.get("k"), named: "k") ?? 10
    let excludeSeen = try boolean(query.get("exclude_seen"), named: "exclude_seen") ?? false
    let top = try await service.recommend(user: user, k: k, excludingSeen: excludeSeen)
    return answer(user: user, top, service)
  }

  router.post("/v1/recommendations") { request, context in
    let body = try await request.decode(as: HistoryRequest.self, context: context)
    let top = try service.recommend(
      history: body.history.map(\.token), k: body.k ?? 10, excludingSeen: body.exclude_seen ?? false)
    return answer(user: nil, top, service)
  }
  return router
}

private func answer(user: String?, _ top: [ScoredItem], _ service: RecommendationService) -> RecommendationAnswer {
  RecommendationAnswer(
    user: user, items: top.map { service.token(of: $0.item) }, scores: top.map { $0.score.isFinite ? $0.score : nil })
}

private func integer(_ text: String?, named name: String) throws -> Int? {
  guard let text else { return nil }
  guard let value = Int(text) else { throw RequestError.badRequest("\(name) must be an integer, got \"\(text.prefix(64))\"") }
  return value
}

private func boolean(_ text: String?, named name: String) throws -> Bool? {
  switch text {
  case nil: return nil
  case "true", "1": return true
  case "false", "0": return false
  case let other?: throw RequestError.badRequest("\(name) must be true or false, got \"\(other.prefix(64))\"")
  }
}
