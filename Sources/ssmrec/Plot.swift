import ArgumentParser
import Foundation
import SSMRecommenders

/// `ssmrec plot`: training curves and test metrics of runs as one SVG file.
struct Plot: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Draw the training loss, validation curve and test metrics of runs as SVG.",
    discussion: """
      Each RUN is an output folder of `ssmrec train` (its log.jsonl, and metrics.json when the run \
      finished). The SVG has three panels: training loss per epoch, the validation metric per epoch \
      (best epoch marked), and the test metrics of the finished runs as grouped bars.

      With --bench FILE instead, draws how cost grows: the training step and inference batch times \
      of `ssmrec bench --json` lines against the --x quantity, one line per model, both axes \
      logarithmic.
      """)
  @Argument(help: "Output folders of `ssmrec train`.") var runs: [String] = []
  @Option(name: .long, help: "The SVG file to write.") var output: String = "runs.svg"
  @Option(name: .long, help: "The validation metric to draw.") var metric: String = "ndcg@10"
  @Option(name: .long, help: "Names for the runs, comma-separated (default: the folder names).") var names: String?
  @Option(name: .long, help: "A file of `ssmrec bench --json` lines to draw instead of runs.") var bench: String?
  @Option(name: .long, help: "With --bench, the quantity on the x axis: length, batch or items.") var x: String = "length"

  func validate() throws {
    if bench != nil {
      if !runs.isEmpty { throw ValidationError("give run folders or --bench, not both") }
      if !["length", "batch", "items"].contains(x) { throw ValidationError("--x must be length, batch or items") }
      return
    }
    if runs.isEmpty { throw ValidationError("give at least one run folder") }
    if let names, names.split(separator: ",").count != runs.count {
      throw ValidationError("--names gives \(names.split(separator: ",").count) names for \(runs.count) runs")
    }
  }

  func run() throws {
    if let bench { return try plotBench(bench) }
    let labels =
      names.map { $0.split(separator: ",").map(String.init) } ?? runs.map { URL(fileURLWithPath: $0).lastPathComponent }
    var curves: [RunCurves] = []
    for (folder, label) in zip(runs, labels) {
      curves.append(try RunCurves(folder: URL(fileURLWithPath: folder), label: label, metric: metric))
    }
    let svg = Chart.render(curves, metric: metric)
    do {
      try svg.write(to: URL(fileURLWithPath: output), atomically: true, encoding: .utf8)
    } catch {
      throw CommandError("cannot write \(output): \(error.localizedDescription)")
    }
    print("wrote \(output): \(curves.count) runs, \(curves.map(\.epochs.count).reduce(0, +)) epochs")
  }

  func plotBench(_ path: String) throws {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CommandError("cannot read \(path)") }
    var cases: [BenchCase] = []
    for (n, line) in text.split(separator: "\n").enumerated() where line.hasPrefix("{") {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let model = object["model"] as? String, let position = (object[x] as? NSNumber)?.doubleValue,
        let train = (object["train_step_ms"] as? NSNumber)?.doubleValue,
        let inference = (object["infer_batch_ms"] as? NSNumber)?.doubleValue
      else { throw CommandError("\(path) line \(n + 1) is not an `ssmrec bench --json` result with \(x)") }
      cases.append(BenchCase(model: model, x: position, train: train, inference: inference))
    }
    guard !cases.isEmpty else { throw CommandError("\(path) holds no benchmark result") }
    let svg = Chart.renderScaling(
      cases, xLabel: x == "items" ? "catalogue size V" : x == "batch" ? "batch size B" : "history length L")
    do {
      try svg.write(to: URL(fileURLWithPath: output), atomically: true, encoding: .utf8)
    } catch {
      throw CommandError("cannot write \(output): \(error.localizedDescription)")
    }
    print("wrote \(output): \(cases.count) cases of \(Set(cases.map(\.model)).count) models")
  }
}

/// One `ssmrec bench` measurement, at one value of the plotted quantity.
struct BenchCase {
  var model: String
  var x: Double
  var train: Double
  var inference: Double
}

/// What one run's files say.
struct RunCurves {
  var label: String
  var epochs: [EpochRecord]
  /// Test metrics under the papers' names (`hr@10`, `ndcg@10`, `mrr@10`), if the run finished.
  var test: [String: Double]

