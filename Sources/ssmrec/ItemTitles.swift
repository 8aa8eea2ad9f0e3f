import Foundation

/// Item titles from the RecBole item file next to an interaction file (`NAME.item` beside
/// `NAME.inter`, as ML-100K ships it): the first column whose name contains "title", keyed by
/// the item token. Empty when there is no such file or column; a title never fails a command.
func itemTitles(nextTo interactions: URL) -> [String: String] {
  let itemFile = interactions.deletingPathExtension().appendingPathExtension("item")
  guard let data = try? Data(contentsOf: itemFile, options: .mappedIfSafe), data.count < 1 << 30,
    let text = String(data: data, encoding: .utf8) ?? String(data: data, encoding: .isoLatin1)
  else { return [:] }
  var lines = text.split(whereSeparator: \.isNewline).makeIterator()
  guard let header = lines.next()?.split(separator: "\t", omittingEmptySubsequences: false) else { return [:] }
  let names = header.map { $0.split(separator: ":").first.map(String.init) ?? "" }
  guard let itemColumn = names.firstIndex(of: "item_id"),
    let titleColumn = names.firstIndex(where: { $0.lowercased().contains("title") })
  else { return [:] }
  var titles: [String: String] = [:]
  while let line = lines.next() {
    let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
    guard fields.count > Swift.max(itemColumn, titleColumn) else { continue }
    titles[String(fields[itemColumn])] = String(fields[titleColumn]).trimmingCharacters(in: .whitespaces)
  }
  return titles
}
