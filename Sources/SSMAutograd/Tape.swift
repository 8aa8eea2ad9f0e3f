import SSMTensor
import Synchronization

/// One recorded operation: where its output's gradient goes and how.
///
/// Nodes form the graph of a define-by-run computation. Each holds strong references to the
/// nodes of the inputs it differentiates with respect to, and a pullback closure that owns the
/// tensors the backward pass needs (see each op's documentation for what it saves). A node's
/// `depth` is one more than the deepest of its inputs, so sorting by decreasing depth is a
/// reverse topological order: the backward pass needs no recursion and no global tape.
///
/// Nodes are not `Sendable`: a graph belongs to the task that built it.
final class Node {
  let depth: Int
  private(set) var inputs: [Node?]
  var pullback: ((Tensor) -> [Tensor?])?
  var gradient: Tensor?
  /// Set for leaves created from a ``Parameter``: their gradient accumulates into it.
  let parameter: Parameter?
  /// Kept after `backward()` for intermediate nodes only when asked for.
  var retainsGradient: Bool
  /// The recording function, for ``OperationProfile``.
  let operation: StaticString

  init(
    inputs: [Node?], pullback: ((Tensor) -> [Tensor?])?, parameter: Parameter? = nil,
    operation: StaticString = "parameter"
  ) {
    self.inputs = inputs
    self.operation = operation
    self.pullback = pullback
    self.parameter = parameter
    self.retainsGradient = parameter != nil
    var depth = 0
    for input in inputs { if let input { depth = Swift.max(depth, input.depth + 1) } }
    self.depth = depth
    Tape.nodesCreated.wrappingAdd(1, ordering: .relaxed)
    Tape.nodesAlive.wrappingAdd(1, ordering: .relaxed)
  }

  deinit {
    Tape.nodesAlive.wrappingSubtract(1, ordering: .relaxed)
    // Free a long chain iteratively: nodes only this one still holds are emptied here, so their
    // own deinit does not recurse (a graph dropped without backward() could be 10⁵ nodes deep).
    var pending = inputs.compactMap { $0 }
    inputs = []
    while var next = pending.popLast() {
      if isKnownUniquelyReferenced(&next) {
        pending.append(contentsOf: next.inputs.compactMap { $0 })
        next.inputs = []
        next.pullback = nil
      }
    }
  }

  /// Drops what only the backward pass needed.
  func release() {
    pullback = nil
    inputs = []
  }
}

/// Counters and switches of the reverse-mode machinery.
public enum Tape {
  /// How many graph nodes have been created in this process (for tests of no-gradient mode).
  package static let nodesCreated = Atomic<Int>(0)

  /// How many graph nodes exist right now (created and not yet freed).
  package static let nodesAlive = Atomic<Int>(0)

  /// Graph nodes created so far in this process.
  package static var nodeCount: Int { nodesCreated.load(ordering: .relaxed) }

  /// Graph nodes currently alive in this process.
  package static var liveNodeCount: Int { nodesAlive.load(ordering: .relaxed) }
}

/// Whether operations on ``Variable``s record a graph.
public enum GradientMode {
  @TaskLocal static var isDisabled = false

  /// `true` unless inside ``withoutGradients(_:)``.
  public static var isEnabled: Bool { !isDisabled }
}

/// Runs `body` with recording turned off: operations compute their values only, allocate no
/// graph nodes and keep no tensors for a backward pass (evaluation and serving).
public func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
  try GradientMode.$isDisabled.withValue(true) { try body() }
}

extension Variable {
  /// Computes the gradient of this scalar with respect to every ``Parameter`` (and every
  /// variable marked with ``retainGradient()``) it depends on, then frees the graph.
  ///
  /// Gradients accumulate: a parameter used twice (tied embeddings) receives the sum, and a
  /// second `backward()` before ``Parameter/zeroGradient()`` adds to the first.
  ///
  /// - Parameter seed: the gradient of the final objective with respect to this value; defaults
  ///   to 1 for a one-element tensor.
  /// - Precondition: without a seed the value has one element; a seed has this value's shape.
  public func backward(seed: Tensor? = nil) {
    guard let root = node else { return }
    if let seed {
      precondition(seed.shape == value.shape, "backward seed \(seed.shape) does not match \(value.shape)")
      root.gradient = seed
    } else {
      precondition(value.elementCount == 1, "backward() without a seed needs a scalar, got \(value.shape)")
      root.gradient = Tensor(repeating: 1, shape: value.shape)
    }
    // Collect the reachable nodes with an explicit stack (no recursion: long graphs are fine).
    var order: [Node] = []
    var seen = Set<ObjectIdentifier>()
    var stack = [root]
    seen.insert(ObjectIdentifier(root))
    while let current = stack.popLast() {
      order.append(current)
      for case let input? in current.inputs where seen.insert(ObjectIdentifier(input)).inserted {
        stack.append(input)
      }
    }
    order.sort { $0.depth > $1.depth }
    let profile = OperationProfile.current
    for current in order {
      defer {
        current.release()
        if !current.retainsGradient { current.gradient = nil }
      }
      guard let gradient = current.gradient else { continue }
      if let parameter = current.parameter {
        parameter.accumulateGradient(gradient)
        current.gradient = nil
        continue
      }
      guard let pullback = current.pullback else { continue }
      let start = profile == nil ? nil : ContinuousClock.now
      let operationsBefore = profile == nil ? 0 : FLOPCounter.count
      let inputGradients = pullback(gradient)
      defer {
        if let profile, let start {
          let bytes = 4 * inputGradients.reduce(gradient.elementCount) { $0 + 2 * ($1?.elementCount ?? 0) }
          profile.chargeBackward(current.operation, since: start, operationsBefore: operationsBefore, bytes: bytes)
        }
      }
      precondition(
        inputGradients.count == current.inputs.count,
        "A pullback returned \(inputGradients.count) gradients for \(current.inputs.count) inputs")
      for (input, inputGradient) in zip(current.inputs, inputGradients) {
        guard let input, let inputGradient else { continue }
        if input.gradient == nil {
          input.gradient = inputGradient
        } else {
          input.gradient! += inputGradient
        }
      }
    }
  }
}