  init(folder: URL, label: String, metric: String) throws {
    self.label = label
    let log = folder.appendingPathComponent("log.jsonl")
    guard let text = try? String(contentsOf: log, encoding: .utf8) else { throw CommandError("no log.jsonl in \(folder.path)") }
    var records: [EpochRecord] = []
    for (n, line) in text.split(separator: "\n").enumerated() where !line.isEmpty {
      do { records.append(try JSONDecoder().decode(EpochRecord.self, from: Data(line.utf8))) } catch {
        throw CommandError("\(log.path) line \(n + 1) is not an epoch record")
      }
    }
    guard !records.isEmpty else { throw CommandError("\(log.path) holds no epoch") }
    guard records.contains(where: { $0.validation[metric] != nil }) else {
      throw CommandError("\(log.path) has no validation metric \(metric)")
    }
    epochs = records
    test = [:]
    let metrics = folder.appendingPathComponent("metrics.json")
    if let data = try? Data(contentsOf: metrics), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let values = object["test"] as? [String: Double]
    {
      test = values
    }
  }
}

/// A small SVG renderer: line panels with nice-number axes and a grouped bar panel.
enum Chart {
  static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
  static let panelWidth = 460.0, panelHeight = 300.0, margin = (left: 60.0, right: 20.0, top: 36.0, bottom: 44.0)

