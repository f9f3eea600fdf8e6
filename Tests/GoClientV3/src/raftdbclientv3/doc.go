// Package raftdbclientv3 drives real raftdb processes with etcd's Go client (clientv3 and
// clientv3/concurrency from etcd 3.4, as Debian packages them) to check that raftdb's etcd v3
// gRPC API behaves the way that client expects.
//
// Everything lives in the _test.go files: the cluster helper (cluster_test.go) starts its own
// raftdb processes on loopback ports, and every test kills what it started, by process id, when
// it ends. Run it with scripts/go-clientv3-tests.sh, which builds nothing but this package (GOPATH
// mode, GO111MODULE=off) and points it at a raftdb binary through RAFTDB_BINARY.
package raftdbclientv3
