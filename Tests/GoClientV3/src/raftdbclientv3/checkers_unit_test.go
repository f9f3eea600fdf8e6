package raftdbclientv3

// The checkers must bite: each planted fault below has to be reported, and the clean inputs
// must not be. No cluster is needed.

import (
	"strings"
	"testing"
)

func expectProblem(t *testing.T, got []string, word string) {
	t.Helper()
	for _, p := range got {
		if strings.HasPrefix(p, word) || strings.Contains(p, word) {
			return
		}
	}
	t.Fatalf("no %q problem reported; got %q", word, got)
}

func expectClean(t *testing.T, got []string) {
	t.Helper()
	if len(got) != 0 {
		t.Fatalf("clean input reported: %q", got)
	}
}

func sampleHistory() []HistEvent {
	return []HistEvent{
		{Rev: 10, Key: "p/a", Value: "1"},
		{Rev: 11, Key: "p/b", Value: "2"},
		{Rev: 12, Key: "p/a", Value: "3"},
		{Rev: 13, Key: "p/a", Delete: true},
		{Rev: 13, Key: "p/b", Delete: true}, // one revision, two events (a range delete)
		{Rev: 14, Key: "p/c", Value: "4"},
	}
}

func TestCheckWatchStreamBites(t *testing.T) {
	h := sampleHistory()
	clone := func() []HistEvent { return append([]HistEvent(nil), h...) }

	expectClean(t, CheckWatchStream(h, clone()))
	// Events of one revision in either order are fine.
	swapped := clone()
	swapped[3], swapped[4] = swapped[4], swapped[3]
	expectClean(t, CheckWatchStream(h, swapped))

	dup := clone()
	dup = append(dup[:3], append([]HistEvent{dup[2]}, dup[3:]...)...)
	expectProblem(t, CheckWatchStream(h, dup), "duplicate")

	// A resumed watch that starts again one revision too early delivers a duplicate too.
	replayed := append(clone()[:4], clone()[3:]...)
	expectProblem(t, CheckWatchStream(h, replayed), "duplicate")

	missing := append(clone()[:2], clone()[3:]...)
	expectProblem(t, CheckWatchStream(h, missing), "missing")

	// A stream that stops early has a gap at its end.
	expectProblem(t, CheckWatchStream(h, clone()[:5]), "missing")

	reordered := clone()
	reordered[1], reordered[2] = reordered[2], reordered[1]
	expectProblem(t, CheckWatchStream(h, reordered), "reordered")

	invented := append(clone(), HistEvent{Rev: 15, Key: "p/z", Value: "ghost"})
	expectProblem(t, CheckWatchStream(h, invented), "invented")

	wrongValue := clone()
	wrongValue[2].Value = "not 3"
	expectProblem(t, CheckWatchStream(h, wrongValue), "wrong")

	wrongType := clone()
	wrongType[3].Delete = false
	expectProblem(t, CheckWatchStream(h, wrongType), "wrong")
}

func putsHistory() ([]HistEvent, []KeyState) {
	h := []HistEvent{
		{Rev: 5, Key: "w/a", Value: "a1"},
		{Rev: 6, Key: "w/b", Value: "b1"},
		{Rev: 7, Key: "w/a", Value: "a2"},
		{Rev: 8, Key: "w/a", Value: "a3"},
	}
	s := []KeyState{
		{Key: "w/a", Value: "a3", CreateRev: 5, ModRev: 8, Version: 3},
		{Key: "w/b", Value: "b1", CreateRev: 6, ModRev: 6, Version: 1},
	}
	return h, s
}

func TestCheckHistoryAgainstStateBites(t *testing.T) {
	h, s := putsHistory()
	expectClean(t, CheckHistoryAgainstState(h, s))

	// A put missing from the middle: the version count disagrees.
	h, s = putsHistory()
	expectProblem(t, CheckHistoryAgainstState(append(h[:2], h[3:]...), s), "version")
	// Missing the first put: version and create revision disagree.
	h, s = putsHistory()
	expectProblem(t, CheckHistoryAgainstState(h[1:], s), "created")
	// Missing the last put: the last value disagrees.
	h, s = putsHistory()
	expectProblem(t, CheckHistoryAgainstState(h[:3], s), "last put")
	// An invented put of a key the state does not have.
	h, s = putsHistory()
	expectProblem(t, CheckHistoryAgainstState(append(h, HistEvent{Rev: 9, Key: "w/ghost", Value: "x"}), s), "does not hold")
	// Out of order.
	h, s = putsHistory()
	h[1], h[2] = h[2], h[1]
	expectProblem(t, CheckHistoryAgainstState(h, s), "not after")
	// A missing key altogether.
	h, s = putsHistory()
	expectProblem(t, CheckHistoryAgainstState(h[:1], s), "version")
}

func TestCheckAcknowledgedBites(t *testing.T) {
	h, _ := putsHistory()
	expectClean(t, CheckAcknowledged(h, []HistEvent{h[0], h[3]}))
	expectProblem(t, CheckAcknowledged(h, []HistEvent{{Rev: 9, Key: "w/a", Value: "a4"}}), "acknowledged")
	expectProblem(t, CheckAcknowledged(h, []HistEvent{{Rev: 7, Key: "w/a", Value: "other"}}), "acknowledged")
}

func fenceRun() []FenceRecord {
	return []FenceRecord{
		{Rev: 20, Token: 19, Holder: "a", Seq: 0, Kind: "start"},
		{Rev: 21, Token: 19, Holder: "a", Seq: 1, Kind: "inc", Counter: 1},
		{Rev: 22, Token: 19, Holder: "a", Seq: 2, Kind: "end"},
		// b's lock key was created while a held the lock (it queued), so its token is below
		// a's revisions but above a's token.
		{Rev: 24, Token: 21, Holder: "b", Seq: 0, Kind: "start"},
		{Rev: 25, Token: 21, Holder: "b", Seq: 1, Kind: "inc", Counter: 2},
		{Rev: 26, Token: 21, Holder: "b", Seq: 2, Kind: "inc", Counter: 3},
		// a's holding ended without its "end" (an unknown outcome); it comes back later.
		{Rev: 30, Token: 28, Holder: "a", Seq: 5, Kind: "start"},
		{Rev: 31, Token: 28, Holder: "a", Seq: 6, Kind: "inc", Counter: 4},
	}
}

func TestCheckFencingBites(t *testing.T) {
	expectClean(t, CheckFencing(fenceRun()))

	// b writes while a still holds: an overlap, seen as a token going back.
	r := fenceRun()
	r[3].Rev, r[2].Rev = 22, 24 // b's start now commits before a's end
	expectProblem(t, CheckFencing(r), "token went back")

	// A stale holder (a, token 19) writes after b took over.
	r = append(fenceRun(), FenceRecord{Rev: 27, Token: 19, Holder: "a", Seq: 3, Kind: "end"})
	expectProblem(t, CheckFencing(r), "token went back")

	// Lost update: two holders read the same counter.
	r = fenceRun()
	r[4].Counter = 1
	expectProblem(t, CheckFencing(r), "counter")

	// Skipped increment.
	r = fenceRun()
	r[7].Counter = 6
	expectProblem(t, CheckFencing(r), "counter")

	// Two workers with one token.
	r = fenceRun()
	r[5].Holder = "c"
	expectProblem(t, CheckFencing(r), "used by")

	// A worker's operations under one token out of order.
	r = fenceRun()
	r[4].Seq, r[5].Seq = 2, 1
	expectProblem(t, CheckFencing(r), "committed after")
}