  static func render(_ runs: [RunCurves], metric: String) -> String {
    let finished = runs.filter { !$0.test.isEmpty }
    let panels = finished.isEmpty ? 2 : 3
    let width = Double(panels) * panelWidth
    let height = panelHeight + 40
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" \
      font-family="Helvetica, Arial, sans-serif" font-size="12">
      <rect width="100%" height="100%" fill="white"/>

      """
    svg += lines(
      runs.map { r in r.epochs.map { (Double($0.epoch), $0.trainLoss) } }, labels: runs.map(\.label),
      title: "training loss", yLabel: "loss", origin: 0)
    svg += lines(
      runs.map { r in r.epochs.compactMap { e in e.validation[metric].map { (Double(e.epoch), $0) } } },
      labels: runs.map(\.label), title: "validation \(metric)", yLabel: metric, origin: panelWidth,
      best: runs.map { r in r.epochs.filter(\.improved).last.map { (Double($0.epoch), $0.validation[metric] ?? 0) } })
    if !finished.isEmpty { svg += bars(finished, origin: 2 * panelWidth) }
    svg += legend(runs.map(\.label), height: height)
    return svg + "</svg>\n"
  }

  static func f(_ v: Double) -> String { String(format: "%.1f", v) }
  static func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
      of: ">", with: "&gt;")
  }

  /// About five round tick values covering `low...high`.
  static func ticks(_ low: Double, _ high: Double) -> [Double] {
    // The span is at least a millionth of the values' size, so the step is never below their
    // resolution, and ticks are counted by an integer index (at most a dozen).
    let span = Swift.max(high - low, Swift.max(Swift.abs(low), Swift.abs(high)) * 1e-6, 1e-12)
    let raw = span / 5
    let magnitude = pow(10, floor(log10(raw)))
    let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
    let first = (low / step).rounded(.down)
    return (0..<12).map { (first + Double($0)) * step }.filter { $0 >= low - step * 1e-9 && $0 <= high + step * 1e-9 }
  }

  /// A tick label with as many decimals as the axis's step needs, the same for every tick.
  static func tickText(_ v: Double, step: Double) -> String {
    var decimals = Swift.max(0, Int(-floor(log10(step) + 1e-9)))
    if (step * pow(10, Double(decimals))).rounded() != step * pow(10, Double(decimals)) { decimals += 1 }
    return String(format: "%.\(decimals)f", v)
  }

  /// Axes, grid and title of a panel at `origin`; returns the SVG and the data-to-pixel maps.
  static func axes(
    x: (Double, Double), y: (Double, Double), title: String, xLabel: String, yLabel: String, origin: Double,
    logarithmic: Bool = false
  ) -> (String, (Double) -> Double, (Double) -> Double) {
    let (x0, x1) = (origin + margin.left, origin + panelWidth - margin.right)
    let (y0, y1) = (panelHeight - margin.bottom, margin.top)
    let px = { (v: Double) in x0 + (v - x.0) / Swift.max(x.1 - x.0, 1e-12) * (x1 - x0) }
    let py = { (v: Double) in y0 - (v - y.0) / Swift.max(y.1 - y.0, 1e-12) * (y0 - y1) }
    var s = "<text x=\"\(f((x0 + x1) / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
    let yTicks = logarithmic ? logTicks(y.0, y.1) : ticks(y.0, y.1)
    let yStep = yTicks.count > 1 ? yTicks[1] - yTicks[0] : 1
    for t in yTicks {
      let label = logarithmic ? logTickText(t) : tickText(t, step: yStep)
      s += "<line x1=\"\(f(x0))\" y1=\"\(f(py(t)))\" x2=\"\(f(x1))\" y2=\"\(f(py(t)))\" stroke=\"#e5e5e5\"/>"
      s += "<text x=\"\(f(x0 - 6))\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\">\(label)</text>\n"
    }
    if logarithmic {
      for t in logTicks(x.0, x.1) {
        s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(y0))\" x2=\"\(f(px(t)))\" y2=\"\(f(y1))\" stroke=\"#e5e5e5\"/>"
        s += "<text x=\"\(f(px(t)))\" y=\"\(f(y0 + 16))\" text-anchor=\"middle\">\(logTickText(t))</text>\n"
      }
    } else if x.1 > x.0 {
      // Epochs are whole numbers: ticks at least one apart.
      let xTicks = ticks(x.0, x.1).filter { $0 == $0.rounded() }
      for t in xTicks {
        s += "<text x=\"\(f(px(t)))\" y=\"\(f(y0 + 16))\" text-anchor=\"middle\">\(Int(t))</text>\n"
      }
    }
    s += "<line x1=\"\(f(x0))\" y1=\"\(f(y0))\" x2=\"\(f(x1))\" y2=\"\(f(y0))\" stroke=\"black\"/>"
    s += "<line x1=\"\(f(x0))\" y1=\"\(f(y0))\" x2=\"\(f(x0))\" y2=\"\(f(y1))\" stroke=\"black\"/>\n"
    s += "<text x=\"\(f((x0 + x1) / 2))\" y=\"\(f(y0 + 34))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
    s +=
      "<text transform=\"translate(\(f(origin + 14)) \(f((y0 + y1) / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
    return (s, px, py)
  }

  /// Ticks of a logarithmic axis spanning `low...high` in log10 units: the powers of ten, with
  /// 2 and 5 times them when the span is under three decades.
  static func logTicks(_ low: Double, _ high: Double) -> [Double] {
    let multiples: [Double] = high - low < 3 ? [1, 2, 5] : [1]
    var result: [Double] = []
    for decade in Int(floor(low))...Int(ceil(high)) {
      for m in multiples {
        let t = Double(decade) + log10(m)
        if t >= low - 1e-9 && t <= high + 1e-9 { result.append(t) }
      }
    }
    return result
  }

  /// The value at log10 position `t`, written compactly (1k, 20k, 1M).
  static func logTickText(_ t: Double) -> String {
    let v = pow(10, t)
    if v >= 1e6 { return String(format: "%gM", (v / 1e6 * 1000).rounded() / 1000) }
    if v >= 1e3 { return String(format: "%gk", (v / 1e3 * 1000).rounded() / 1000) }
    return String(format: "%g", (v * 1000).rounded() / 1000)
  }

  /// Two log–log panels, training step and inference batch time against the benchmark's
  /// varied quantity, one line per model.
  static func renderScaling(_ cases: [BenchCase], xLabel: String) -> String {
    let models = cases.map(\.model).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
    let width = 2 * panelWidth
    let height = panelHeight + 40
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" \
      font-family="Helvetica, Arial, sans-serif" font-size="12">
      <rect width="100%" height="100%" fill="white"/>

      """
    for (panel, (title, time)) in [("training step", \BenchCase.train), ("inference batch", \BenchCase.inference)].enumerated() {
      let series = models.map { m in cases.filter { $0.model == m }.sorted { $0.x < $1.x }.map { ($0.x, $0[keyPath: time]) } }
      svg += lines(
        series, labels: models, title: title, yLabel: "ms (log scale)", origin: Double(panel) * panelWidth,
        xLabel: xLabel + " (log scale)", logarithmic: true)
    }
    svg += legend(models, height: height)
    return svg + "</svg>\n"
  }

  /// The series names along the bottom.
  static func legend(_ labels: [String], height: Double) -> String {
    var svg = ""
    var x = margin.left
    for (i, label) in labels.enumerated() {
      svg += "<rect x=\"\(f(x))\" y=\"\(f(height - 22))\" width=\"12\" height=\"12\" fill=\"\(palette[i % palette.count])\"/>"
      svg += "<text x=\"\(f(x + 16))\" y=\"\(f(height - 12))\">\(escape(label))</text>\n"
      // About 8.5 px per character of the legend font, then a gap.
      x += 40 + 8.5 * Double(label.count)
    }
    return svg
  }

