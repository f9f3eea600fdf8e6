package raftdbclientv3

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	"go.etcd.io/etcd/mvcc/mvccpb"
)

// watchCreated waits for the created notification of a watch opened WithCreatedNotify, so that
// writes after it are certain to be seen live.
func watchCreated(t testing.TB, wch clientv3.WatchChan) {
	t.Helper()
	select {
	case resp, open := <-wch:
		if !open || !resp.Created {
			t.Fatalf("first watch response is not the created notification: open %v %+v", open, resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no created notification")
	}
}

// collectEvents reads exactly n events (skipping notifications without events), failing on a
// closed channel, a watch error or a timeout.
func collectEvents(t testing.TB, wch clientv3.WatchChan, n int, timeout time.Duration) []*clientv3.Event {
	t.Helper()
	var events []*clientv3.Event
	deadline := time.After(timeout)
	for len(events) < n {
		select {
		case resp, open := <-wch:
			if !open {
				t.Fatalf("watch closed after %d of %d events", len(events), n)
			}
			if err := resp.Err(); err != nil {
				t.Fatalf("watch error after %d of %d events: %v", len(events), n, err)
			}
			events = append(events, resp.Events...)
		case <-deadline:
			t.Fatalf("only %d of %d events after %v: %v", len(events), n, timeout, events)
		}
	}
	if len(events) > n {
		t.Fatalf("%d events, want %d: %v", len(events), n, events)
	}
	return events
}

// expectNoEvents fails if an event arrives within d.
func expectNoEvents(t testing.TB, wch clientv3.WatchChan, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case resp, open := <-wch:
			if !open {
				return
			}
			if len(resp.Events) > 0 {
				t.Fatalf("unexpected events: %v", resp.Events)
			}
		case <-deadline:
			return
		}
	}
}

// expectEvent checks one event's type, key, value and mod revision.
func expectEvent(t testing.TB, ev *clientv3.Event, typ mvccpb.Event_EventType, key, value string, rev int64) {
	t.Helper()
	if ev.Type != typ || string(ev.Kv.Key) != key || string(ev.Kv.Value) != value || ev.Kv.ModRevision != rev {
		t.Fatalf("event %s, want %s %q=%q@%d", eventString(ev), typ, key, value, rev)
	}
}

