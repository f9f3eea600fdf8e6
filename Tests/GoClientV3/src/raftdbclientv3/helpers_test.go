package raftdbclientv3

import (
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/mvcc/mvccpb"
)

// expectErr fails unless err is exactly want, compared with == as clientv3's callers compare
// against rpctypes' typed errors (clientv3 turns a gRPC status into rpctypes.EtcdError by its
// message).
func expectErr(t testing.TB, err, want error, what string) {
	t.Helper()
	if err != want {
		t.Fatalf("%s: got error %v (%T), want %v", what, err, err, want)
	}
}

// checkErr is expectErr that lets the test go on.
func checkErr(t testing.TB, err, want error, what string) {
	t.Helper()
	if err != want {
		t.Errorf("%s: got error %v (%T), want %v", what, err, err, want)
	}
}

func ok(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// keysOf lists a range answer's keys.
func keysOf(kvs []*mvccpb.KeyValue) []string {
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

func valuesOf(kvs []*mvccpb.KeyValue) []string {
	var values []string
	for _, kv := range kvs {
		values = append(values, string(kv.Value))
	}
	return values
}

func expectStrings(t testing.TB, got, want []string, what string) {
	t.Helper()
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// expectKV checks a key's value and its revisions.
func expectKV(t testing.TB, kv *mvccpb.KeyValue, value string, create, mod, version int64, what string) {
	t.Helper()
	if kv == nil {
		t.Fatalf("%s: key missing", what)
	}
	if string(kv.Value) != value || kv.CreateRevision != create || kv.ModRevision != mod || kv.Version != version {
		t.Fatalf("%s: got value %q create %d mod %d version %d, want %q create %d mod %d version %d",
			what, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, value, create, mod, version)
	}
}

func only(t testing.TB, resp *clientv3.GetResponse, what string) *mvccpb.KeyValue {
	t.Helper()
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s: got %d keys (%q), want 1", what, len(resp.Kvs), keysOf(resp.Kvs))
	}
	return resp.Kvs[0]
}

func eventString(ev *clientv3.Event) string {
	return fmt.Sprintf("%s %q=%q@%d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
}
