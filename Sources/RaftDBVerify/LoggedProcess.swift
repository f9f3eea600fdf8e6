import Foundation

/// Starting a server process whose output goes to a log file that survives restarts: each start
/// appends, so a node's log reads as one story across kills. Shared by `raftctl verify` and the
/// integration tests.
public enum LoggedProcess {
  /// `environment` is added to this process's own.
  public static func launch(
    _ executable: URL, arguments: [String], environment: [String: String] = [:], appendingOutputTo logURL: URL
  ) throws -> Process {
    if !FileManager.default.fileExists(atPath: logURL.path) {
      _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
    }
    let log = try FileHandle(forWritingTo: logURL)
    defer { try? log.close() }
    log.seekToEndOfFile()
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if !environment.isEmpty {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    process.standardOutput = log
    process.standardError = log
    try process.run()
    return process
  }
}
