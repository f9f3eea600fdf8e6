import Foundation

/// A fresh directory under /tmp, removed with everything in it when the value goes away.
final class TemporaryDirectory {
  let path: String

  init(_ label: String = "raftstorage") {
    var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(created != nil, "mkdtemp failed: errno \(errno)")
    path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  /// The data directory tests open (created by the storage itself, to exercise that path).
  var data: String { path + "/data" }

  func file(_ relative: String) -> String { data + "/" + relative }
}

/// Raw file manipulation for damaging data on purpose.
enum Disk {
  static func read(_ path: String) -> [UInt8] {
    [UInt8](FileManager.default.contents(atPath: path) ?? Data())
  }

  /// Replaces a file's content in place (Foundation's atomic `createFile` would leave a
  /// `TemporaryDirectory.*` behind in /tmp for every call).
  static func write(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot open \(path): errno \(errno)")
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
      let written = bytes[done...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
      precondition(written > 0, "cannot write \(path): errno \(errno)")
      done += written
    }
  }

  static func size(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? -1
  }

  static func truncate(_ path: String, to size: Int) {
    precondition(Foundation.truncate(path, off_t(size)) == 0, "truncate \(path) failed")
  }

  static func flipBit(_ path: String, at offset: Int, bit: Int = 0) {
    var bytes = read(path)
    bytes[offset] ^= UInt8(1 << bit)
    write(path, bytes)
  }

  static func list(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
  }

  static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

  static func copyDirectory(_ from: String, to: String) {
    try! FileManager.default.copyItem(atPath: from, toPath: to)
  }
}
