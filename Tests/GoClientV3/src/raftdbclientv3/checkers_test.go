package raftdbclientv3

// Checkers for the fault tests, kept free of any cluster so that checkers_unit_test.go can feed
// them planted faults.

import (
	"fmt"
	"sort"
)

// HistEvent is one change to one key: a put of Value, or a delete.
type HistEvent struct {
	Rev    int64
	Key    string
	Value  string
	Delete bool
}

func (e HistEvent) String() string {
	if e.Delete {
		return fmt.Sprintf("DELETE %q@%d", e.Key, e.Rev)
	}
	return fmt.Sprintf("PUT %q=%q@%d", e.Key, e.Value, e.Rev)
}

type revKey struct {
	rev int64
	key string
}

// problems collects a checker's findings, keeping the first few in full.
type problems struct {
	list  []string
	total int
}

const maxProblems = 20

func (p *problems) add(format string, args ...interface{}) {
	p.total++
	if len(p.list) < maxProblems {
		p.list = append(p.list, fmt.Sprintf(format, args...))
	}
}

func (p *problems) result() []string {
	if p.total > len(p.list) {
		return append(p.list, fmt.Sprintf("... and %d more", p.total-len(p.list)))
	}
	return p.list
}

// CheckWatchStream compares what one watcher delivered (got, in delivery order) with the
// authoritative history of the watched range over the watched revisions (history, in revision
// order). The watcher must deliver exactly the history: every event once (no duplicates), none
// missing (no gaps), in revision order (no reordering), and each as it happened (no invented
// events, no wrong values). Events of one revision (a transaction, a range delete) may come in any
// order among themselves.
func CheckWatchStream(history, got []HistEvent) []string {
	var p problems
	index := make(map[revKey]HistEvent, len(history))
	for _, h := range history {
		index[revKey{h.Rev, h.Key}] = h
	}
	seen := make(map[revKey]int, len(got))
	var last int64
	for i, g := range got {
		id := revKey{g.Rev, g.Key}
		h, known := index[id]
		switch {
		case !known:
			p.add("invented: event %d %s is not in the history", i, g)
		case h.Value != g.Value || h.Delete != g.Delete:
			p.add("wrong: event %d %s, the history has %s", i, g, h)
		}
		if j, dup := seen[id]; dup {
			p.add("duplicate: event %d %s was already delivered as event %d", i, g, j)
		} else {
			seen[id] = i
		}
		if g.Rev < last {
			p.add("reordered: event %d %s comes after revision %d", i, g, last)
		}
		if g.Rev > last {
			last = g.Rev
		}
	}
	for _, h := range history {
		if _, ok := seen[revKey{h.Rev, h.Key}]; !ok {
			p.add("missing: %s was never delivered", h)
		}
	}
	return p.result()
}

// KeyState is a key as a range read at the final revision returns it.
type KeyState struct {
	Key       string
	Value     string
	CreateRev int64
	ModRev    int64
	Version   int64
}

