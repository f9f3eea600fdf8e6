package raftdbclientv3

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
)

// TestTxn: compares, branches, nested transactions and the transaction limits.
func TestTxn(t *testing.T) {
	c := NewCluster(t, 3)
	cli := c.Client(t)
	// Calls expected to fail go to the leader: see TestAnyMemberServes/ErrorsThroughFollower for
	// the same errors through a follower.
	lcli := c.NodeClient(t, c.Leader())

	t.Run("Compares", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		a, err := cli.Put(ctx, "txn/k1", "v1")
		ok(t, err, "put")
		b, err := cli.Put(ctx, "txn/k1", "v2")
		ok(t, err, "put")
		lease, err := cli.Grant(ctx, 60)
		ok(t, err, "grant")
		_, err = cli.Put(ctx, "txn/k2", "x", clientv3.WithLease(lease.ID))
		ok(t, err, "put with lease")
		for _, k := range []string{"txn/p/a", "txn/p/b"} {
			_, err = cli.Put(ctx, k, "1")
			ok(t, err, "put")
		}
		ra, rb := a.Header.Revision, b.Header.Revision
		cases := []struct {
			cmp  clientv3.Cmp
			want bool
		}{
			{clientv3.Compare(clientv3.Value("txn/k1"), "=", "v2"), true},
			{clientv3.Compare(clientv3.Value("txn/k1"), "=", "v1"), false},
			{clientv3.Compare(clientv3.Value("txn/k1"), ">", "v1"), true},
			{clientv3.Compare(clientv3.Value("txn/k1"), "<", "v1"), false},
			{clientv3.Compare(clientv3.Value("txn/k1"), "!=", "v2"), false},
			{clientv3.Compare(clientv3.Version("txn/k1"), "=", 2), true},
			{clientv3.Compare(clientv3.Version("txn/k1"), ">", 2), false},
			{clientv3.Compare(clientv3.Version("txn/k1"), "<", 3), true},
			{clientv3.Compare(clientv3.CreateRevision("txn/k1"), "=", ra), true},
			{clientv3.Compare(clientv3.CreateRevision("txn/k1"), "=", rb), false},
			{clientv3.Compare(clientv3.ModRevision("txn/k1"), "=", rb), true},
			{clientv3.Compare(clientv3.ModRevision("txn/k1"), ">", ra), true},
			{clientv3.Compare(clientv3.ModRevision("txn/k1"), "<", rb), false},
			{clientv3.Compare(clientv3.LeaseValue("txn/k2"), "=", lease.ID), true},
			{clientv3.Compare(clientv3.LeaseValue("txn/k2"), "=", lease.ID+1), false},
			{clientv3.Compare(clientv3.LeaseValue("txn/k1"), "=", clientv3.NoLease), true},
			// A missing key has version, create and mod revision 0; a value compare on it fails
			// whatever the operator.
			{clientv3.Compare(clientv3.Version("txn/missing"), "=", 0), true},
			{clientv3.Compare(clientv3.CreateRevision("txn/missing"), "=", 0), true},
			{clientv3.Compare(clientv3.ModRevision("txn/missing"), "<", 1), true},
			{clientv3.Compare(clientv3.Value("txn/missing"), "=", ""), false},
			{clientv3.Compare(clientv3.Value("txn/missing"), "!=", "x"), false},
			// A compare over a range holds when it holds for every key in it.
			{clientv3.Compare(clientv3.Version("txn/p/").WithPrefix(), "=", 1), true},
			{clientv3.Compare(clientv3.Value("txn/p/").WithPrefix(), "=", "1"), true},
			{clientv3.Compare(clientv3.ModRevision("txn/p/").WithPrefix(), ">", rb), true},
			{clientv3.Compare(clientv3.CreateRevision("txn/p/").WithPrefix(), "<", rb), false},
		}
		for i, tc := range cases {
			marker := fmt.Sprintf("txn/branch/%d", i)
			resp, err := cli.Txn(ctx).If(tc.cmp).
				Then(clientv3.OpPut(marker, "then")).
				Else(clientv3.OpPut(marker, "else")).Commit()
			ok(t, err, fmt.Sprintf("compare %d", i))
			if resp.Succeeded != tc.want {
				t.Fatalf("compare %d (%s on %q): succeeded %v, want %v", i, tc.cmp.Target, tc.cmp.Key, resp.Succeeded, tc.want)
			}
			g, err := cli.Get(ctx, marker)
			ok(t, err, "get marker")
			want := map[bool]string{true: "then", false: "else"}[tc.want]
			if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != want {
				t.Fatalf("compare %d: branch wrote %v, want %q", i, valuesOf(g.Kvs), want)
			}
		}
		// Several compares: all must hold.
		resp, err := cli.Txn(ctx).If(
			clientv3.Compare(clientv3.Value("txn/k1"), "=", "v2"),
			clientv3.Compare(clientv3.Version("txn/k1"), "=", 1)).Commit()
		ok(t, err, "two compares")
		if resp.Succeeded {
			t.Fatal("a transaction with one false compare succeeded")
		}
	})

	t.Run("Branches", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		_, err := cli.Put(ctx, "txn/b/old", "o")
		ok(t, err, "put")
		before, err := cli.Get(ctx, "txn/b/", clientv3.WithPrefix())
		ok(t, err, "get")
		r0 := before.Header.Revision
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("txn/b/old"), "=", "o")).
			Then(
				clientv3.OpPut("txn/b/x", "1"),
				clientv3.OpPut("txn/b/y", "2", clientv3.WithPrevKV()),
				clientv3.OpGet("txn/b/", clientv3.WithPrefix()),
				clientv3.OpDelete("txn/b/old", clientv3.WithPrevKV())).
			Else(clientv3.OpPut("txn/b/else", "e")).Commit()
		ok(t, err, "txn")
		if !resp.Succeeded || len(resp.Responses) != 4 {
			t.Fatalf("txn: succeeded %v with %d responses, want true and 4", resp.Succeeded, len(resp.Responses))
		}
		// One transaction with three writes is one revision, and its writes share it.
		if resp.Header.Revision != r0+1 {
			t.Fatalf("txn with three writes moved the revision from %d to %d, want %d", r0, resp.Header.Revision, r0+1)
		}
		if resp.Responses[0].GetResponsePut() == nil || resp.Responses[1].GetResponsePut() == nil {
			t.Fatalf("responses 0 and 1 are not puts: %v", resp.Responses)
		}
		if resp.Responses[1].GetResponsePut().PrevKv != nil {
			t.Fatalf("prev_kv of a new key: %v", resp.Responses[1].GetResponsePut().PrevKv)
		}
		// A read inside the transaction sees its earlier writes.
		rr := resp.Responses[2].GetResponseRange()
		if rr == nil {
			t.Fatalf("response 2 is not a range: %v", resp.Responses[2])
		}
		expectStrings(t, keysOf(rr.Kvs), []string{"txn/b/old", "txn/b/x", "txn/b/y"}, "range inside txn")
		for _, kv := range rr.Kvs[1:] {
			if kv.ModRevision != r0+1 || kv.CreateRevision != r0+1 {
				t.Fatalf("%q written in the txn has create %d mod %d, want %d", kv.Key, kv.CreateRevision, kv.ModRevision, r0+1)
			}
		}
		dr := resp.Responses[3].GetResponseDeleteRange()
		if dr == nil || dr.Deleted != 1 || len(dr.PrevKvs) != 1 || string(dr.PrevKvs[0].Value) != "o" {
			t.Fatalf("delete inside txn: %v", resp.Responses[3])
		}
		g, err := cli.Get(ctx, "txn/b/", clientv3.WithPrefix())
		ok(t, err, "get")
		expectStrings(t, keysOf(g.Kvs), []string{"txn/b/x", "txn/b/y"}, "after then branch")

		// The else branch runs alone when a compare fails.
		resp, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("txn/b/old"), "=", "o")).
			Then(clientv3.OpPut("txn/b/then", "t")).
			Else(clientv3.OpPut("txn/b/else", "e"), clientv3.OpGet("txn/b/x")).Commit()
		ok(t, err, "txn else")
		if resp.Succeeded || len(resp.Responses) != 2 || resp.Header.Revision != r0+2 {
			t.Fatalf("else branch: succeeded %v, %d responses at %d; want false, 2 at %d",
				resp.Succeeded, len(resp.Responses), resp.Header.Revision, r0+2)
		}
		if rr := resp.Responses[1].GetResponseRange(); rr == nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "1" {
			t.Fatalf("get in else branch: %v", resp.Responses[1])
		}
		g, err = cli.Get(ctx, "txn/b/", clientv3.WithPrefix())
		ok(t, err, "get")
		expectStrings(t, keysOf(g.Kvs), []string{"txn/b/else", "txn/b/x", "txn/b/y"}, "after else branch")

		// A transaction that only reads writes nothing.
		resp, err = cli.Txn(ctx).Then(clientv3.OpGet("txn/b/x")).Commit()
		ok(t, err, "read-only txn")
		if resp.Header.Revision != r0+2 {
			t.Fatalf("read-only txn moved the revision to %d, want %d", resp.Header.Revision, r0+2)
		}
		// An empty transaction succeeds.
		resp, err = cli.Txn(ctx).Commit()
		ok(t, err, "empty txn")
		if !resp.Succeeded || len(resp.Responses) != 0 {
			t.Fatalf("empty txn: %v", resp)
		}
	})

	t.Run("Nested", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		_, err := cli.Put(ctx, "txn/n/a", "1")
		ok(t, err, "put")
		inner := clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value("txn/n/a"), "=", "2")},
			[]clientv3.Op{clientv3.OpPut("txn/n/inner", "then")},
			[]clientv3.Op{clientv3.OpPut("txn/n/inner", "else"), clientv3.OpGet("txn/n/a")})
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("txn/n/a"), "=", "1")).
			Then(clientv3.OpPut("txn/n/outer", "then"), inner).Commit()
		ok(t, err, "nested txn")
		if !resp.Succeeded || len(resp.Responses) != 2 {
			t.Fatalf("outer: succeeded %v, %d responses", resp.Succeeded, len(resp.Responses))
		}
		in := resp.Responses[1].GetResponseTxn()
		if in == nil || in.Succeeded || len(in.Responses) != 2 {
			t.Fatalf("inner txn response: %v (want failed, 2 responses)", resp.Responses[1])
		}
		if rr := in.Responses[1].GetResponseRange(); rr == nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "1" {
			t.Fatalf("get in inner else: %v", in.Responses[1])
		}
		g, err := cli.Get(ctx, "txn/n/", clientv3.WithPrefix())
		ok(t, err, "get")
		expectStrings(t, valuesOf(g.Kvs), []string{"1", "else", "then"}, "values after nested txn")
		if g.Kvs[1].ModRevision != g.Kvs[2].ModRevision {
			t.Fatal("inner and outer writes at different revisions")
		}
	})

	t.Run("DuplicateKeys", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		cases := []struct {
			name string
			then []clientv3.Op
			els  []clientv3.Op
			dup  bool
		}{
			{"put, put", []clientv3.Op{clientv3.OpPut("txn/d/k", "1"), clientv3.OpPut("txn/d/k", "2")}, nil, true},
			{"put, delete", []clientv3.Op{clientv3.OpPut("txn/d/k", "1"), clientv3.OpDelete("txn/d/k")}, nil, true},
			{"put inside a deleted range", []clientv3.Op{clientv3.OpDelete("txn/d/", clientv3.WithPrefix()), clientv3.OpPut("txn/d/k", "1")}, nil, true},
			{"put, nested put", []clientv3.Op{clientv3.OpPut("txn/d/k", "1"),
				clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("txn/d/k", "2")}, nil)}, nil, true},
			{"else duplicates", nil, []clientv3.Op{clientv3.OpPut("txn/d/k", "1"), clientv3.OpPut("txn/d/k", "2")}, true},
			// Allowed: the same key in the two branches, in a nested txn's two branches, and
			// two deletes of it.
			{"then and else", []clientv3.Op{clientv3.OpPut("txn/d/k", "1")}, []clientv3.Op{clientv3.OpPut("txn/d/k", "2")}, false},
			{"nested then and else", []clientv3.Op{clientv3.OpTxn(nil,
				[]clientv3.Op{clientv3.OpPut("txn/d/k", "1")}, []clientv3.Op{clientv3.OpPut("txn/d/k", "2")})}, nil, false},
			{"delete, delete", []clientv3.Op{clientv3.OpDelete("txn/d/k"), clientv3.OpDelete("txn/d/k")}, nil, false},
			{"get, put", []clientv3.Op{clientv3.OpGet("txn/d/k"), clientv3.OpPut("txn/d/k", "1")}, nil, false},
		}
		for _, tc := range cases {
			before, err := lcli.Get(ctx, "txn/d/k")
			ok(t, err, "get")
			_, err = lcli.Txn(ctx).Then(tc.then...).Else(tc.els...).Commit()
			if tc.dup {
				if err != rpctypes.ErrDuplicateKey {
					t.Errorf("%s: got %v (%T), want %v", tc.name, err, err, rpctypes.ErrDuplicateKey)
				}
				// A refused transaction writes nothing.
				after, err := lcli.Get(ctx, "txn/d/k")
				ok(t, err, "get")
				if after.Header.Revision != before.Header.Revision {
					t.Errorf("%s: refused, yet the revision moved from %d to %d", tc.name, before.Header.Revision, after.Header.Revision)
				}
			} else if err != nil {
				t.Errorf("%s: %v (etcd accepts it)", tc.name, err)
			}
		}
	})

	t.Run("TooManyOps", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		ops := func(n int) []clientv3.Op {
			var out []clientv3.Op
			for i := 0; i < n; i++ {
				out = append(out, clientv3.OpPut(fmt.Sprintf("txn/many/%03d", i), "v"))
			}
			return out
		}
		_, err := lcli.Txn(ctx).Then(ops(128)...).Commit()
		ok(t, err, "128 ops (the limit)")
		_, err = lcli.Txn(ctx).Then(ops(129)...).Commit()
		expectErr(t, err, rpctypes.ErrTooManyOps, "129 ops in then")
		_, err = lcli.Txn(ctx).Else(ops(129)...).Commit()
		expectErr(t, err, rpctypes.ErrTooManyOps, "129 ops in else")
		var cmps []clientv3.Cmp
		for i := 0; i < 129; i++ {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(fmt.Sprintf("txn/many/%03d", i)), ">", -1))
		}
		_, err = lcli.Txn(ctx).If(cmps...).Commit()
		expectErr(t, err, rpctypes.ErrTooManyOps, "129 compares")
		g, err := cli.Get(ctx, "txn/many/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		ok(t, err, "count")
		if g.Count != 128 {
			t.Fatalf("%d keys after the txns, want 128 (the refused ones must write nothing)", g.Count)
		}
	})
}

// TestRequestTooLarge: raftdb's -max-request-bytes refuses larger writes with etcd's error.
func TestRequestTooLarge(t *testing.T) {
	c := NewCluster(t, 1, "-max-request-bytes", "4096")
	cli := c.Client(t)
	ctx := timeoutCtx(t, 30*time.Second)
	_, err := cli.Put(ctx, "big/ok", strings.Repeat("v", 3000))
	ok(t, err, "3000-byte value under a 4096-byte limit")
	_, err = cli.Put(ctx, "big/no", strings.Repeat("v", 6000))
	expectErr(t, err, rpctypes.ErrRequestTooLarge, "6000-byte put")
	_, err = cli.Txn(ctx).Then(
		clientv3.OpPut("big/t1", strings.Repeat("a", 2500)),
		clientv3.OpPut("big/t2", strings.Repeat("b", 2500))).Commit()
	expectErr(t, err, rpctypes.ErrRequestTooLarge, "txn of two 2500-byte puts")
	g, err := cli.Get(ctx, "big/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	ok(t, err, "get")
	expectStrings(t, keysOf(g.Kvs), []string{"big/ok"}, "keys after the refused writes")
}
