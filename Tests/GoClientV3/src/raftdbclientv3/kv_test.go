package raftdbclientv3

import (
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
)

// TestKV: Put, Range and DeleteRange as clientv3 sees them, on one three-member cluster.
func TestKV(t *testing.T) {
	c := NewCluster(t, 3)
	cli := c.Client(t)
	// Calls expected to fail go to the leader: see TestAnyMemberServes/ErrorsThroughFollower for
	// the same errors through a follower.
	lcli := c.NodeClient(t, c.Leader())

	t.Run("RevisionsAdvanceByOnePerWrite", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		start, err := cli.Get(ctx, "kv/a")
		ok(t, err, "get")
		if len(start.Kvs) != 0 {
			t.Fatalf("kv/a exists before the test: %v", start.Kvs)
		}
		r0 := start.Header.Revision
		if start.Header.ClusterId == 0 || start.Header.MemberId == 0 || start.Header.RaftTerm == 0 {
			t.Fatalf("header lacks cluster id, member id or raft term: %+v", start.Header)
		}

		p1, err := cli.Put(ctx, "kv/a", "1", clientv3.WithPrevKV())
		ok(t, err, "put 1")
		if p1.Header.Revision != r0+1 || p1.PrevKv != nil {
			t.Fatalf("first put: revision %d (want %d), prev_kv %v (want none)", p1.Header.Revision, r0+1, p1.PrevKv)
		}
		g, err := cli.Get(ctx, "kv/a")
		ok(t, err, "get")
		expectKV(t, only(t, g, "after put 1"), "1", r0+1, r0+1, 1, "after put 1")
		if g.Header.Revision != r0+1 {
			t.Fatalf("a read moved the revision: %d, want %d", g.Header.Revision, r0+1)
		}

		p2, err := cli.Put(ctx, "kv/a", "2", clientv3.WithPrevKV())
		ok(t, err, "put 2")
		if p2.Header.Revision != r0+2 {
			t.Fatalf("second put at revision %d, want %d", p2.Header.Revision, r0+2)
		}
		expectKV(t, p2.PrevKv, "1", r0+1, r0+1, 1, "prev_kv of put 2")
		g, err = cli.Get(ctx, "kv/a")
		ok(t, err, "get")
		expectKV(t, only(t, g, "after put 2"), "2", r0+1, r0+2, 2, "after put 2")

		p3, err := cli.Put(ctx, "kv/b", "x")
		ok(t, err, "put kv/b")
		if p3.Header.Revision != r0+3 {
			t.Fatalf("put of another key at %d, want %d", p3.Header.Revision, r0+3)
		}

		d1, err := cli.Delete(ctx, "kv/a")
		ok(t, err, "delete")
		if d1.Deleted != 1 || d1.Header.Revision != r0+4 {
			t.Fatalf("delete: deleted %d at %d, want 1 at %d", d1.Deleted, d1.Header.Revision, r0+4)
		}
		// Deleting nothing writes nothing: the revision stays.
		d2, err := cli.Delete(ctx, "kv/a")
		ok(t, err, "delete again")
		if d2.Deleted != 0 || d2.Header.Revision != r0+4 {
			t.Fatalf("delete of a missing key: deleted %d at %d, want 0 at %d", d2.Deleted, d2.Header.Revision, r0+4)
		}

		// A key put again after its deletion starts over: new create revision, version 1.
		p4, err := cli.Put(ctx, "kv/a", "3", clientv3.WithPrevKV())
		ok(t, err, "put 3")
		if p4.Header.Revision != r0+5 || p4.PrevKv != nil {
			t.Fatalf("put after delete: revision %d (want %d), prev_kv %v (want none)", p4.Header.Revision, r0+5, p4.PrevKv)
		}
		g, err = cli.Get(ctx, "kv/a")
		ok(t, err, "get")
		expectKV(t, only(t, g, "after put 3"), "3", r0+5, r0+5, 1, "after re-creation")
	})

	t.Run("IgnoreValueAndIgnoreLease", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		_, err := lcli.Put(ctx, "kv/ig", "", clientv3.WithIgnoreValue())
		expectErr(t, err, rpctypes.ErrKeyNotFound, "ignore_value on a missing key")
		_, err = lcli.Put(ctx, "kv/ig", "", clientv3.WithIgnoreLease())
		expectErr(t, err, rpctypes.ErrKeyNotFound, "ignore_lease on a missing key")

		p, err := lcli.Put(ctx, "kv/ig", "v")
		ok(t, err, "put")
		lease, err := lcli.Grant(ctx, 60)
		ok(t, err, "grant")
		// ignore_value: the value stays, the lease changes.
		_, err = lcli.Put(ctx, "kv/ig", "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease.ID))
		ok(t, err, "put ignore_value with lease")
		g, err := lcli.Get(ctx, "kv/ig")
		ok(t, err, "get")
		kv := only(t, g, "after ignore_value")
		expectKV(t, kv, "v", p.Header.Revision, g.Header.Revision, 2, "after ignore_value")
		if kv.Lease != int64(lease.ID) {
			t.Fatalf("ignore_value put did not attach lease %x: %x", lease.ID, kv.Lease)
		}
		// ignore_lease: the value changes, the lease stays.
		_, err = lcli.Put(ctx, "kv/ig", "w", clientv3.WithIgnoreLease())
		ok(t, err, "put ignore_lease")
		g, err = lcli.Get(ctx, "kv/ig")
		ok(t, err, "get")
		kv = only(t, g, "after ignore_lease")
		if string(kv.Value) != "w" || kv.Lease != int64(lease.ID) || kv.Version != 3 {
			t.Fatalf("after ignore_lease: value %q lease %x version %d, want \"w\" %x 3", kv.Value, kv.Lease, kv.Version, lease.ID)
		}
		_, err = lcli.Put(ctx, "kv/ig", "x", clientv3.WithIgnoreValue())
		checkErr(t, err, rpctypes.ErrValueProvided, "ignore_value with a value")
		_, err = lcli.Put(ctx, "kv/ig", "x", clientv3.WithIgnoreLease(), clientv3.WithLease(lease.ID))
		checkErr(t, err, rpctypes.ErrLeaseProvided, "ignore_lease with a lease")
		g, err = lcli.Get(ctx, "kv/ig")
		ok(t, err, "get")
		if kv := only(t, g, "after refused puts"); string(kv.Value) != "w" || kv.Version != 3 {
			t.Errorf("a refused put changed the key: %q version %d", kv.Value, kv.Version)
		}
	})

	t.Run("Ranges", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		// Values chosen so that value order, key order and revision order all differ.
		puts := []struct{ k, v string }{
			{"kv/r/c", "3"}, {"kv/r/a", "5"}, {"kv/r/e", "1"}, {"kv/r/b", "4"}, {"kv/r/d", "2"},
			{"kv/r0", "outside"}, {"kv/s", "outside"},
		}
		revs := map[string]int64{}
		for _, p := range puts {
			resp, err := cli.Put(ctx, p.k, p.v)
			ok(t, err, "put "+p.k)
			revs[p.k] = resp.Header.Revision
		}
		// kv/r/a gets a second version: versions now differ too.
		resp, err := cli.Put(ctx, "kv/r/a", "5")
		ok(t, err, "put kv/r/a again")
		revs["kv/r/a"] = resp.Header.Revision

		g, err := cli.Get(ctx, "kv/r/", clientv3.WithPrefix())
		ok(t, err, "prefix")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/a", "kv/r/b", "kv/r/c", "kv/r/d", "kv/r/e"}, "prefix")
		if g.Count != 5 || g.More {
			t.Fatalf("prefix: count %d more %v, want 5 false", g.Count, g.More)
		}
		g, err = cli.Get(ctx, "kv/r/b", clientv3.WithRange("kv/r/d"))
		ok(t, err, "range")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/b", "kv/r/c"}, "[kv/r/b, kv/r/d)")

		for _, k := range []string{"~fk/a", "~fk/b", "~fk/c"} {
			_, err := cli.Put(ctx, k, "v")
			ok(t, err, "put "+k)
		}
		g, err = cli.Get(ctx, "~fk/b", clientv3.WithFromKey())
		ok(t, err, "from key")
		expectStrings(t, keysOf(g.Kvs), []string{"~fk/b", "~fk/c"}, "from ~fk/b")

		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithLimit(2))
		ok(t, err, "limit 2")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/a", "kv/r/b"}, "limit 2")
		if !g.More || g.Count != 5 {
			t.Fatalf("limit 2: more %v count %d, want true 5", g.More, g.Count)
		}
		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithLimit(5))
		ok(t, err, "limit 5")
		if len(g.Kvs) != 5 || g.More || g.Count != 5 {
			t.Fatalf("limit 5: %d keys more %v count %d, want 5 false 5", len(g.Kvs), g.More, g.Count)
		}

		sorts := []struct {
			name   string
			target clientv3.SortTarget
			order  clientv3.SortOrder
			want   []string
		}{
			{"key descending", clientv3.SortByKey, clientv3.SortDescend, []string{"kv/r/e", "kv/r/d", "kv/r/c", "kv/r/b", "kv/r/a"}},
			{"value ascending", clientv3.SortByValue, clientv3.SortAscend, []string{"kv/r/e", "kv/r/d", "kv/r/c", "kv/r/b", "kv/r/a"}},
			{"create ascending", clientv3.SortByCreateRevision, clientv3.SortAscend, []string{"kv/r/c", "kv/r/a", "kv/r/e", "kv/r/b", "kv/r/d"}},
			{"mod descending", clientv3.SortByModRevision, clientv3.SortDescend, []string{"kv/r/a", "kv/r/d", "kv/r/b", "kv/r/e", "kv/r/c"}},
		}
		for _, s := range sorts {
			g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithSort(s.target, s.order))
			ok(t, err, s.name)
			expectStrings(t, keysOf(g.Kvs), s.want, "sort by "+s.name)
		}
		// Version: kv/r/a is the only one at version 2, so it sorts last ascending.
		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortAscend))
		ok(t, err, "sort by version")
		if k := keysOf(g.Kvs); len(k) != 5 || k[4] != "kv/r/a" {
			t.Fatalf("sort by version ascending: %q, want kv/r/a last", k)
		}
		// The limit applies after sorting.
		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(2))
		ok(t, err, "sort+limit")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/e", "kv/r/d"}, "key descending, limit 2")
		if !g.More || g.Count != 5 {
			t.Fatalf("sorted limit: more %v count %d, want true 5", g.More, g.Count)
		}

		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		ok(t, err, "keys only")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/a", "kv/r/b", "kv/r/c", "kv/r/d", "kv/r/e"}, "keys only")
		for _, kv := range g.Kvs {
			if len(kv.Value) != 0 || kv.ModRevision != revs[string(kv.Key)] {
				t.Fatalf("keys only: %q has value %q mod %d (want none, %d)", kv.Key, kv.Value, kv.ModRevision, revs[string(kv.Key)])
			}
		}
		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		ok(t, err, "count only")
		if len(g.Kvs) != 0 || g.Count != 5 {
			t.Fatalf("count only: %d keys count %d, want 0 5", len(g.Kvs), g.Count)
		}
		g, err = cli.Get(ctx, "kv/r/", clientv3.WithPrefix(), clientv3.WithMinModRev(revs["kv/r/d"]))
		ok(t, err, "min mod revision")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/r/a", "kv/r/d"}, "mod revision >= kv/r/d's")
	})

	t.Run("PastRevisions", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		var revs []int64
		for _, v := range []string{"1", "2", "3"} {
			p, err := cli.Put(ctx, "kv/h", v)
			ok(t, err, "put")
			revs = append(revs, p.Header.Revision)
		}
		d, err := cli.Delete(ctx, "kv/h")
		ok(t, err, "delete")
		for i, v := range []string{"1", "2", "3"} {
			g, err := cli.Get(ctx, "kv/h", clientv3.WithRev(revs[i]))
			ok(t, err, "get at revision")
			expectKV(t, only(t, g, "past"), v, revs[0], revs[i], int64(i+1), "kv/h at its revision")
			// The header still carries the current revision.
			if g.Header.Revision < d.Header.Revision {
				t.Fatalf("header revision %d of a past read is below the current %d", g.Header.Revision, d.Header.Revision)
			}
		}
		g, err := cli.Get(ctx, "kv/h", clientv3.WithRev(revs[0]-1))
		ok(t, err, "get before creation")
		if len(g.Kvs) != 0 {
			t.Fatalf("kv/h exists before it was created: %v", g.Kvs)
		}
		g, err = cli.Get(ctx, "kv/h", clientv3.WithRev(d.Header.Revision))
		ok(t, err, "get at deletion")
		if len(g.Kvs) != 0 {
			t.Fatalf("kv/h exists at its deletion's revision: %v", g.Kvs)
		}
		_, err = lcli.Get(ctx, "kv/h", clientv3.WithRev(d.Header.Revision+1000))
		expectErr(t, err, rpctypes.ErrFutureRev, "get at a future revision")
	})

	t.Run("DeleteRange", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		for _, k := range []string{"kv/d/1", "kv/d/2", "kv/d/3", "kv/d/4", "kv/d5"} {
			_, err := cli.Put(ctx, k, "v"+k)
			ok(t, err, "put")
		}
		d, err := cli.Delete(ctx, "kv/d/2", clientv3.WithRange("kv/d/4"))
		ok(t, err, "delete range")
		if d.Deleted != 2 || len(d.PrevKvs) != 0 {
			t.Fatalf("delete [kv/d/2, kv/d/4): deleted %d, prev_kvs %d; want 2, 0", d.Deleted, len(d.PrevKvs))
		}
		d, err = cli.Delete(ctx, "kv/d/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		ok(t, err, "delete prefix")
		if d.Deleted != 2 {
			t.Fatalf("delete prefix: deleted %d, want 2", d.Deleted)
		}
		expectStrings(t, keysOf(d.PrevKvs), []string{"kv/d/1", "kv/d/4"}, "prev_kvs")
		expectStrings(t, valuesOf(d.PrevKvs), []string{"vkv/d/1", "vkv/d/4"}, "prev_kvs values")
		// Both went at one revision.
		before, err := cli.Get(ctx, "kv/d/", clientv3.WithPrefix(), clientv3.WithRev(d.Header.Revision-1))
		ok(t, err, "get before")
		if before.Count != 2 {
			t.Fatalf("one revision before the prefix delete: %d keys, want 2", before.Count)
		}
		g, err := cli.Get(ctx, "kv/d", clientv3.WithPrefix())
		ok(t, err, "get after")
		expectStrings(t, keysOf(g.Kvs), []string{"kv/d5"}, "left after deletes")
	})

	t.Run("EmptyKey", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		_, err := cli.Put(ctx, "", "v")
		expectErr(t, err, rpctypes.ErrEmptyKey, "put of an empty key")
		_, err = cli.Get(ctx, "")
		expectErr(t, err, rpctypes.ErrEmptyKey, "get of an empty key")
		_, err = cli.Delete(ctx, "")
		expectErr(t, err, rpctypes.ErrEmptyKey, "delete of an empty key")
	})

	t.Run("SerializableReadOnFollower", func(t *testing.T) {
		ctx := timeoutCtx(t, 20*time.Second)
		f := c.Follower()
		fcli := c.NodeClient(t, f)
		fid := c.MemberID(f)
		p, err := cli.Put(ctx, "kv/ser", "v1")
		ok(t, err, "put")
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, err := fcli.Get(ctx, "kv/ser", clientv3.WithSerializable())
			ok(t, err, "serializable get on the follower")
			if g.Header.MemberId != fid {
				t.Fatalf("serializable read answered by member %x, want the follower %x", g.Header.MemberId, fid)
			}
			if len(g.Kvs) == 1 && g.Kvs[0].ModRevision == p.Header.Revision && string(g.Kvs[0].Value) == "v1" {
				break
			}
			if len(g.Kvs) == 1 && g.Kvs[0].ModRevision > p.Header.Revision {
				t.Fatalf("follower shows a revision %d newer than the only write %d", g.Kvs[0].ModRevision, p.Header.Revision)
			}
			if time.Now().After(deadline) {
				t.Fatalf("follower never applied the put at %d: %v", p.Header.Revision, g.Kvs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// A serializable read of a past revision works on a follower too.
		g, err := fcli.Get(ctx, "kv/ser", clientv3.WithSerializable(), clientv3.WithRev(p.Header.Revision-1))
		ok(t, err, "serializable past get")
		if len(g.Kvs) != 0 {
			t.Fatalf("kv/ser before its put: %v", g.Kvs)
		}
	})
}