// CheckHistoryAgainstState checks a history read by a watch (from a revision before the first
// write to the range, in revision order) against the store's own bookkeeping read by a range at
// the final revision, for a workload that only puts (never deletes) keys in a range empty before
// it. Then each key's version counts its puts, its create revision is its first put, its mod
// revision and value are its last: a history missing a put, or holding an invented one, disagrees.
// Revisions must also be strictly increasing (one put per revision).
func CheckHistoryAgainstState(history []HistEvent, final []KeyState) []string {
	var p problems
	perKey := map[string][]HistEvent{}
	var last int64
	for i, h := range history {
		if h.Delete {
			p.add("history has a delete, which the workload never does: %s", h)
		}
		if h.Rev <= last {
			p.add("history event %d %s is not after revision %d", i, h, last)
		}
		last = h.Rev
		perKey[h.Key] = append(perKey[h.Key], h)
	}
	inState := map[string]bool{}
	for _, s := range final {
		inState[s.Key] = true
		evs := perKey[s.Key]
		if int64(len(evs)) != s.Version {
			p.add("key %q is at version %d but the history has %d puts of it", s.Key, s.Version, len(evs))
		}
		if len(evs) == 0 {
			continue
		}
		if evs[0].Rev != s.CreateRev {
			p.add("key %q was created at %d but its first put in the history is at %d", s.Key, s.CreateRev, evs[0].Rev)
		}
		if l := evs[len(evs)-1]; l.Rev != s.ModRev || l.Value != s.Value {
			p.add("key %q is %q@%d but its last put in the history is %s", s.Key, s.Value, s.ModRev, l)
		}
	}
	var extra []string
	for k := range perKey {
		if !inState[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		p.add("history puts key %q, which the final state does not hold", k)
	}
	return p.result()
}

// CheckAcknowledged checks that every write a client saw succeed is in the history, as written.
func CheckAcknowledged(history, acked []HistEvent) []string {
	var p problems
	index := make(map[revKey]HistEvent, len(history))
	for _, h := range history {
		index[revKey{h.Rev, h.Key}] = h
	}
	for _, a := range acked {
		h, ok := index[revKey{a.Rev, a.Key}]
		if !ok || h.Value != a.Value || h.Delete != a.Delete {
			p.add("acknowledged %s is not in the history", a)
		}
	}
	return p.result()
}

// FenceRecord is one guarded write that committed: a holder of the lock wrote it in a
// transaction that compared the lock key's create revision (Token, the fencing token) with the
// one it acquired the lock at.
type FenceRecord struct {
	Rev     int64  // revision the transaction committed at
	Token   int64  // the holder's lock key create revision
	Holder  string // which worker
	Seq     int    // the worker's operation number (increasing over all its holdings)
	Kind    string // "start", "inc" or "end"
	Counter int    // for "inc": the counter value it wrote (read, under the lock, plus one)
}

func (r FenceRecord) String() string {
	return fmt.Sprintf("%s#%d %s token %d counter %d @%d", r.Holder, r.Seq, r.Kind, r.Token, r.Counter, r.Rev)
}

// CheckFencing checks the committed guarded writes, in revision order:
//   - tokens never decrease: once a later holder's guarded write committed, no earlier holder's
//     does, so the holders' critical sections, as far as their guarded writes go, do not
//     interleave;
//   - a token belongs to one worker, whose operations under it commit in the order issued;
//   - the counter, read and incremented under the lock (not atomically), goes 1, 2, 3, ... with no
//     value written twice (a lost update) or skipped.
func CheckFencing(records []FenceRecord) []string {
	var p problems
	sorted := append([]FenceRecord(nil), records...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rev < sorted[j].Rev })
	owner := map[int64]string{}
	lastSeq := map[int64]int{}
	var prev *FenceRecord
	counter := 0
	for i := range sorted {
		r := sorted[i]
		if prev != nil {
			if r.Rev == prev.Rev {
				p.add("two guarded writes at one revision: %s and %s", prev, r)
			}
			if r.Token < prev.Token {
				p.add("token went back: %s after %s (an earlier holder wrote after a later one)", r, prev)
			}
		}
		if o, ok := owner[r.Token]; ok && o != r.Holder {
			p.add("token %d used by %s and %s", r.Token, o, r.Holder)
		} else if !ok {
			owner[r.Token] = r.Holder
		}
		if s, ok := lastSeq[r.Token]; ok && r.Seq <= s {
			p.add("%s committed after its operation #%d under the same token", r, s)
		}
		lastSeq[r.Token] = r.Seq
		if r.Kind == "inc" {
			if r.Counter != counter+1 {
				p.add("counter: %s wrote %d after %d (lost or skipped increment)", r, r.Counter, counter)
			}
			counter = r.Counter
		}
		prev = &sorted[i]
	}
	return p.result()
}
