import ArgumentParser
import Foundation
import JSON
import RaftDBClient

struct Txn: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Run a transaction read as JSON from stdin (or --file): prints SUCCESS or FAILURE and the responses.",
    discussion: """
      The transaction is POST /txn's body (docs/API.md): {"compare": [{"key", "target": \
      "value|version|create|mod|lease", "result": "=|!=|<|>", "value"}], "success": [{"put": \
      {"key", "value"}} | {"get": {"key"}} | {"delete": {"key"}} | {"txn": {...}}], "failure": \
      [...]}. Each response prints as etcdctl prints it: OK for a put, key and value lines for a \
      get, the number deleted for a delete. -w json prints the server's answer.
      """)
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Option(help: "Read the transaction from this file instead of stdin.") var file: String?

  func run() async throws {
    let data: Data
    if let file {
      guard let contents = FileManager.default.contents(atPath: file) else {
        throw ValidationError("cannot read \(file)")
      }
      data = contents
    } else {
      data = FileHandle.standardInput.readDataToEndOfFile()
    }
    let transaction: JSONValue
    do {
      transaction = try JSONParser.parse(Array(data))
    } catch {
      throw ValidationError("the transaction is not JSON: \(error)")
    }
    let client = connection.client()
    let answer = try await client.txn(transaction)
    await client.close()
    if output.isJSON { return printServerJSON(answer) }
    Self.printOutcome(answer)
  }

  /// SUCCESS or FAILURE, a blank line, then each response (a nested txn's the same way).
  static func printOutcome(_ outcome: JSONValue) {
    print(outcome["succeeded"]?.boolValue == true ? "SUCCESS" : "FAILURE")
    for response in outcome["responses"]?.arrayValue ?? [] {
      print("")
      if response["put"] != nil {
        print("OK")
      } else if let get = response["get"] {
        for kv in get["kvs"]?.arrayValue ?? [] {
          print(kv["key"]?.stringValue ?? "")
          print(kv["value"]?.stringValue ?? "")
        }
      } else if let delete = response["delete"] {
        print(delete["deleted"]?.intValue ?? 0)
      } else if let nested = response["txn"] {
        printOutcome(nested)
      }
    }
  }
}
