// Serving: load a checkpoint written by `ssmrec train` and answer top-K requests read from
// standard input, one history per line (item tokens, oldest first, separated by spaces or
// commas). Each answer is one line of item tokens; a bad request gets one `error:` line and the
// server goes on.
//
//   swift run -c release Serving runs/sigma/best.safetensors ml-100k/ml-100k.inter [k] < requests.txt
//
// The dataset file supplies the item vocabulary the model was trained with.

import Foundation
import SSMRecommenders

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 2 else {
  FileHandle.standardError.write(Data("usage: Serving CHECKPOINT DATASET [K]\n".utf8))
  exit(2)
}
let k = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10
let model: any SequentialRecommender
let batching: BatchingPolicy
let dataset: InteractionDataset
do {
  let contents = try Checkpoint.Contents(contentsOf: URL(fileURLWithPath: arguments[0]))
  model = try Checkpoint.loadModel(from: contents)
  // Histories are batched as in training (SIGMA's window, for instance), as the checkpoint says.
  batching = contents.batching(for: model)
  dataset = try InteractionDataset(contentsOf: URL(fileURLWithPath: arguments[1]))
} catch {
  FileHandle.standardError.write(Data("error: \(error)\n".utf8))
  exit(1)
}
guard dataset.itemCount == model.itemCount else {
  FileHandle.standardError.write(
    Data("error: the checkpoint scores \(model.itemCount) item ids, the dataset has \(dataset.itemCount)\n".utf8))
  exit(1)
}
var ids: [String: Int] = [:]
for (id, token) in dataset.itemTokens.enumerated() where id > 0 { ids[token] = id }

while let line = readLine() {
  let tokens = line.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }).map(String.init)
  if tokens.isEmpty { continue }
  guard let history = Optional(tokens.compactMap { ids[$0] }), history.count == tokens.count, !history.contains(0) else {
    let unknown = tokens.filter { (ids[$0] ?? 0) == 0 }
    print("error: unknown item(s) \(unknown.joined(separator: " "))")
    continue
  }
  do {
    let batch = try batching.batch([history])
    print(model.recommend(batch, k: k)[0].map { dataset.itemTokens[$0] }.joined(separator: " "))
  } catch {
    print("error: \(error)")
  }
}
