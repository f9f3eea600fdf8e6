import ArgumentParser
import Foundation
import JSON
import RaftDBClient
import RaftDBVerify

/// `raftctl cluster start|stop`: a local multi-process cluster for trying raftdb out.
struct Cluster: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start or stop a local cluster of raftdb processes.", subcommands: [Start.self, Stop.self])

  /// What `start` records so that `stop` can find the processes: `cluster.json`,
  /// `{"nodes":[{"name":...,"pid":...,"http":...,"raft":...,"directory":...}, ...]}`.
  struct Manifest {
    struct Node {
      var name: String
      var pid: Int32
      var http: String
      var raft: String
      var directory: String
    }
    var nodes: [Node]

    var json: JSONValue {
      JSONValue([
        "nodes": .array(
          nodes.map { node in
            JSONValue([
              "name": JSONValue(node.name), "pid": JSONValue(node.pid), "http": JSONValue(node.http),
              "raft": JSONValue(node.raft), "directory": JSONValue(node.directory),
            ])
          })
      ])
    }

    init(nodes: [Node]) { self.nodes = nodes }

    /// Reads a manifest written by `json` (or by an older raftctl, through JSONEncoder).
    init(json: JSONValue) throws {
      guard let elements = json["nodes"]?.arrayValue else {
        throw ValidationError("cluster manifest has no \"nodes\" array")
      }
      nodes = try elements.map { element in
        guard let name = element["name"]?.stringValue,
          let pid = element["pid"]?.intValue.flatMap(Int32.init(exactly:)),
          let http = element["http"]?.stringValue, let raft = element["raft"]?.stringValue,
          let directory = element["directory"]?.stringValue
        else {
          throw ValidationError(
            "cluster manifest: malformed node \(String(decoding: element.serialized(), as: UTF8.self))")
        }
        return Node(name: name, pid: pid, http: http, raft: raft, directory: directory)
      }
    }
  }

  static func manifestURL(_ directory: String) -> URL {
    URL(fileURLWithPath: directory).appendingPathComponent("cluster.json")
  }

  /// Where `start` records the directory of the cluster it started last, so that `stop` without
  /// `--dir` finds it: `~/.raftctl-last-cluster`.
  static var lastClusterURL: URL {
    FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".raftctl-last-cluster")
  }

  /// This raftctl executable, by its real path (a bare `raftctl` found on PATH has none in
  /// `CommandLine.arguments[0]`), so that the hint it prints works wherever it is run from.
  static var executableURL: URL {
    (Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])).resolvingSymlinksInPath()
  }

  struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Start N nodes on this machine: node01 bootstraps, the others join through it.",
      discussion: """
        On a directory that already holds the nodes' data (a cluster stopped with `cluster stop`), \
        it restarts that cluster from its data. Raft ports are 9091 and up by default (the README's \
        quick start uses the course's 8089, 8090, 8087). A start that fails stops the nodes it \
        started. Node logs (DIR/nodeNN.log) are appended to, never truncated.
        """)
    @Option(help: "Number of nodes.") var nodes = 3
    @Option(help: "Directory for data, logs and the cluster manifest.") var dir: String
    @Option(help: "HTTP port of node01; node k uses this + k - 1.") var httpPort = 8091
    @Option(help: "Raft port of node01; node k uses this + k - 1.") var raftPort = 9091
    @Option(help: "Path of the raftdb executable (default: next to raftctl).") var raftdb: String?

    func validate() throws {
      guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
    }

    func run() async throws {
      let executable =
        raftdb
        ?? Cluster.executableURL.deletingLastPathComponent().appendingPathComponent("raftdb").path
      guard FileManager.default.isExecutableFile(atPath: executable) else {
        throw ValidationError("raftdb not found at \(executable); pass --raftdb PATH")
      }
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      if FileManager.default.fileExists(atPath: Cluster.manifestURL(dir).path) {
        throw ValidationError(
          "a cluster is already recorded in \(dir); run `raftctl cluster stop --dir \(dir)` first")
      }
      var manifest = Manifest(nodes: [])
      let first = "127.0.0.1:\(httpPort)"
      // node01's FORMAT marker is written last when its directory is created: its presence means
      // the cluster has data, and then every node restarts from it at once (node01 alone is not a
      // quorum, so it cannot lead before the others are up).
      let restarting = FileManager.default.fileExists(
        atPath: ((dir as NSString).appendingPathComponent("node01") as NSString).appendingPathComponent(
          "FORMAT"))
      do {
        try await launch(into: &manifest, executable: executable, first: first, restarting: restarting)
      } catch {
        // A failed start leaves nothing running that `cluster stop` could not find.
        for node in manifest.nodes { kill(node.pid, SIGTERM) }
        throw error
      }
      try? Data(URL(fileURLWithPath: dir).standardizedFileURL.path.utf8).write(to: Cluster.lastClusterURL)
      let endpoints = manifest.nodes.map(\.http).joined(separator: ",")
      // The directory of this raftctl, so that the hint works however it was started.
      let raftctlDirectory = Cluster.executableURL.deletingLastPathComponent().path
      print(
        "raftdb cluster of \(nodes) \(restarting ? "restarted from its data" : "running"); logs and data in \(dir)"
      )
      for node in manifest.nodes {
        print("  \(node.name)  http=\(node.http)  raft=\(node.raft)  pid=\(node.pid)")
      }
      print(
        """

        Try it (lesson 20):
          curl -XPOST \(first)/key -d '{"foo": "bar"}' -L
          curl -XGET '\(manifest.nodes.last!.http)/key/foo?level=consistent' -L
          curl \(first)/status
          export PATH=\(raftctlDirectory):$PATH RAFTDB_ENDPOINTS=\(endpoints)
          raftctl put foo bar && raftctl get foo --level consistent && raftctl members
        Stop it:
          raftctl cluster stop
        """)
    }

    /// Starts the nodes, recording each in `manifest` as soon as it runs, and waits until the
    /// cluster has formed (or, restarting, until it has a leader).
    private func launch(
      into manifest: inout Manifest, executable: String, first: String, restarting: Bool
    ) async throws {
      for k in 1...nodes {
        let name = String(format: "node%02d", k)
        let http = "127.0.0.1:\(httpPort + k - 1)"
        let raft = "127.0.0.1:\(raftPort + k - 1)"
        let directory = (dir as NSString).appendingPathComponent(name)
        var arguments = ["-id", name, "-haddr", http, "-raddr", raft]
        if k > 1 { arguments += ["-join", first] }
        arguments.append(directory)
        // Appends to the node's log, so that a restart does not erase the story of the last run.
        let process = try LoggedProcess.launch(
          URL(fileURLWithPath: executable), arguments: arguments,
          appendingOutputTo: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("\(name).log")))
        manifest.nodes.append(
          .init(name: name, pid: process.processIdentifier, http: http, raft: raft, directory: directory))
        if k == 1 && !restarting { try await waitForLeader(at: [http]) }
      }
      try Data(manifest.json.serialized()).write(to: Cluster.manifestURL(dir))
      if restarting {
        try await waitForLeader(at: manifest.nodes.map(\.http))
      } else {
        try await waitForMembers(manifest.nodes.count, at: first)
      }
    }

    /// Waits up to 10 s until one of `endpoints` says it leads.
    private func waitForLeader(at endpoints: [String]) async throws {
      let client = RaftDBClient(endpoints: endpoints)
      defer { Task { await client.close() } }
      for _ in 0..<100 {
        for endpoint in endpoints {
          if let status = try? await client.status(endpoint: endpoint), status.state == "leader" { return }
        }
        try await Task.sleep(for: .milliseconds(100))
      }
      throw ValidationError(
        "no node became leader within 10 s; see the logs in \(dir); the nodes it started were stopped")
    }

    private func waitForMembers(_ count: Int, at endpoint: String) async throws {
      let client = RaftDBClient(endpoints: [endpoint])
      defer { Task { await client.close() } }
      for _ in 0..<300 {
        let members = (try? await client.status(endpoint: endpoint))?.members ?? []
        if members.filter({ $0.voter == true }).count == count { return }
        try await Task.sleep(for: .milliseconds(100))
      }
      throw ValidationError("not every node joined within 30 seconds; see the logs in \(dir)")
    }
  }

  struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a cluster started with `cluster start`.")
    @Option(help: "The directory given to `cluster start` (default: the cluster started last).")
    var dir: String?
    @Flag(help: "Also delete the data directory.") var clean = false

    func run() async throws {
      guard
        let dir = dir
          ?? FileManager.default.contents(atPath: Cluster.lastClusterURL.path).map({
            String(decoding: $0, as: UTF8.self)
          })
      else {
        throw ValidationError(
          "no --dir, and no cluster recorded as started last (\(Cluster.lastClusterURL.path))")
      }
      let url = Cluster.manifestURL(dir)
      guard let data = FileManager.default.contents(atPath: url.path) else {
        throw ValidationError("no cluster recorded in \(dir)")
      }
      let manifest = try Manifest(json: JSONParser.parse(Array(data)))
      for node in manifest.nodes { kill(node.pid, SIGTERM) }
      for node in manifest.nodes {
        var waited = 0
        while kill(node.pid, 0) == 0 && waited < 100 {
          try await Task.sleep(for: .milliseconds(50))
          waited += 1
        }
        if kill(node.pid, 0) == 0 { kill(node.pid, SIGKILL) }
        print("stopped \(node.name) (pid \(node.pid))")
      }
      try FileManager.default.removeItem(at: url)
      if clean { try FileManager.default.removeItem(atPath: dir) }
    }
  }
}
