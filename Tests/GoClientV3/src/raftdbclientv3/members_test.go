package raftdbclientv3

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
)

// TestAnyMemberServes: a client connected to a follower alone gets the service a client of the
// leader gets (raftdb forwards to the leader what needs it).
func TestAnyMemberServes(t *testing.T) {
	c := NewCluster(t, 3)
	leader := c.Leader()
	f := c.Follower()
	lcli := c.NodeClient(t, leader)
	fcli := c.NodeClient(t, f)

	t.Run("LinearizableAcrossMembers", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		// Each write is acknowledged by one member; a linearizable read that starts after the
		// acknowledgement must see it on the other member at once, with no retry.
		for i := 0; i < 40; i++ {
			w, r := lcli, fcli
			if i%2 == 1 {
				w, r = fcli, lcli
			}
			val := fmt.Sprint(i)
			p, err := w.Put(ctx, "any/k", val)
			ok(t, err, "put")
			g, err := r.Get(ctx, "any/k")
			ok(t, err, "linearizable get")
			kv := only(t, g, "any/k")
			if string(kv.Value) != val || kv.ModRevision != p.Header.Revision || g.Header.Revision < p.Header.Revision {
				t.Fatalf("round %d: read %q@%d (header %d) after the write of %q@%d was acknowledged",
					i, kv.Value, kv.ModRevision, g.Header.Revision, val, p.Header.Revision)
			}
		}
		// Txn and delete through the follower.
		resp, err := fcli.Txn(timeoutCtx(t, 10*time.Second)).If(clientv3.Compare(clientv3.Value("any/k"), "=", "39")).
			Then(clientv3.OpPut("any/t", "yes"), clientv3.OpDelete("any/k")).Commit()
		ok(t, err, "txn through the follower")
		if !resp.Succeeded {
			t.Fatal("txn compare on the latest value failed through the follower")
		}
		g, err := lcli.Get(ctx, "any/", clientv3.WithPrefix())
		ok(t, err, "get")
		expectStrings(t, keysOf(g.Kvs), []string{"any/t"}, "keys after the follower's txn")
	})

	t.Run("LeasesThroughFollower", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		g, err := fcli.Grant(ctx, 30)
		ok(t, err, "grant through the follower")
		_, err = fcli.Put(ctx, "any/l", "v", clientv3.WithLease(g.ID))
		ok(t, err, "put with lease")
		ttl, err := fcli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
		ok(t, err, "time to live through the follower")
		if ttl.GrantedTTL != 30 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "any/l" {
			t.Fatalf("time to live: granted %d keys %q", ttl.GrantedTTL, ttl.Keys)
		}
		// The leader knows it.
		lttl, err := lcli.TimeToLive(ctx, g.ID)
		ok(t, err, "time to live on the leader")
		if lttl.GrantedTTL != 30 {
			t.Fatalf("leader sees lease granted %d", lttl.GrantedTTL)
		}
		_, err = fcli.Revoke(ctx, g.ID)
		ok(t, err, "revoke through the follower")
		gk, err := fcli.Get(ctx, "any/l")
		ok(t, err, "get")
		if len(gk.Kvs) != 0 {
			t.Fatal("leased key left after revoke through the follower")
		}
	})

	t.Run("MembersAndStatus", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		ml, err := fcli.MemberList(ctx)
		ok(t, err, "member list")
		var names, urls []string
		for _, m := range ml.Members {
			if m.IsLearner {
				t.Fatalf("%s is still a learner", m.Name)
			}
			names = append(names, m.Name)
			urls = append(urls, m.ClientURLs...)
		}
		sort.Strings(names)
		sort.Strings(urls)
		var wantURLs []string
		for _, ep := range c.Endpoints() {
			wantURLs = append(wantURLs, "http://"+ep)
		}
		sort.Strings(wantURLs)
		expectStrings(t, names, []string{"node01", "node02", "node03"}, "member names")
		expectStrings(t, urls, wantURLs, "client URLs")
		leaderID := c.MemberID(leader)
		for i, ep := range c.Endpoints() {
			st, err := lcli.Status(ctx, ep)
			ok(t, err, "status of "+ep)
			if st.Leader != leaderID || st.Header.MemberId != c.MemberID(i) || st.IsLearner {
				t.Fatalf("status of %s: leader %x member %x learner %v; want leader %x member %x",
					ep, st.Leader, st.Header.MemberId, st.IsLearner, leaderID, c.MemberID(i))
			}
		}
	})

	// What the leader answers with an etcd error must reach a follower's client as that error.
	// Compaction is last: the others read no history.
	t.Run("ErrorsThroughFollower", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		_, err := fcli.Put(ctx, "any/missing", "", clientv3.WithIgnoreValue())
		checkErr(t, err, rpctypes.ErrKeyNotFound, "put ignore_value of a missing key")
		g, err := lcli.Get(ctx, "any/x")
		ok(t, err, "get")
		_, err = fcli.Get(ctx, "any/x", clientv3.WithRev(g.Header.Revision+1000))
		checkErr(t, err, rpctypes.ErrFutureRev, "linearizable get at a future revision")
		_, err = fcli.Txn(ctx).Then(clientv3.OpPut("any/d", "1"), clientv3.OpPut("any/d", "2")).Commit()
		checkErr(t, err, rpctypes.ErrDuplicateKey, "txn with a duplicate key")
		var ops []clientv3.Op
		for i := 0; i < 129; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("any/m/%d", i), "v"))
		}
		_, err = fcli.Txn(ctx).Then(ops...).Commit()
		checkErr(t, err, rpctypes.ErrTooManyOps, "txn of 129 ops")
		_, err = fcli.Put(ctx, "any/u", "v", clientv3.WithLease(0x5eed))
		checkErr(t, err, rpctypes.ErrLeaseNotFound, "put with an unknown lease")
		_, err = fcli.Revoke(ctx, 0x5eed)
		checkErr(t, err, rpctypes.ErrLeaseNotFound, "revoke of an unknown lease")
		p, err := lcli.Put(ctx, "any/c", "v")
		ok(t, err, "put")
		_, err = lcli.Compact(ctx, p.Header.Revision)
		ok(t, err, "compact")
		_, err = fcli.Get(ctx, "any/c", clientv3.WithRev(p.Header.Revision-1))
		checkErr(t, err, rpctypes.ErrCompacted, "linearizable get below the compaction")
		_, err = fcli.Compact(ctx, p.Header.Revision-1)
		checkErr(t, err, rpctypes.ErrCompacted, "compaction below the compaction")
	})
}

