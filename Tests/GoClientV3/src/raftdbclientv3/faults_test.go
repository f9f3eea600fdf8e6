package raftdbclientv3

// Fault tests: clientv3 workloads while members are killed (-9) and restarted, and paused
// (SIGSTOP) and resumed (SIGCONT), one fault at a time so a quorum is usually up. The schedule
// (what, whom, how long, how far apart) is drawn from a seeded generator: the seed is logged, and
// RAFTDB_GO_FAULT_SEED=N replays the same schedule (the timing of the processes themselves is not
// reproducible, so a replay is a strong hint, not a guarantee). RAFTDB_GO_FAULT_SECONDS sets the
// length of the fault period (default 20). `go test -short` skips these tests.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/mvcc/mvccpb"
)

const (
	envFaultSeed    = "RAFTDB_GO_FAULT_SEED"
	envFaultSeconds = "RAFTDB_GO_FAULT_SECONDS"
)

func faultSeed(t *testing.T) int64 {
	seed := time.Now().UnixNano()
	if v := os.Getenv(envFaultSeed); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envFaultSeed, v, err)
		}
		seed = s
	}
	t.Logf("fault seed %d (replay with %s=%d)", seed, envFaultSeed, seed)
	return seed
}

func faultPeriod() time.Duration {
	return time.Duration(envInt(envFaultSeconds, 20)) * time.Second
}

// faultInjector applies a seeded schedule of faults to a cluster.
type faultInjector struct {
	t     *testing.T
	c     *Cluster
	rng   *rand.Rand
	began time.Time
	log   []string
}

func newFaultInjector(t *testing.T, c *Cluster, seed int64) *faultInjector {
	return &faultInjector{t: t, c: c, rng: rand.New(rand.NewSource(seed)), began: time.Now()}
}

func (f *faultInjector) note(format string, args ...interface{}) {
	line := fmt.Sprintf("%6.2fs ", time.Since(f.began).Seconds()) + fmt.Sprintf(format, args...)
	f.log = append(f.log, line)
}

// run injects faults for d, one at a time, from the test goroutine, and returns with every
// member running and resumed. Every draw from the generator happens whatever the cluster's state,
// so a seed always gives the same sequence of decisions.
func (f *faultInjector) run(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		gap := time.Duration(200+f.rng.Intn(800)) * time.Millisecond
		choice := f.rng.Intn(10)
		victim := f.rng.Intn(len(f.c.Nodes))
		hold := time.Duration(300+f.rng.Intn(1700)) * time.Millisecond
		time.Sleep(gap)
		if choice == 3 || choice == 4 || choice == 8 || choice == 9 {
			// Aim at the leader (the decision is seeded; who leads is not).
			if l := f.c.leaderNow(); l >= 0 {
				victim = l
			}
		}
		name := f.c.Nodes[victim].Name
		if choice < 5 {
			f.note("kill -9 %s (pid %d) for %v", name, f.c.Nodes[victim].PID(), hold)
			f.c.Kill(victim)
			time.Sleep(hold)
			f.c.Start(victim)
			f.note("restarted %s (pid %d)", name, f.c.Nodes[victim].PID())
		} else {
			f.note("SIGSTOP %s (pid %d) for %v", name, f.c.Nodes[victim].PID(), hold)
			f.c.Pause(victim)
			time.Sleep(hold)
			f.c.Resume(victim)
			f.note("SIGCONT %s", name)
		}
	}
}

func (f *faultInjector) report() {
	f.t.Logf("fault schedule (%d lines):", len(f.log))
	for _, l := range f.log {
		f.t.Log("  " + l)
	}
}

// rotated is the cluster's endpoints starting at the i-th.
func rotated(c *Cluster, i int) []string {
	eps := c.Endpoints()
	i %= len(eps)
	return append(append([]string(nil), eps[i:]...), eps[:i]...)
}

// streamWatcher records what one watch delivers.
type streamWatcher struct {
	name   string
	mu     sync.Mutex
	events []HistEvent
	errs   []string
	closed bool
}

