import Foundation
import JSON
import RaftDBClient

/// Waiting for the keys under a prefix to change, for the lock and election recipes: a watch on the
/// prefix from just after the revision the caller last read (`GET /watch/PREFIX?prefix=true`,
/// resumed with `Last-Event-ID`), ended by the first change. The caller reads the prefix again
/// afterwards whatever happened, so a watch that cannot be opened, drops or is cancelled costs a
/// read (and, if no endpoint took it, a 200 ms pause), never a missed change: every change after the
/// read is either delivered or found by the next read.
enum PrefixChanges {
  /// Returns after the first change under `prefix` after `revision` (with `deletesOnly`, the first
  /// delete: a waiter in a queue waits only for the keys before its own to go), or when no watch
  /// could be held open on any of `endpoints`.
  static func next(after revision: Int, under prefix: String, endpoints: [String], deletesOnly: Bool) async {
    let path = watchPath(prefix, deletesOnly: deletesOnly)
    for endpoint in endpoints {
      guard let (host, port) = splitHostPort(endpoint) else { continue }
      let opened = OpenFlag()
      var changed = false
      do {
        try await EventStream.get(
          host: host, port: port, path: path, headers: [("Last-Event-ID", String(revision))],
          onOpen: { opened.set() }
        ) { message in
          guard message.event == "events" || message.event == "canceled" else { return true }
          changed = true
          return false
        }
      } catch {}
      // A watch that opened and then ended (its member stopped, say) also sends the caller back
      // to read; one that never opened tries the next endpoint.
      if changed || opened.value { return }
    }
    try? await Task.sleep(for: .milliseconds(200))
  }

  static func watchPath(_ prefix: String, deletesOnly: Bool) -> String {
    let escaped =
      prefix.addingPercentEncoding(
        withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? prefix
    return "/watch/\(escaped)?prefix=true" + (deletesOnly ? "&filter=noput" : "")
  }
}