// TestFailover: a client given every endpoint carries on after the member serving it is killed.
func TestFailover(t *testing.T) {
	c := NewCluster(t, 3)
	cli := c.Client(t)
	acked := map[string]string{}
	n := 0
	// write puts until `want` succeed (within the deadline); errors are outcomes unknown.
	write := func(want int, deadline time.Duration) (failures int) {
		t.Helper()
		end := time.Now().Add(deadline)
		for ok := 0; ok < want; {
			if time.Now().After(end) {
				t.Fatalf("only %d of %d writes succeeded within %v (%d failures)", ok, want, deadline, failures)
			}
			ctx := timeoutCtx(t, 2*time.Second)
			key, val := fmt.Sprintf("fo/%04d", n), fmt.Sprintf("v%d", n)
			n++
			if _, err := cli.Put(ctx, key, val); err != nil {
				failures++
				time.Sleep(50 * time.Millisecond)
				continue
			}
			acked[key] = val
			ok++
		}
		return failures
	}
	write(20, 10*time.Second)
	for round, pick := range []string{"leader", "follower"} {
		victim := c.Leader()
		if pick == "follower" {
			victim = c.Follower()
		}
		c.Kill(victim)
		began := time.Now()
		failures := write(20, 20*time.Second)
		t.Logf("round %d: killed the %s %s; 20 writes done %v later, %d failed on the way",
			round, pick, c.Nodes[victim].Name, time.Since(began).Round(time.Millisecond), failures)
		// Linearizable reads and lease grants carry on too.
		ctx := timeoutCtx(t, 20*time.Second)
		_, err := cli.Get(ctx, "fo/0000")
		ok(t, err, "get after the kill")
		var lease *clientv3.LeaseGrantResponse
		for attempt := 0; ; attempt++ {
			lease, err = cli.Grant(ctx, 30)
			if err == nil || attempt == 20 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		ok(t, err, "grant after the kill")
		if _, err := cli.Put(ctx, "fo/leased", "v", clientv3.WithLease(lease.ID)); err != nil {
			// One more unknown outcome is fine; a second means the client did not fail over.
			_, err = cli.Put(ctx, "fo/leased", "v", clientv3.WithLease(lease.ID))
			ok(t, err, "put with the new lease")
		}
		c.Start(victim)
		if _, err := c.WaitReady(30 * time.Second); err != nil {
			t.Fatalf("cluster not ready after %s restarted: %v", c.Nodes[victim].Name, err)
		}
	}
	// Every acknowledged write is there.
	ctx := timeoutCtx(t, 20*time.Second)
	g, err := cli.Get(ctx, "fo/", clientv3.WithPrefix())
	ok(t, err, "get")
	got := map[string]string{}
	for _, kv := range g.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	for k, v := range acked {
		if got[k] != v {
			t.Fatalf("acknowledged %s=%s, read %q", k, v, got[k])
		}
	}
}
