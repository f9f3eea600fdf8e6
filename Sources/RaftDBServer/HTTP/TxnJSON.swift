import JSON
import KVStore

/// The JSON form of a transaction on `POST /txn` (docs/API.md), etcd's Txn with names a curl user
/// can type: compares on `value`, `version`, `create`, `mod` or `lease` with `=`, `!=`, `<`, `>`;
/// operations `put`, `get`, `delete` and a nested `txn`. A range is a `key` with an optional
/// `range_end`, or `"prefix": true`. Every unknown field is refused.
enum TxnJSON {
  static func decode(_ json: JSONValue, depth: Int) throws(APIError) -> TxnRequest {
    guard depth <= 8 else { throw APIError.badRequest("transactions nest at most 8 deep") }
    let fields = try object(json, "a transaction", allowed: ["compare", "success", "failure"])
    var txn = TxnRequest()
    for compare in try array(fields["compare"], "compare") { txn.compare.append(try decodeCompare(compare)) }
    for operation in try array(fields["success"], "success") {
      txn.success.append(try decodeOperation(operation, depth: depth))
    }
    for operation in try array(fields["failure"], "failure") {
      txn.failure.append(try decodeOperation(operation, depth: depth))
    }
    return txn
  }

  static func write(_ response: TxnResponse, to writer: inout JSONWriter) {
    writer.field("succeeded", response.succeeded)
    writer.key("responses")
    writer.beginArray()
    for operation in response.responses {
      writer.beginObject()
      switch operation {
      case .put(let put):
        writer.key("put")
        writer.beginObject()
        writer.key("prev_kv")
        if let previous = put.prevKV { HTTPAdapter.write(previous, to: &writer) } else { writer.null() }
        writer.endObject()
      case .range(let range):
        writer.key("get")
        writer.beginObject()
        writer.key("kvs")
        HTTPAdapter.write(range.kvs, to: &writer)
        writer.field("count", Int(range.count))
        writer.field("more", range.more)
        writer.endObject()
      case .deleteRange(let delete):
        writer.key("delete")
        writer.beginObject()
        writer.field("deleted", Int(delete.deleted))
        writer.key("prev_kvs")
        HTTPAdapter.write(delete.prevKVs, to: &writer)
        writer.endObject()
      case .txn(let nested):
        writer.key("txn")
        writer.beginObject()
        write(nested, to: &writer)
        writer.endObject()
      }
      writer.endObject()
    }
    writer.endArray()
  }

  private static func decodeCompare(_ json: JSONValue) throws(APIError) -> Compare {
    let fields = try object(
      json, "a compare", allowed: ["key", "range_end", "prefix", "target", "result", "value"])
    let range = try decodeRange(fields)
    let result: Compare.Result
    switch try string(fields["result"], "result") {
    case "=", "==": result = .equal
    case "!=": result = .notEqual
    case "<": result = .less
    case ">": result = .greater
    case let other: throw APIError.badRequest("unknown compare result \"\(other)\"; use =, !=, < or >")
    }
    let target: Compare.Target
    switch try string(fields["target"], "target") {
    case "value": target = .value(Array(try string(fields["value"], "value").utf8))
    case "version": target = .version(try integer(fields["value"], "value"))
    case "create": target = .create(try integer(fields["value"], "value"))
    case "mod": target = .mod(try integer(fields["value"], "value"))
    case "lease": target = .lease(try integer(fields["value"], "value"))
    case let other:
      throw APIError.badRequest(
        "unknown compare target \"\(other)\"; use value, version, create, mod or lease")
    }
    return Compare(range: range, result, target)
  }

