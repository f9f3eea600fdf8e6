/// "host:port" → (host, port); an IPv6 host may be bracketed (`[::1]:8091`). Nil unless the port is
/// 1–65535 and the host is not empty. Members, clients and tools all parse addresses with this.
public func splitHostPort(_ address: String) -> (String, Int)? {
  guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
    (1...65535).contains(port)
  else { return nil }
  var host = String(address[..<colon])
  if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
  return host.isEmpty ? nil : (host, port)
}

/// An endpoint as people write it — `host:port`, `http://host:port` or `http://host:port/` (what
/// etcdctl's `--endpoints` takes) — as `host:port`; nil for anything else (another scheme, a path,
/// no port).
public func endpointHostPort(_ endpoint: String) -> String? {
  var text = Substring(endpoint)
  if text.hasPrefix("http://") { text = text.dropFirst(7) }
  if text.hasSuffix("/") { text = text.dropLast() }
  let address = String(text)
  return address.contains("/") || splitHostPort(address) == nil ? nil : address
}
