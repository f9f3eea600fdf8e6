import Logging
import NIOCore

/// Logs at most one line per kind of event per interval, with the number of events it held back,
/// so that a flood of hostile input costs a counter increment each, not a log line each. Confined to
/// its owner's thread.
struct RateLimitedLog<Kind: Hashable> {
  private var lastLogged: [Kind: NIODeadline] = [:]
  private var suppressed: [Kind: Int] = [:]
  let interval: TimeAmount

  init(interval: TimeAmount = .seconds(10)) { self.interval = interval }

  /// Calls `log` with the count of events held back since the last line, or counts this one.
  mutating func record(_ kind: Kind, now: NIODeadline = .now(), _ log: (_ heldBack: Int) -> Void) {
    if let last = lastLogged[kind], now - last < interval {
      suppressed[kind, default: 0] += 1
      return
    }
    lastLogged[kind] = now
    log(suppressed.removeValue(forKey: kind) ?? 0)
  }
}

extension Logger {
  /// "…(and N more like it in the last 10 s)" when a rate-limited log held lines back.
  static func heldBackSuffix(_ heldBack: Int, interval: TimeAmount) -> String {
    heldBack == 0
      ? "" : " (and \(heldBack) more like it in the last \(interval.nanoseconds / 1_000_000_000) s)"
  }
}
