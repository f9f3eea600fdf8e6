import Logging
import NIOCore

/// Logs at most one line per kind of event per interval, so that a flood of hostile input costs a
/// counter increment and a stored copy of the latest event, not a log line each. Events held back
/// are summed into one line when the interval ends (`flush`, called on every tick), with the latest
/// of them. Confined to its owner's thread.
struct RateLimitedLog<Kind: Hashable, Event> {
  private struct State {
    var lastLogged: NIODeadline
    var heldBack = 0
    var latest: Event?
  }

  private var states: [Kind: State] = [:]
  let interval: TimeAmount

  init(interval: TimeAmount = .seconds(10)) { self.interval = interval }

  /// Logs `event` now (`log(event, 0)`), or holds it back if this kind was logged less than an
  /// interval ago.
  mutating func record(
    _ kind: Kind, _ event: Event, now: NIODeadline = .now(), log: (Event, _ heldBack: Int) -> Void
  ) {
    if let state = states[kind], now - state.lastLogged < interval {
      states[kind]!.heldBack += 1
      states[kind]!.latest = event
      return
    }
    states[kind] = State(lastLogged: now)
    log(event, 0)
  }

  /// Logs one summary for each kind whose interval has ended with events held back: the latest
  /// event and how many there were.
  mutating func flush(now: NIODeadline = .now(), log: (Event, _ heldBack: Int) -> Void) {
    for (kind, state) in states where state.heldBack > 0 && now - state.lastLogged >= interval {
      if let latest = state.latest { log(latest, state.heldBack) }
      states[kind] = State(lastLogged: now)
    }
  }
}

extension Logger {
  /// "… (N like it in the last 10 s; this is the latest)" for a summary line.
  static func heldBackSuffix(_ heldBack: Int, interval: TimeAmount) -> String {
    heldBack == 0
      ? ""
      : " (\(heldBack) like it in the last \(interval.nanoseconds / 1_000_000_000) s; this is the latest)"
  }
}
