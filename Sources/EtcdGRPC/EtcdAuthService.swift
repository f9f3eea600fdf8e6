import EtcdAPI
import GRPCCore
import RaftDBService

/// etcd's Auth service, until raftdb has authentication (docs/SECURITY.md): there are no users or
/// roles yet, and every client may do everything. So:
/// - Authenticate answers etcd's own `authentication is not enabled`, which is true, and which
///   etcd's clients take as "carry on without a token": a client configured with a user still works,
///   exactly as against an etcd whose auth is disabled;
/// - AuthDisable succeeds (it is disabled);
/// - everything that would create users or roles or enable auth answers Unimplemented, saying why,
///   rather than pretend to protect anything.
public struct EtcdAuthService: Etcdserverpb_Auth.SimpleServiceProtocol {
  let service: KVService

  static func notYet(_ method: String) -> RPCError {
    RPCError(
      code: .unimplemented,
      message:
        "raftdb does not serve \(method) yet: it has no users, roles or permissions, and every client can read and write everything (docs/SECURITY.md)"
    )
  }

  public func authenticate(request: Etcdserverpb_AuthenticateRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthenticateResponse
  {
    throw RPCError(code: .failedPrecondition, message: "etcdserver: authentication is not enabled")
  }

  public func authDisable(request: Etcdserverpb_AuthDisableRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthDisableResponse
  {
    var answer = Etcdserverpb_AuthDisableResponse()
    answer.header = service.etcdHeader()
    return answer
  }

  public func authEnable(request: Etcdserverpb_AuthEnableRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthEnableResponse
  { throw Self.notYet("AuthEnable") }

  public func userAdd(request: Etcdserverpb_AuthUserAddRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthUserAddResponse
  { throw Self.notYet("UserAdd") }

  public func userGet(request: Etcdserverpb_AuthUserGetRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthUserGetResponse
  { throw Self.notYet("UserGet") }

  public func userList(request: Etcdserverpb_AuthUserListRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthUserListResponse
  { throw Self.notYet("UserList") }

  public func userDelete(request: Etcdserverpb_AuthUserDeleteRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthUserDeleteResponse
  { throw Self.notYet("UserDelete") }

  public func userChangePassword(request: Etcdserverpb_AuthUserChangePasswordRequest, context: ServerContext)
    async throws
    -> Etcdserverpb_AuthUserChangePasswordResponse
  { throw Self.notYet("UserChangePassword") }

  public func userGrantRole(request: Etcdserverpb_AuthUserGrantRoleRequest, context: ServerContext)
    async throws
    -> Etcdserverpb_AuthUserGrantRoleResponse
  { throw Self.notYet("UserGrantRole") }

  public func userRevokeRole(request: Etcdserverpb_AuthUserRevokeRoleRequest, context: ServerContext)
    async throws
    -> Etcdserverpb_AuthUserRevokeRoleResponse
  { throw Self.notYet("UserRevokeRole") }

  public func roleAdd(request: Etcdserverpb_AuthRoleAddRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthRoleAddResponse
  { throw Self.notYet("RoleAdd") }

  public func roleGet(request: Etcdserverpb_AuthRoleGetRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthRoleGetResponse
  { throw Self.notYet("RoleGet") }

  public func roleList(request: Etcdserverpb_AuthRoleListRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthRoleListResponse
  { throw Self.notYet("RoleList") }

  public func roleDelete(request: Etcdserverpb_AuthRoleDeleteRequest, context: ServerContext) async throws
    -> Etcdserverpb_AuthRoleDeleteResponse
  { throw Self.notYet("RoleDelete") }

  public func roleGrantPermission(
    request: Etcdserverpb_AuthRoleGrantPermissionRequest, context: ServerContext
  ) async throws
    -> Etcdserverpb_AuthRoleGrantPermissionResponse
  { throw Self.notYet("RoleGrantPermission") }

  public func roleRevokePermission(
    request: Etcdserverpb_AuthRoleRevokePermissionRequest, context: ServerContext
  ) async throws
    -> Etcdserverpb_AuthRoleRevokePermissionResponse
  { throw Self.notYet("RoleRevokePermission") }
}