  private static func decodeOperation(_ json: JSONValue, depth: Int) throws(APIError) -> RequestOp {
    guard case .object(let members) = json, members.count == 1 else {
      throw APIError.badRequest("an operation is an object with one of put, get, delete or txn")
    }
    let (name, body) = members[0]
    switch name {
    case "put":
      let fields = try object(
        body, "a put", allowed: ["key", "value", "lease", "prev_kv", "ignore_value", "ignore_lease"])
      let ignoreValue = try bool(fields["ignore_value"], "ignore_value")
      var put = PutRequest(
        key: Array(try string(fields["key"], "key").utf8),
        value: ignoreValue && fields["value"] == nil ? [] : Array(try string(fields["value"], "value").utf8))
      put.lease = try fields["lease"].map { json throws(APIError) in try integer(json, "lease") } ?? 0
      put.prevKV = try bool(fields["prev_kv"], "prev_kv")
      put.ignoreValue = ignoreValue
      put.ignoreLease = try bool(fields["ignore_lease"], "ignore_lease")
      return .put(put)
    case "get":
      let fields = try object(
        body, "a get",
        allowed: ["key", "range_end", "prefix", "limit", "revision", "keys_only", "count_only"])
      var range = RangeRequest(range: try decodeRange(fields))
      range.limit = try fields["limit"].map { json throws(APIError) in try integer(json, "limit") } ?? 0
      range.revision =
        try fields["revision"].map { json throws(APIError) in try integer(json, "revision") } ?? 0
      range.keysOnly = try bool(fields["keys_only"], "keys_only")
      range.countOnly = try bool(fields["count_only"], "count_only")
      return .range(range)
    case "delete":
      let fields = try object(body, "a delete", allowed: ["key", "range_end", "prefix", "prev_kv"])
      return .deleteRange(
        DeleteRangeRequest(range: try decodeRange(fields), prevKV: try bool(fields["prev_kv"], "prev_kv")))
    case "txn":
      return .txn(try decode(body, depth: depth + 1))
    default:
      throw APIError.badRequest("unknown operation \"\(name)\"; use put, get, delete or txn")
    }
  }

  private static func decodeRange(_ fields: [String: JSONValue]) throws(APIError) -> KeyRange {
    let key = Array(try string(fields["key"], "key").utf8)
    if try bool(fields["prefix"], "prefix") {
      guard fields["range_end"] == nil else {
        throw APIError.badRequest("give prefix or range_end, not both")
      }
      return .prefix(key)
    }
    guard let end = fields["range_end"] else { return KeyRange(key: key) }
    return KeyRange(key: key, rangeEnd: Array(try string(end, "range_end").utf8))
  }

  private static func object(_ json: JSONValue, _ what: String, allowed: Set<String>) throws(APIError)
    -> [String: JSONValue]
  {
    guard case .object(let members) = json else { throw APIError.badRequest("\(what) must be a JSON object") }
    var fields: [String: JSONValue] = [:]
    for (name, value) in members {
      guard allowed.contains(name) else {
        throw APIError.badRequest(
          "unknown field \"\(name)\" in \(what); expected \(allowed.sorted().joined(separator: ", "))")
      }
      guard fields.updateValue(value, forKey: name) == nil else {
        throw APIError.badRequest("field \"\(name)\" given twice in \(what)")
      }
    }
    return fields
  }

  private static func array(_ json: JSONValue?, _ name: String) throws(APIError) -> [JSONValue] {
    guard let json else { return [] }
    guard case .array(let elements) = json else { throw APIError.badRequest("\"\(name)\" must be an array") }
    return elements
  }

  private static func string(_ json: JSONValue?, _ name: String) throws(APIError) -> String {
    guard case .string(let text) = json else { throw APIError.badRequest("\"\(name)\" must be a string") }
    return text
  }

  private static func integer(_ json: JSONValue?, _ name: String) throws(APIError) -> Int64 {
    guard case .number(let text) = json, let value = Int64(text) else {
      throw APIError.badRequest("\"\(name)\" must be an integer")
    }
    return value
  }

  private static func bool(_ json: JSONValue?, _ name: String) throws(APIError) -> Bool {
    guard let json else { return false }
    guard case .bool(let flag) = json else { throw APIError.badRequest("\"\(name)\" must be true or false") }
    return flag
  }
}
