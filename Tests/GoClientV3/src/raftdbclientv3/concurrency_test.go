package raftdbclientv3

// clientv3/concurrency's recipes (Session, Mutex, Election, STM) are built by the client from
// KV, Txn, Watch and Lease calls, so they work on raftdb without its v3lock/v3election services.
// clientv3 3.4.23's Mutex has no TryLock (it came in 3.5), so none is tested.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

func newSession(t testing.TB, cli *clientv3.Client, ttl int) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	ok(t, err, "new session")
	t.Cleanup(func() { s.Orphan() })
	return s
}

// lockAsync starts m.Lock and returns a channel that gets its result.
func lockAsync(ctx context.Context, m *concurrency.Mutex) <-chan error {
	done := make(chan error, 1)
	go func() { done <- m.Lock(ctx) }()
	return done
}

func expectBlocked(t testing.TB, done <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) while it should wait", what, err)
	case <-time.After(d):
	}
}

func expectDone(t testing.TB, done <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		ok(t, err, what)
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// holds checks with a guarded write that m holds its lock now (or not).
func holds(t testing.TB, ctx context.Context, cli *clientv3.Client, m *concurrency.Mutex, want bool, what string) {
	t.Helper()
	resp, err := cli.Txn(ctx).If(m.IsOwner()).Commit()
	ok(t, err, "owner txn")
	if resp.Succeeded != want {
		t.Fatalf("%s: IsOwner compare %v, want %v", what, resp.Succeeded, want)
	}
}

func TestConcurrency(t *testing.T) {
	c := NewCluster(t, 3)
	clients := []*clientv3.Client{c.Client(t), c.Client(t), c.Client(t)}
	cli := clients[0]

	t.Run("Session", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		s := newSession(t, cli, 5)
		ttl, err := cli.TimeToLive(ctx, s.Lease())
		ok(t, err, "time to live")
		if ttl.GrantedTTL != 5 || ttl.TTL <= 0 {
			t.Fatalf("session lease: granted %d remaining %d", ttl.GrantedTTL, ttl.TTL)
		}
		ok(t, s.Close(), "close")
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("session not done after Close")
		}
		ttl, err = cli.TimeToLive(ctx, s.Lease())
		ok(t, err, "time to live")
		if ttl.TTL != -1 {
			t.Fatalf("lease of a closed session: TTL %d, want -1 (revoked)", ttl.TTL)
		}
	})

	t.Run("MutexExclusionAndOrder", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		var ms []*concurrency.Mutex
		for i := 0; i < 3; i++ {
			ms = append(ms, concurrency.NewMutex(newSession(t, clients[i], 10), "mx/a"))
		}
		ok(t, ms[0].Lock(ctx), "first lock")
		holds(t, ctx, cli, ms[0], true, "first holder")
		second := lockAsync(ctx, ms[1])
		expectBlocked(t, second, time.Second, "second Lock")
		third := lockAsync(ctx, ms[2])
		expectBlocked(t, third, 500*time.Millisecond, "third Lock")
		// Waiters are served in the order they queued (their keys' create revisions).
		ok(t, ms[0].Unlock(ctx), "first unlock")
		expectDone(t, second, 10*time.Second, "second Lock")
		expectBlocked(t, third, 500*time.Millisecond, "third Lock while the second holds")
		holds(t, ctx, cli, ms[1], true, "second holder")
		holds(t, ctx, cli, ms[0], false, "first after unlock")
		ok(t, ms[1].Unlock(ctx), "second unlock")
		expectDone(t, third, 10*time.Second, "third Lock")
		holds(t, ctx, cli, ms[2], true, "third holder")
		ok(t, ms[2].Unlock(ctx), "third unlock")
		g, err := cli.Get(ctx, "mx/a/", clientv3.WithPrefix())
		ok(t, err, "get")
		if len(g.Kvs) != 0 {
			t.Fatalf("lock keys left after every unlock: %q", keysOf(g.Kvs))
		}
	})

	t.Run("MutexReleasedBySessionClose", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		s1 := newSession(t, clients[0], 30)
		m1 := concurrency.NewMutex(s1, "mx/close")
		m2 := concurrency.NewMutex(newSession(t, clients[1], 30), "mx/close")
		ok(t, m1.Lock(ctx), "lock")
		second := lockAsync(ctx, m2)
		expectBlocked(t, second, time.Second, "second Lock")
		ok(t, s1.Close(), "close the holder's session")
		expectDone(t, second, 10*time.Second, "Lock after the holder's session closed")
		holds(t, ctx, cli, m2, true, "new holder")
		holds(t, ctx, cli, m1, false, "old holder")
	})

	t.Run("MutexReleasedByLeaseExpiry", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		s1 := newSession(t, clients[0], 2)
		m1 := concurrency.NewMutex(s1, "mx/expire")
		m2 := concurrency.NewMutex(newSession(t, clients[1], 30), "mx/expire")
		ok(t, m1.Lock(ctx), "lock")
		second := lockAsync(ctx, m2)
		expectBlocked(t, second, time.Second, "second Lock")
		// Stop the keep-alives without revoking: the lease runs out.
		s1.Orphan()
		orphaned := time.Now()
		expectDone(t, second, 15*time.Second, "Lock after the holder's lease expired")
		// The last renewal was at most a third of the TTL before Orphan.
		if waited := time.Since(orphaned); waited < 1200*time.Millisecond {
			t.Fatalf("lock passed on %v after the 2 s session stopped renewing: before its lease could expire", waited)
		}
		holds(t, ctx, cli, m2, true, "new holder")
		holds(t, ctx, cli, m1, false, "expired holder")
	})

	t.Run("Election", func(t *testing.T) {
		ctx := timeoutCtx(t, 90*time.Second)
		s1 := newSession(t, clients[0], 30)
		s2 := newSession(t, clients[1], 30)
		s3 := newSession(t, clients[2], 30)
		e1 := concurrency.NewElection(s1, "el/a")
		e2 := concurrency.NewElection(s2, "el/a")
		e3 := concurrency.NewElection(s3, "el/a")
		observer := concurrency.NewElection(newSession(t, clients[2], 30), "el/a")

		_, err := observer.Leader(ctx)
		expectErr(t, err, concurrency.ErrElectionNoLeader, "leader of an empty election")
		ok(t, e1.Campaign(ctx, "v1"), "first campaign")
		octx, stopObserving := context.WithCancel(ctx)
		defer stopObserving()
		obs := observer.Observe(octx)
		nextObserved := func(want string) {
			t.Helper()
			select {
			case resp, open := <-obs:
				if !open {
					t.Fatalf("observe channel closed, waiting for %q", want)
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
					t.Fatalf("observed %q, want %q", valuesOf(resp.Kvs), want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("nothing observed, waiting for %q", want)
			}
		}
		leaderIs := func(want string) {
			t.Helper()
			resp, err := observer.Leader(ctx)
			ok(t, err, "leader")
			if string(resp.Kvs[0].Value) != want {
				t.Fatalf("leader %q, want %q", resp.Kvs[0].Value, want)
			}
		}
		nextObserved("v1")
		leaderIs("v1")

		camp2 := make(chan error, 1)
		go func() { camp2 <- e2.Campaign(ctx, "v2") }()
		expectBlocked(t, camp2, time.Second, "second campaign")
		ok(t, e1.Proclaim(ctx, "v1b"), "proclaim")
		nextObserved("v1b")
		leaderIs("v1b")
		// A waiting candidate cannot proclaim.
		if err := e3.Proclaim(ctx, "nope"); err != concurrency.ErrElectionNotLeader {
			t.Fatalf("proclaim by a non-candidate: %v, want %v", err, concurrency.ErrElectionNotLeader)
		}

		k1, r1 := e1.Key(), e1.Rev()
		ok(t, e1.Resign(ctx), "resign")
		expectDone(t, camp2, 10*time.Second, "second campaign after the leader resigned")
		nextObserved("v2")
		leaderIs("v2")
		if e2.Rev() <= r1 {
			t.Fatalf("new leader's revision %d not above the old one's %d", e2.Rev(), r1)
		}
		// The old leader, resumed with its old key, is refused by the server-side compare.
		stale := concurrency.ResumeElection(s1, "el/a", k1, r1)
		if err := stale.Proclaim(ctx, "stale"); err != concurrency.ErrElectionNotLeader {
			t.Fatalf("proclaim by the resigned leader: %v, want %v", err, concurrency.ErrElectionNotLeader)
		}
		leaderIs("v2")

		// The third takes over when the second's session ends.
		camp3 := make(chan error, 1)
		go func() { camp3 <- e3.Campaign(ctx, "v3") }()
		expectBlocked(t, camp3, time.Second, "third campaign")
		ok(t, s2.Close(), "close the leader's session")
		expectDone(t, camp3, 10*time.Second, "third campaign after the leader's session closed")
		nextObserved("v3")
		leaderIs("v3")
		if e3.Rev() <= e2.Rev() {
			t.Fatalf("third leader's revision %d not above the second's %d", e3.Rev(), e2.Rev())
		}
	})

	t.Run("STMCounter", func(t *testing.T) {
		isolations := []struct {
			name string
			iso  concurrency.Isolation
		}{
			{"SerializableSnapshot", concurrency.SerializableSnapshot},
			{"Serializable", concurrency.Serializable},
			{"RepeatableReads", concurrency.RepeatableReads},
		}
		const workers, each = 4, 20
		for _, is := range isolations {
			t.Run(is.name, func(t *testing.T) {
				ctx := timeoutCtx(t, 60*time.Second)
				key := "stm/" + is.name
				var attempts int64
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func(wcli *clientv3.Client) {
						defer wg.Done()
						for i := 0; i < each; i++ {
							_, err := concurrency.NewSTM(wcli, func(s concurrency.STM) error {
								atomic.AddInt64(&attempts, 1)
								n := 0
								if v := s.Get(key); v != "" {
									var err error
									if n, err = strconv.Atoi(v); err != nil {
										return err
									}
								}
								s.Put(key, strconv.Itoa(n+1))
								return nil
							}, concurrency.WithIsolation(is.iso), concurrency.WithAbortContext(ctx))
							if err != nil {
								errs <- err
								return
							}
						}
					}(clients[w%len(clients)])
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("stm: %v", err)
				}
				g, err := cli.Get(ctx, key)
				ok(t, err, "get")
				if v := string(only(t, g, "counter").Value); v != fmt.Sprint(workers*each) {
					t.Fatalf("counter %s after %d increments (%d attempts)", v, workers*each, attempts)
				}
				t.Logf("%d increments in %d attempts", workers*each, attempts)
			})
		}
	})
}