func (w *streamWatcher) lastRev() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0
	}
	return w.events[len(w.events)-1].Rev
}

func watchInto(ctx context.Context, w *streamWatcher, wch clientv3.WatchChan) {
	for resp := range wch {
		w.mu.Lock()
		if err := resp.Err(); err != nil {
			w.errs = append(w.errs, err.Error())
		}
		for _, ev := range resp.Events {
			w.events = append(w.events, HistEvent{
				Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Value: string(ev.Kv.Value),
				Delete: ev.Type == mvccpb.DELETE,
			})
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.closed = ctx.Err() == nil // closed by something else than our cancel
	w.mu.Unlock()
}

func upTo(events []HistEvent, rev int64) []HistEvent {
	var out []HistEvent
	for _, e := range events {
		if e.Rev <= rev {
			out = append(out, e)
		}
	}
	return out
}

func reportProblems(t *testing.T, what string, problems []string) {
	t.Helper()
	if len(problems) == 0 {
		return
	}
	t.Errorf("%s: %d problem(s):", what, len(problems))
	for _, p := range problems {
		t.Errorf("  %s", p)
	}
}

// TestFaultsWatchGuarantees: writers put a sequence of values to keys under a prefix through
// multi-endpoint clients while members are killed, restarted, paused and resumed; watchers on
// different members (each through that member alone, and through all members), some opened
// before the faults and one during them from the same past revision, rely on clientv3's
// automatic reconnect and resume. Afterwards each watcher's events must be exactly the history:
// in revision order, none twice, none missing from the start revision to the final one, none
// invented.
//
// The history is read from the healed cluster by a watch from the start revision, and checked
// against what the store says independently: each key's final version, create and mod revision
// (a range at the final revision), each event's key and value by a range at its revision, and
// every write a client saw acknowledged. Writes whose outcome was unknown (errors) may or may not
// be in it. The members' HashKV at the final revision must agree.
func TestFaultsWatchGuarantees(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test (skipped with -short)")
	}
	seed := faultSeed(t)
	c := NewCluster(t, 3)
	inj := newFaultInjector(t, c, seed)
	defer inj.report()
	ctx := timeoutCtx(t, 4*time.Minute)
	ctl := c.Client(t)
	const prefix = "fw/"
	start, err := ctl.Get(ctx, prefix, clientv3.WithPrefix())
	ok(t, err, "get")
	if len(start.Kvs) != 0 {
		t.Fatal("prefix not empty")
	}
	startRev := start.Header.Revision + 1

	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	var watchers []*streamWatcher
	startWatcher := func(name string, cli *clientv3.Client) {
		w := &streamWatcher{name: name}
		watchers = append(watchers, w)
		go watchInto(wctx, w, cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(startRev)))
	}
	for i, n := range c.Nodes {
		startWatcher("only-"+n.Name, c.NodeClient(t, i))
	}
	startWatcher("all-members", c.Client(t))

	// Writers.
	const writers = 3
	type ack struct {
		mu     sync.Mutex
		acked  []HistEvent
		failed int
	}
	var acks ack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		cli := c.Client(t, rotated(c, w)...)
		wg.Add(1)
		go func(w int, cli *clientv3.Client) {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("%sw%d/k%d", prefix, w, seq%5), fmt.Sprintf("w%d-%d", w, seq)
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := cli.Put(pctx, key, val)
				cancel()
				acks.mu.Lock()
				if err == nil {
					acks.acked = append(acks.acked, HistEvent{Rev: resp.Header.Revision, Key: key, Value: val})
				} else {
					acks.failed++
				}
				acks.mu.Unlock()
				time.Sleep(15 * time.Millisecond)
			}
		}(w, cli)
	}

	period := faultPeriod()
	inj.run(period / 2)
	startWatcher("all-members-late", c.Client(t, rotated(c, 1)...)) // replays from startRev under faults
	inj.run(period - period/2)
	close(stop)
	wg.Wait()

	// Heal, then mark the end.
	if _, err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatalf("cluster not ready after the faults: %v", err)
	}
	var finalRev int64
	for attempt := 0; finalRev == 0; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := ctl.Put(pctx, prefix+"zz-final", "end")
		cancel()
		if err == nil {
			finalRev = resp.Header.Revision
		} else if attempt == 10 {
			t.Fatalf("final marker: %v", err)
		}
	}
	t.Logf("%d writes acknowledged, %d failed (outcome unknown); history %d..%d",
		len(acks.acked), acks.failed, startRev, finalRev)
	if len(acks.acked) < 100 {
		t.Errorf("only %d writes acknowledged over %v: too little to check", len(acks.acked), period)
	}

	// Every watcher must reach the final revision.
	deadline := time.Now().Add(40 * time.Second)
	for _, w := range watchers {
		for w.lastRev() < finalRev && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	stopWatchers()

	// The reference history, from the healed leader.
	leader := c.Leader()
	ref := &streamWatcher{name: "reference"}
	rctx, stopRef := context.WithCancel(ctx)
	go watchInto(rctx, ref, c.NodeClient(t, leader).Watch(rctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(startRev)))
	for ref.lastRev() < finalRev && time.Now().Before(deadline.Add(20*time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	stopRef()
	ref.mu.Lock()
	history := upTo(ref.events, finalRev)
	ref.mu.Unlock()
	if len(history) == 0 || history[len(history)-1].Rev != finalRev {
		t.Fatalf("reference watch did not reach the final revision %d (%d events)", finalRev, len(history))
	}

	// Check the reference against the store's own account.
	lcli := c.NodeClient(t, leader)
	state, err := lcli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(finalRev))
	ok(t, err, "final state")
	var final []KeyState
	for _, kv := range state.Kvs {
		final = append(final, KeyState{Key: string(kv.Key), Value: string(kv.Value),
			CreateRev: kv.CreateRevision, ModRev: kv.ModRevision, Version: kv.Version})
	}
	reportProblems(t, "reference history vs final state", CheckHistoryAgainstState(history, final))
	reportProblems(t, "acknowledged writes vs reference history", CheckAcknowledged(history, acks.acked))
	reportProblems(t, "reference history vs ranges at each revision", checkEventsByRange(ctx, lcli, history))

	// Each watcher against the reference.
	for _, w := range watchers {
		w.mu.Lock()
		got := upTo(w.events, finalRev)
		t.Logf("watcher %s: %d events (%d after the final revision), errors %q, closed early %v",
			w.name, len(got), len(w.events)-len(got), w.errs, w.closed)
		if len(w.errs) > 0 || w.closed {
			t.Errorf("watcher %s: watch errors %q / closed before the end %v", w.name, w.errs, w.closed)
		}
		w.mu.Unlock()
		reportProblems(t, "watcher "+w.name, CheckWatchStream(history, got))
	}

	// The members agree on the state.
	var hashes []uint32
	if err := c.waitFor(10*time.Second, func() bool {
		hashes = hashes[:0]
		for _, ep := range c.Endpoints() {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := ctl.HashKV(hctx, ep, finalRev)
			cancel()
			if err != nil {
				return false
			}
			hashes = append(hashes, resp.Hash)
		}
		return hashes[0] == hashes[1] && hashes[1] == hashes[2]
	}); err != nil {
		t.Errorf("members' HashKV at %d differ (or fail): %x", finalRev, hashes)
	}
}

// checkEventsByRange reads each event's key at the event's revision: the put must be there with
// that value and mod revision (a delete: the key absent).
func checkEventsByRange(ctx context.Context, cli *clientv3.Client, history []HistEvent) []string {
	var p problems
	var mu sync.Mutex
	jobs := make(chan HistEvent)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				g, err := cli.Get(gctx, e.Key, clientv3.WithRev(e.Rev))
				cancel()
				mu.Lock()
				switch {
				case err != nil:
					p.add("range of %s: %v", e, err)
				case e.Delete && len(g.Kvs) != 0:
					p.add("%s, yet the key is there at that revision: %s", e, g.Kvs[0])
				case !e.Delete && (len(g.Kvs) != 1 || string(g.Kvs[0].Value) != e.Value || g.Kvs[0].ModRevision != e.Rev):
					p.add("%s, yet a range at that revision reads %v", e, g.Kvs)
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range history {
		jobs <- e
	}
	close(jobs)
	wg.Wait()
	return p.result()
}

// TestFaultsLockFencing: workers with sessions of their own repeatedly take one
// concurrency.Mutex and, holding it, write only through transactions guarded by the fencing
// token, Compare(CreateRevision(myLockKey), "=", myLockRev) (the Mutex's IsOwner): a "start"
// record, one to three increments of a counter (read with a linearizable get, then written
// under the guard: not atomic by itself), and an "end" record, each with its token, while
// members are killed, restarted, paused and resumed. A worker gives up its holding on any error
// (outcome unknown) or failed guard, and unlocks.
//
// What it proves, for the guarded writes that committed: they are ordered by token (once a later
// holder's guarded write is in, no earlier holder's is), so no two holdings' guarded writes
// interleave; no increment is lost or duplicated although each is a read-then-write; a worker's
// guarded write with its token after its unlock succeeded is refused (checked live). It relies on
// the server evaluating the compare and applying the writes atomically, on linearizable reads, and
// on lease expiry and deletion of lock keys.
//
// What it does not prove: that two workers never believe at the same moment that they hold the
// lock (they can: a session's lease can expire, or a worker be slow, while it still thinks it
// holds; that is why writes need the fence); anything about effects outside the store or writes
// not guarded by the token; fairness or liveness of the lock beyond "some holdings completed".
func TestFaultsLockFencing(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test (skipped with -short)")
	}
	seed := faultSeed(t)
	c := NewCluster(t, 3)
	inj := newFaultInjector(t, c, seed)
	defer inj.report()
	ctx := timeoutCtx(t, 4*time.Minute)
	const (
		workers    = 4
		lockName   = "fence/lock"
		counterKey = "fence/counter"
		logPrefix  = "fence/log/"
	)
	type workerStats struct {
		holdings, completed, fenced, unknown, lockErrs, sessions, staleChecks int
		staleViolations                                                       []string
		lockErrKinds                                                          map[string]int
	}
	stats := make([]workerStats, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		cli := c.Client(t, rotated(c, w)...)
		wg.Add(1)
		go func(w int, cli *clientv3.Client, rng *rand.Rand) {
			defer wg.Done()
			st := &stats[w]
			name := fmt.Sprintf("h%d", w)
			var sess *concurrency.Session
			defer func() {
				if sess != nil {
					sess.Orphan()
				}
			}()
			seq := 0
			stopped := func() bool {
				select {
				case <-stop:
					return true
				default:
					return false
				}
			}
			for !stopped() {
				if sess != nil {
					select {
					case <-sess.Done(): // lease lost: a new session
						sess.Orphan()
						sess = nil
					default:
					}
				}
				if sess == nil {
					// Grant with a deadline, then let the session keep it alive.
					gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					lease, err := cli.Grant(gctx, 3)
					cancel()
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					sess, err = concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(3))
					if err != nil {
						sess = nil
						continue
					}
					st.sessions++
				}
				m := concurrency.NewMutex(sess, lockName)
				lctx, cancel := context.WithTimeout(ctx, 4*time.Second)
				err := m.Lock(lctx)
				cancel()
				if err != nil {
					st.lockErrs++
					if st.lockErrKinds == nil {
						st.lockErrKinds = map[string]int{}
					}
					st.lockErrKinds[err.Error()]++
					time.Sleep(50 * time.Millisecond)
					continue
				}
				st.holdings++
				fence := m.IsOwner()
				cmp := pb.Compare(fence)
				token := cmp.GetCreateRevision()
				kinds := []string{"start"}
				for i := 0; i < 1+rng.Intn(3); i++ {
					kinds = append(kinds, "inc")
				}
				kinds = append(kinds, "end")
				complete := true
				for _, kind := range kinds {
					seq++
					rec := FenceRecord{Token: token, Holder: name, Seq: seq, Kind: kind}
					var ops []clientv3.Op
					if kind == "inc" {
						gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
						g, err := cli.Get(gctx, counterKey)
						cancel()
						if err != nil {
							st.unknown++
							complete = false
							break
						}
						cur := 0
						if len(g.Kvs) == 1 {
							cur, _ = strconv.Atoi(string(g.Kvs[0].Value))
						}
						rec.Counter = cur + 1
						ops = append(ops, clientv3.OpPut(counterKey, strconv.Itoa(rec.Counter)))
					}
					body, _ := json.Marshal(rec)
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%s/%06d", logPrefix, name, seq), string(body)))
					tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					resp, err := cli.Txn(tctx).If(fence).Then(ops...).Commit()
					cancel()
					if err != nil {
						st.unknown++
						complete = false
						break
					}
					if !resp.Succeeded {
						st.fenced++
						complete = false
						break
					}
				}
				if complete {
					st.completed++
				}
				uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err = m.Unlock(uctx)
				cancel()
				if err == nil {
					// The lock key is gone: the old token must not pass the guard any more.
					sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					resp, err := cli.Txn(sctx).If(fence).Then(clientv3.OpPut("fence/stale/"+name, strconv.Itoa(seq))).Commit()
					cancel()
					if err == nil {
						st.staleChecks++
						if resp.Succeeded {
							st.staleViolations = append(st.staleViolations,
								fmt.Sprintf("%s: token %d passed the guard after its unlock succeeded", name, token))
						}
					}
				}
				time.Sleep(time.Duration(rng.Intn(30)) * time.Millisecond)
			}
		}(w, cli, rand.New(rand.NewSource(seed+int64(w)+1)))
	}
	inj.run(faultPeriod())
	close(stop)
	wg.Wait()
	if _, err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatalf("cluster not ready after the faults: %v", err)
	}

	cli := c.NodeClient(t, c.Leader())
	g, err := cli.Get(ctx, logPrefix, clientv3.WithPrefix())
	ok(t, err, "read the log")
	var records []FenceRecord
	incs, ends := 0, 0
	for _, kv := range g.Kvs {
		var r FenceRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatalf("record %q: %v", kv.Key, err)
		}
		if kv.Version != 1 {
			t.Errorf("log key %q written %d times", kv.Key, kv.Version)
		}
		r.Rev = kv.ModRevision
		records = append(records, r)
		switch r.Kind {
		case "inc":
			incs++
		case "end":
			ends++
		}
	}
	var total workerStats
	for w, st := range stats {
		t.Logf("worker h%d: %d sessions, %d holdings (%d complete), %d fenced off, %d unknown outcomes, %d lock errors, %d stale-token checks",
			w, st.sessions, st.holdings, st.completed, st.fenced, st.unknown, st.lockErrs, st.staleChecks)
		if len(st.lockErrKinds) > 0 {
			t.Logf("  lock errors of h%d by message: %v", w, st.lockErrKinds)
		}
		total.completed += st.completed
		total.staleChecks += st.staleChecks
		for _, v := range st.staleViolations {
			t.Errorf("fencing violated: %s", v)
		}
	}
	t.Logf("%d guarded writes committed: %d increments, %d holdings ended", len(records), incs, ends)
	reportProblems(t, "committed guarded writes", CheckFencing(records))
	cg, err := cli.Get(ctx, counterKey)
	ok(t, err, "counter")
	if incs > 0 && (len(cg.Kvs) != 1 || string(cg.Kvs[0].Value) != strconv.Itoa(incs)) {
		t.Errorf("counter %v after %d committed increments", valuesOf(cg.Kvs), incs)
	}
	if ends < 10 || total.staleChecks < 10 {
		t.Errorf("only %d holdings ended and %d stale-token checks ran: too little to check", ends, total.staleChecks)
	}
}