  static func lines(
    _ series: [[(Double, Double)]], labels: [String], title: String, yLabel: String, origin: Double,
    best: [(Double, Double)?] = [], xLabel: String = "epoch", logarithmic: Bool = false
  ) -> String {
    if logarithmic {
      // Drawn in log10 units; the axes label the ticks with the values.
      let logSeries = series.map { $0.filter { $0.0 > 0 && $0.1 > 0 }.map { (log10($0.0), log10($0.1)) } }
      let points = logSeries.flatMap { $0 }.filter { $0.0.isFinite && $0.1.isFinite }
      guard let xMin = points.map(\.0).min(), let xMax = points.map(\.0).max(), let yMin = points.map(\.1).min(),
        let yMax = points.map(\.1).max()
      else { return "" }
      var (s, px, py) = axes(
        x: (xMin, Swift.max(xMax, xMin + 0.1)), y: (yMin - 0.05, yMax + 0.05), title: title, xLabel: xLabel, yLabel: yLabel,
        origin: origin, logarithmic: true)
      for (i, line) in logSeries.enumerated() where !line.isEmpty {
        let color = palette[i % palette.count]
        s += polyline(line, color: color, label: labels[i], px: px, py: py)
        for p in line {
          s += "<circle cx=\"\(f(px(p.0)))\" cy=\"\(f(py(p.1)))\" r=\"3\" fill=\"\(color)\"><title>\(escape(labels[i])): "
          s += "\(logTickText(p.0)) → \(String(format: "%.1f", pow(10, p.1))) ms</title></circle>\n"
        }
      }
      return s
    }
    let points = series.flatMap { $0 }.filter { $0.1.isFinite }
    guard let xMax = points.map(\.0).max(), let yMin = points.map(\.1).min(), let yMax = points.map(\.1).max() else { return "" }
    let pad = Swift.max((yMax - yMin) * 0.05, 1e-6)
    var (s, px, py) = axes(
      x: (0, Swift.max(xMax, 1)), y: (yMin - pad, yMax + pad), title: title, xLabel: xLabel, yLabel: yLabel, origin: origin)
    for (i, line) in series.enumerated() where !line.isEmpty {
      let color = palette[i % palette.count]
      s += polyline(line.filter { $0.1.isFinite }, color: color, label: labels[i], px: px, py: py)
      if i < best.count, let (bx, by) = best[i] {
        s +=
          "<circle cx=\"\(f(px(bx)))\" cy=\"\(f(py(by)))\" r=\"4\" fill=\"\(color)\"><title>best epoch \(Int(bx)): \(String(format: "%.4f", by))</title></circle>\n"
      }
    }
    return s
  }

  static func polyline(
    _ points: [(Double, Double)], color: String, label: String, px: (Double) -> Double, py: (Double) -> Double
  ) -> String {
    let path = points.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
    return
      "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(path)\"><title>\(escape(label))</title></polyline>\n"
  }

  static func bars(_ runs: [RunCurves], origin: Double) -> String {
    let metrics = ["hr@10", "ndcg@10", "mrr@10"].filter { m in runs.contains { $0.test[m] != nil } }
    let top = runs.flatMap { r in metrics.compactMap { r.test[$0] } }.max() ?? 1
    var (s, _, py) = axes(x: (0, 0), y: (0, top * 1.1), title: "test metrics", xLabel: "", yLabel: "value", origin: origin)
    let (x0, x1) = (origin + margin.left, origin + panelWidth - margin.right)
    let group = (x1 - x0) / Double(Swift.max(metrics.count, 1))
    let bar = group * 0.8 / Double(runs.count)
    for (g, m) in metrics.enumerated() {
      let gx = x0 + Double(g) * group + group * 0.1
      s += "<text x=\"\(f(gx + group * 0.4))\" y=\"\(f(panelHeight - margin.bottom + 16))\" text-anchor=\"middle\">\(m)</text>\n"
      for (i, run) in runs.enumerated() {
        guard let v = run.test[m] else { continue }
        let x = gx + Double(i) * bar
        s +=
          "<rect x=\"\(f(x))\" y=\"\(f(py(v)))\" width=\"\(f(bar * 0.9))\" height=\"\(f(py(0) - py(v)))\" fill=\"\(palette[i % palette.count])\"><title>\(escape(run.label)) \(m) \(String(format: "%.4f", v))</title></rect>\n"
      }
    }
    return s
  }
}