func TestWatch(t *testing.T) {
	c := NewCluster(t, 3, "-watch-progress-notify-interval", "500")
	cli := c.Client(t)
	lcli := c.NodeClient(t, c.Leader())

	put := func(t *testing.T, ctx context.Context, k, v string) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, k, v)
		ok(t, err, "put "+k)
		return resp.Header.Revision
	}
	del := func(t *testing.T, ctx context.Context, k string) int64 {
		t.Helper()
		resp, err := cli.Delete(ctx, k)
		ok(t, err, "delete "+k)
		return resp.Header.Revision
	}

	t.Run("FromNow", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		wch := cli.Watch(ctx, "w/now/a", clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		r1 := put(t, ctx, "w/now/a", "1")
		put(t, ctx, "w/now/b", "not watched")
		r2 := put(t, ctx, "w/now/a", "2")
		r3 := del(t, ctx, "w/now/a")
		evs := collectEvents(t, wch, 3, 10*time.Second)
		expectEvent(t, evs[0], mvccpb.PUT, "w/now/a", "1", r1)
		if !evs[0].IsCreate() || evs[0].Kv.Version != 1 || evs[0].Kv.CreateRevision != r1 {
			t.Fatalf("first put is not a create: %+v", evs[0].Kv)
		}
		expectEvent(t, evs[1], mvccpb.PUT, "w/now/a", "2", r2)
		if !evs[1].IsModify() || evs[1].Kv.Version != 2 || evs[1].Kv.CreateRevision != r1 {
			t.Fatalf("second put is not a modify of the first: %+v", evs[1].Kv)
		}
		expectEvent(t, evs[2], mvccpb.DELETE, "w/now/a", "", r3)
		if evs[2].PrevKv != nil {
			t.Fatalf("prev_kv without WithPrevKV: %v", evs[2].PrevKv)
		}
		expectNoEvents(t, wch, 300*time.Millisecond)
	})

	t.Run("FromPastRevision", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		r1 := put(t, ctx, "w/past", "1")
		r2 := put(t, ctx, "w/past", "2")
		r3 := put(t, ctx, "w/past", "3")
		wch := cli.Watch(ctx, "w/past", clientv3.WithRev(r2))
		evs := collectEvents(t, wch, 2, 10*time.Second)
		expectEvent(t, evs[0], mvccpb.PUT, "w/past", "2", r2)
		expectEvent(t, evs[1], mvccpb.PUT, "w/past", "3", r3)
		if evs[0].Kv.CreateRevision != r1 || evs[1].Kv.Version != 3 {
			t.Fatalf("replayed events carry wrong revisions: %+v %+v", evs[0].Kv, evs[1].Kv)
		}
		// Then live.
		r4 := put(t, ctx, "w/past", "4")
		evs = collectEvents(t, wch, 1, 10*time.Second)
		expectEvent(t, evs[0], mvccpb.PUT, "w/past", "4", r4)
	})

	t.Run("FutureRevision", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		now, err := cli.Get(ctx, "w/fut")
		ok(t, err, "get")
		start := now.Header.Revision + 3
		wch := cli.Watch(ctx, "w/fut", clientv3.WithRev(start))
		put(t, ctx, "w/fut", "1")
		put(t, ctx, "w/fut", "2")
		r3 := put(t, ctx, "w/fut", "3")
		if r3 != start {
			t.Fatalf("third put at %d, want %d (another writer?)", r3, start)
		}
		evs := collectEvents(t, wch, 1, 10*time.Second)
		expectEvent(t, evs[0], mvccpb.PUT, "w/fut", "3", start)
	})

	t.Run("Prefix", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		wch := cli.Watch(ctx, "w/p/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		rx := put(t, ctx, "w/p/x", "1")
		put(t, ctx, "w/q", "outside")
		put(t, ctx, "w/p", "outside too")
		ry := put(t, ctx, "w/p/y", "2")
		rz := del(t, ctx, "w/p/x")
		evs := collectEvents(t, wch, 3, 10*time.Second)
		expectEvent(t, evs[0], mvccpb.PUT, "w/p/x", "1", rx)
		expectEvent(t, evs[1], mvccpb.PUT, "w/p/y", "2", ry)
		expectEvent(t, evs[2], mvccpb.DELETE, "w/p/x", "", rz)
	})

	t.Run("PrevKV", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		wch := cli.Watch(ctx, "w/prev", clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		r1 := put(t, ctx, "w/prev", "1")
		r2 := put(t, ctx, "w/prev", "2")
		r3 := del(t, ctx, "w/prev")
		evs := collectEvents(t, wch, 3, 10*time.Second)
		if evs[0].PrevKv != nil {
			t.Fatalf("prev_kv of a create: %v", evs[0].PrevKv)
		}
		if p := evs[1].PrevKv; p == nil || string(p.Value) != "1" || p.ModRevision != r1 {
			t.Fatalf("prev_kv of the second put: %v, want \"1\"@%d", p, r1)
		}
		if p := evs[2].PrevKv; p == nil || string(p.Value) != "2" || p.ModRevision != r2 || evs[2].Kv.ModRevision != r3 {
			t.Fatalf("prev_kv of the delete: %v (event %s), want \"2\"@%d", p, eventString(evs[2]), r2)
		}
	})

	t.Run("Filters", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		noPut := cli.Watch(ctx, "w/f", clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
		noDel := cli.Watch(ctx, "w/f", clientv3.WithFilterDelete(), clientv3.WithCreatedNotify())
		watchCreated(t, noPut)
		watchCreated(t, noDel)
		p1 := put(t, ctx, "w/f", "1")
		p2 := put(t, ctx, "w/f", "2")
		d1 := del(t, ctx, "w/f")
		p3 := put(t, ctx, "w/f", "3")
		d2 := del(t, ctx, "w/f")
		dels := collectEvents(t, noPut, 2, 10*time.Second)
		expectEvent(t, dels[0], mvccpb.DELETE, "w/f", "", d1)
		expectEvent(t, dels[1], mvccpb.DELETE, "w/f", "", d2)
		puts := collectEvents(t, noDel, 3, 10*time.Second)
		expectEvent(t, puts[0], mvccpb.PUT, "w/f", "1", p1)
		expectEvent(t, puts[1], mvccpb.PUT, "w/f", "2", p2)
		expectEvent(t, puts[2], mvccpb.PUT, "w/f", "3", p3)
		expectNoEvents(t, noDel, 300*time.Millisecond)
	})

	t.Run("RequestProgress", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		wcli := c.Client(t) // its own stream: progress is asked per stream
		wch := wcli.Watch(ctx, "w/prog", clientv3.WithCreatedNotify())
		watchCreated(t, wch)
		put(t, ctx, "w/prog-other", "1")
		r := put(t, ctx, "w/prog-other", "2")
		ok(t, wcli.RequestProgress(ctx), "RequestProgress")
		select {
		case resp := <-wch:
			if !resp.IsProgressNotify() || len(resp.Events) != 0 {
				t.Fatalf("answer to a progress request is not a progress notification: %+v", resp)
			}
			if resp.Header.Revision != r {
				t.Fatalf("progress notification at %d, want the current revision %d", resp.Header.Revision, r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no progress notification after RequestProgress")
		}
	})

	t.Run("ProgressNotifyInterval", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		r := put(t, ctx, "w/pn-other", "1")
		// The cluster notifies every 500 ms (-watch-progress-notify-interval).
		wch := cli.Watch(ctx, "w/pn", clientv3.WithProgressNotify())
		deadline := time.After(5 * time.Second)
		for {
			select {
			case resp := <-wch:
				if len(resp.Events) != 0 {
					t.Fatalf("events on an unwritten key: %v", resp.Events)
				}
				if resp.IsProgressNotify() {
					if resp.Header.Revision < r {
						t.Fatalf("progress notification at %d, below the revision %d already written", resp.Header.Revision, r)
					}
					return
				}
			case <-deadline:
				t.Fatal("no progress notification within 5 s at a 500 ms interval")
			}
		}
	})

	t.Run("ExactlyOnceInOrder", func(t *testing.T) {
		ctx := timeoutCtx(t, 60*time.Second)
		start, err := cli.Get(ctx, "w/eo/")
		ok(t, err, "get")
		from := start.Header.Revision + 1
		// One watcher per member, each through that member alone, all from the same revision;
		// one of them opened before the writes, the others during them.
		var chans []clientv3.WatchChan
		chans = append(chans, c.NodeClient(t, 0).Watch(ctx, "w/eo/", clientv3.WithPrefix(), clientv3.WithRev(from)))
		type write struct {
			typ mvccpb.Event_EventType
			key string
			val string
			rev int64
		}
		var writes []write
		for i := 0; i < 300; i++ {
			if i == 100 {
				for n := 1; n < len(c.Nodes); n++ {
					chans = append(chans, c.NodeClient(t, n).Watch(ctx, "w/eo/", clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV()))
				}
			}
			key := fmt.Sprintf("w/eo/%d", i%7)
			if i%10 == 9 {
				resp, err := cli.Delete(ctx, key)
				ok(t, err, "delete")
				if resp.Deleted == 1 {
					writes = append(writes, write{mvccpb.DELETE, key, "", resp.Header.Revision})
				}
				continue
			}
			val := fmt.Sprintf("v%d", i)
			writes = append(writes, write{mvccpb.PUT, key, val, put(t, ctx, key, val)})
		}
		for i, w := range writes {
			if w.rev != from+int64(i) {
				t.Fatalf("write %d at revision %d, want %d: another writer?", i, w.rev, from+int64(i))
			}
		}
		for n, wch := range chans {
			evs := collectEvents(t, wch, len(writes), 20*time.Second)
			for i, ev := range evs {
				w := writes[i]
				if ev.Type != w.typ || string(ev.Kv.Key) != w.key || string(ev.Kv.Value) != w.val || ev.Kv.ModRevision != w.rev {
					t.Fatalf("watcher %d, event %d: %s, want %s %q=%q@%d", n, i, eventString(ev), w.typ, w.key, w.val, w.rev)
				}
			}
			expectNoEvents(t, wch, 200*time.Millisecond)
		}
	})

	// Last: it compacts the cluster's history.
	t.Run("Compacted", func(t *testing.T) {
		ctx := timeoutCtx(t, 30*time.Second)
		var revs []int64
		for i := 1; i <= 5; i++ {
			revs = append(revs, put(t, ctx, "w/c", fmt.Sprint(i)))
		}
		compactAt := revs[2]
		_, err := lcli.Compact(ctx, revs[4]+100)
		expectErr(t, err, rpctypes.ErrFutureRev, "compaction at a future revision")
		_, err = cli.Compact(ctx, compactAt)
		ok(t, err, "compact")
		_, err = lcli.Compact(ctx, revs[1])
		expectErr(t, err, rpctypes.ErrCompacted, "compaction below the compacted revision")

		_, err = lcli.Get(ctx, "w/c", clientv3.WithRev(revs[1]))
		expectErr(t, err, rpctypes.ErrCompacted, "get below the compaction")
		g, err := cli.Get(ctx, "w/c", clientv3.WithRev(compactAt))
		ok(t, err, "get at the compaction revision")
		expectKV(t, only(t, g, "at compaction"), "3", revs[0], compactAt, 3, "w/c at the compaction revision")
		// A follower's own (serializable) read refuses it too, once it has applied the compaction.
		fcli := c.NodeClient(t, c.Follower())
		if err := c.waitFor(5*time.Second, func() bool {
			_, err := fcli.Get(ctx, "w/c", clientv3.WithRev(revs[1]), clientv3.WithSerializable())
			return err == rpctypes.ErrCompacted
		}); err != nil {
			_, err := fcli.Get(ctx, "w/c", clientv3.WithRev(revs[1]), clientv3.WithSerializable())
			t.Fatalf("serializable get below the compaction on a follower: %v, want %v", err, rpctypes.ErrCompacted)
		}

		// A watch from below the compaction is told the compaction revision and closed.
		wch := cli.Watch(ctx, "w/c", clientv3.WithRev(revs[0]))
		select {
		case resp, open := <-wch:
			if !open {
				t.Fatal("watch closed without an answer")
			}
			if resp.CompactRevision != compactAt || !resp.Canceled || resp.Err() != rpctypes.ErrCompacted || len(resp.Events) != 0 {
				t.Fatalf("watch from a compacted revision: compact_revision %d canceled %v err %v events %d; want %d true %v 0",
					resp.CompactRevision, resp.Canceled, resp.Err(), len(resp.Events), compactAt, rpctypes.ErrCompacted)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer to a watch from a compacted revision")
		}
		select {
		case resp, open := <-wch:
			if open {
				t.Fatalf("watch still open after its compaction notice: %+v", resp)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("watch channel not closed after its compaction notice")
		}
		// From the compaction revision itself, history is whole: etcd 3.4 serves this watch (a
		// client told CompactRevision resumes from it).
		wch = cli.Watch(ctx, "w/c", clientv3.WithRev(compactAt))
		evs := collectEvents(t, wch, 3, 10*time.Second)
		for i, ev := range evs {
			expectEvent(t, ev, mvccpb.PUT, "w/c", fmt.Sprint(i+3), revs[i+2])
		}
	})
}
