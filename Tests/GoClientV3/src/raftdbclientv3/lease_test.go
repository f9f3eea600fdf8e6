package raftdbclientv3

import (
	"context"
	"sort"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	"go.etcd.io/etcd/mvcc/mvccpb"
)

func TestLease(t *testing.T) {
	c := NewCluster(t, 3)
	cli := c.Client(t)
	// KeepAliveOnce and the expected errors go to the leader: raftdb does not forward
	// LeaseKeepAlive streams (docs/API.md), and see TestAnyMemberServes/ErrorsThroughFollower.
	lcli := c.NodeClient(t, c.Leader())

	leaseListed := func(t *testing.T, ctx context.Context, id clientv3.LeaseID) bool {
		t.Helper()
		resp, err := cli.Leases(ctx)
		ok(t, err, "leases")
		for _, l := range resp.Leases {
			if l.ID == id {
				return true
			}
		}
		return false
	}

	t.Run("GrantAttachTimeToLive", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		g, err := cli.Grant(ctx, 10)
		ok(t, err, "grant")
		if g.ID == clientv3.NoLease || g.TTL != 10 {
			t.Fatalf("grant: id %x ttl %d, want a nonzero id and ttl 10", g.ID, g.TTL)
		}
		g2, err := cli.Grant(ctx, 10)
		ok(t, err, "second grant")
		if g2.ID == g.ID {
			t.Fatalf("two grants got the same id %x", g.ID)
		}
		for _, k := range []string{"l/a/2", "l/a/1"} {
			_, err := cli.Put(ctx, k, "v", clientv3.WithLease(g.ID))
			ok(t, err, "put with lease")
		}
		kv, err := cli.Get(ctx, "l/a/1")
		ok(t, err, "get")
		if only(t, kv, "leased key").Lease != int64(g.ID) {
			t.Fatalf("key's lease %x, want %x", kv.Kvs[0].Lease, g.ID)
		}
		ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
		ok(t, err, "time to live")
		var keys []string
		for _, k := range ttl.Keys {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		expectStrings(t, keys, []string{"l/a/1", "l/a/2"}, "attached keys")
		if ttl.ID != g.ID || ttl.GrantedTTL != 10 || ttl.TTL <= 0 || ttl.TTL > 10 {
			t.Fatalf("time to live: id %x granted %d remaining %d, want %x 10 (0,10]", ttl.ID, ttl.GrantedTTL, ttl.TTL, g.ID)
		}
		ttl, err = cli.TimeToLive(ctx, g2.ID)
		ok(t, err, "time to live without keys")
		if len(ttl.Keys) != 0 {
			t.Fatalf("keys of a lease with none: %q", ttl.Keys)
		}
		if !leaseListed(t, ctx, g.ID) || !leaseListed(t, ctx, g2.ID) {
			t.Fatal("Leases does not list the granted leases")
		}
	})

	t.Run("KeepAliveOnce", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		g, err := cli.Grant(ctx, 5)
		ok(t, err, "grant")
		time.Sleep(2100 * time.Millisecond)
		before, err := cli.TimeToLive(ctx, g.ID)
		ok(t, err, "time to live")
		// etcd truncates the remaining time (2 here); raftdb rounds up and reports up to a second
		// more (4 here), so only "less than granted" is asked.
		if before.TTL >= 5 || before.TTL < 1 {
			t.Fatalf("remaining TTL %d after 2.1 s of a 5 s lease, want 1..4", before.TTL)
		}
		ka, err := lcli.KeepAliveOnce(ctx, g.ID)
		ok(t, err, "keep alive once")
		if ka.ID != g.ID || ka.TTL != 5 {
			t.Fatalf("keep alive: id %x ttl %d, want %x 5", ka.ID, ka.TTL, g.ID)
		}
		after, err := cli.TimeToLive(ctx, g.ID)
		ok(t, err, "time to live")
		if after.TTL < 4 || after.TTL <= before.TTL {
			t.Fatalf("remaining TTL %d just after a keep-alive of a 5 s lease (before it: %d)", after.TTL, before.TTL)
		}
	})

	t.Run("KeepAliveKeepsItPastTTL", func(t *testing.T) {
		ctx := timeoutCtx(t, 40*time.Second)
		g, err := cli.Grant(ctx, 3)
		ok(t, err, "grant")
		_, err = cli.Put(ctx, "l/ka", "v", clientv3.WithLease(g.ID))
		ok(t, err, "put")
		kctx, stop := context.WithCancel(ctx)
		defer stop()
		// All endpoints: clientv3 retries a keep-alive stream that a follower ends.
		kch, err := cli.KeepAlive(kctx, g.ID)
		ok(t, err, "keep alive")
		renewals := 0
		until := time.After(7 * time.Second) // more than twice the TTL
	loop:
		for {
			select {
			case resp, open := <-kch:
				if !open {
					t.Fatalf("keep-alive channel closed after %d renewals", renewals)
				}
				if resp.ID != g.ID || resp.TTL != 3 {
					t.Fatalf("renewal: id %x ttl %d, want %x 3", resp.ID, resp.TTL, g.ID)
				}
				renewals++
			case <-until:
				break loop
			}
		}
		if renewals < 3 {
			t.Fatalf("%d renewals in 7 s of a 3 s lease, want at least 3", renewals)
		}
		gk, err := cli.Get(ctx, "l/ka")
		ok(t, err, "get")
		if len(gk.Kvs) != 1 {
			t.Fatal("leased key gone although the lease was kept alive")
		}
		// Stopping the keep-alives lets it expire.
		wch := cli.Watch(ctx, "l/ka", clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		stop()
		evs := collectEvents(t, wch, 1, 10*time.Second)
		if evs[0].Type != mvccpb.DELETE {
			t.Fatalf("after the keep-alives stopped: %s, want a DELETE", eventString(evs[0]))
		}
	})

	t.Run("ExpiryDeletesAttachedKeys", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		g, err := cli.Grant(ctx, 1)
		ok(t, err, "grant")
		granted := time.Now()
		wch := cli.Watch(ctx, "l/exp/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		for _, k := range []string{"l/exp/a", "l/exp/b"} {
			_, err := cli.Put(ctx, k, "v", clientv3.WithLease(g.ID))
			ok(t, err, "put")
		}
		_, err = cli.Put(ctx, "l/exp/c", "no lease")
		ok(t, err, "put")
		evs := collectEvents(t, wch, 5, 15*time.Second)
		if time.Since(granted) < time.Duration(g.TTL)*time.Second {
			t.Fatalf("keys deleted %v after a %d s grant, before the TTL", time.Since(granted), g.TTL)
		}
		for _, ev := range evs[:3] {
			if ev.Type != mvccpb.PUT {
				t.Fatalf("expected the three puts first, got %s", eventString(ev))
			}
		}
		a, b := evs[3], evs[4]
		if a.Type != mvccpb.DELETE || b.Type != mvccpb.DELETE || a.Kv.ModRevision != b.Kv.ModRevision {
			t.Fatalf("expiry: %s, %s; want two DELETEs at one revision", eventString(a), eventString(b))
		}
		g2, err := cli.Get(ctx, "l/exp/", clientv3.WithPrefix())
		ok(t, err, "get")
		expectStrings(t, keysOf(g2.Kvs), []string{"l/exp/c"}, "keys after expiry")
		ttl, err := cli.TimeToLive(ctx, g.ID)
		ok(t, err, "time to live of an expired lease")
		if ttl.TTL != -1 {
			t.Fatalf("TTL of an expired lease %d, want -1", ttl.TTL)
		}
		if leaseListed(t, ctx, g.ID) {
			t.Fatal("expired lease still listed")
		}
	})

	t.Run("Revoke", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		g, err := cli.Grant(ctx, 60)
		ok(t, err, "grant")
		for _, k := range []string{"l/rv/a", "l/rv/b"} {
			_, err := cli.Put(ctx, k, "v", clientv3.WithLease(g.ID))
			ok(t, err, "put")
		}
		wch := cli.Watch(ctx, "l/rv/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		rv, err := cli.Revoke(ctx, g.ID)
		ok(t, err, "revoke")
		evs := collectEvents(t, wch, 2, 10*time.Second)
		for _, ev := range evs {
			if ev.Type != mvccpb.DELETE || ev.Kv.ModRevision != rv.Header.Revision {
				t.Fatalf("revoke at %d: %s, want DELETE at it", rv.Header.Revision, eventString(ev))
			}
		}
		ttl, err := cli.TimeToLive(ctx, g.ID)
		ok(t, err, "time to live")
		if ttl.TTL != -1 {
			t.Fatalf("TTL of a revoked lease %d, want -1", ttl.TTL)
		}
		_, err = lcli.Revoke(ctx, g.ID)
		expectErr(t, err, rpctypes.ErrLeaseNotFound, "second revoke")
	})

	t.Run("UnknownLease", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		const unknown = clientv3.LeaseID(0x1234abcd)
		_, err := lcli.Revoke(ctx, unknown)
		expectErr(t, err, rpctypes.ErrLeaseNotFound, "revoke")
		_, err = lcli.Put(ctx, "l/unknown", "v", clientv3.WithLease(unknown))
		expectErr(t, err, rpctypes.ErrLeaseNotFound, "put with an unknown lease")
		_, err = lcli.KeepAliveOnce(ctx, unknown)
		expectErr(t, err, rpctypes.ErrLeaseNotFound, "keep alive once")
		ttl, err := lcli.TimeToLive(ctx, unknown)
		ok(t, err, "time to live")
		if ttl.TTL != -1 {
			t.Fatalf("TTL of an unknown lease %d, want -1", ttl.TTL)
		}
		kch, err := lcli.KeepAlive(ctx, unknown)
		ok(t, err, "keep alive")
		select {
		case resp, open := <-kch:
			if open {
				t.Fatalf("keep-alive of an unknown lease answered %+v; want the channel closed", resp)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("keep-alive channel of an unknown lease not closed")
		}
		g, err := cli.Get(ctx, "l/unknown")
		ok(t, err, "get")
		if len(g.Kvs) != 0 {
			t.Fatal("put with an unknown lease wrote the key")
		}
	})
}
