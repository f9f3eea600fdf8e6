package raftdbclientv3

// The cluster helper: raftdb processes on loopback, each with its own data directory under a
// temporary root, started, killed (SIGKILL), paused (SIGSTOP), resumed (SIGCONT) and restarted by
// process id. Every cluster registers a t.Cleanup that kills, by process id, each process it
// started; the cleanup runs when the test fails or panics too. Should the test binary itself die
// without running cleanups (a -timeout panic, a kill), every raftdb it started gets SIGKILL from
// the kernel (Pdeathsig, bound to one OS thread that lives as long as the binary).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/pkg/logutil"
	"go.uber.org/zap"
)

// Environment knobs.
const (
	envBinary    = "RAFTDB_BINARY"         // the raftdb executable (the script sets it)
	envPortBase  = "RAFTDB_GO_PORT_BASE"   // first loopback port of the range used (default 16000)
	envPortSpan  = "RAFTDB_GO_PORT_SPAN"   // size of that range (default 1000)
	envKeepData  = "RAFTDB_KEEP_TEST_DATA" // set: keep data directories and logs
	envClientLog = "RAFTDB_GO_CLIENT_LOG"  // clientv3's zap level (default error)
)

// Ports: the Swift integration harness hands out 20000-32000 (spread by pid) and `raftctl verify`
// in scripts/test.sh numbers from 21000 and 21300, so this suite defaults to 16000-16999, below
// all of them and below the kernel's ephemeral range (32768 and up). Each port is probed free
// before use and never handed out twice in one run.
const (
	defaultPortBase = 16000
	defaultPortSpan = 1000
)

var ports struct {
	sync.Mutex
	initialized bool
	base, span  int
	next        int
}

func envInt(name string, fallback int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			return n
		}
	}
	return fallback
}

// freePort returns a loopback port from the suite's range that nothing listens on right now.
func freePort(t testing.TB) int {
	ports.Lock()
	defer ports.Unlock()
	if !ports.initialized {
		ports.base = envInt(envPortBase, defaultPortBase)
		ports.span = envInt(envPortSpan, defaultPortSpan)
		if ports.base < 1024 || ports.span < 20 || ports.base+ports.span > 32768 {
			t.Fatalf("port range %d+%d must lie within 1024..32767", ports.base, ports.span)
		}
		// Start concurrent runs at different places in the range.
		ports.next = (os.Getpid() * 7) % ports.span
		ports.initialized = true
	}
	for tries := 0; tries < ports.span; tries++ {
		p := ports.base + ports.next
		ports.next = (ports.next + 1) % ports.span
		if portIsFree(p) {
			return p
		}
	}
	t.Fatalf("no free port in %d..%d", ports.base, ports.base+ports.span-1)
	return 0
}

func portIsFree(p int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Pdeathsig fires when the thread that started the child exits, so every child is started from
// this one goroutine, locked to its thread for the life of the test binary.
type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

var spawnRequests = make(chan spawnRequest)

func init() {
	go func() {
		runtime.LockOSThread()
		for r := range spawnRequests {
			r.result <- r.cmd.Start()
		}
	}()
}

func raftdbBinary(t testing.TB) string {
	if b := os.Getenv(envBinary); b != "" {
		return b
	}
	// Run from the package directory by plain `go test`: the repository's release build.
	b, _ := filepath.Abs("../../../../.build/release/raftdb")
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("set %s to a raftdb executable (%s not found)", envBinary, b)
	}
	return b
}

// Node is one raftdb member: its ports and directory stay fixed across restarts.
type Node struct {
	Name     string
	HTTPPort int
	RaftPort int
	Dir      string
	LogPath  string

	mu      sync.Mutex
	proc    *os.Process // nil: not running (cleared once the process has been reaped)
	pid     int
	exited  chan struct{}
	paused  bool
	killing bool // the harness signalled it to die: its exit is expected
	started int
	// Exits nobody asked for (a crash), with their status.
	unexpected []string
}

// Endpoint is the member's client address (HTTP and gRPC share it).
func (n *Node) Endpoint() string { return fmt.Sprintf("127.0.0.1:%d", n.HTTPPort) }

// PID is the running process's id, 0 if none.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pid
}

// Running reports whether the process is alive (paused counts as alive).
func (n *Node) Running() bool { return n.PID() != 0 }

// Paused reports whether the process was sent SIGSTOP and not yet SIGCONT.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pid != 0 && n.paused
}

// Cluster is a set of raftdb processes started by one test.
type Cluster struct {
	t      testing.TB
	Root   string
	Nodes  []*Node
	Args   []string // extra flags for every node
	binary string
}

// Flags every node gets: fast elections (tests wait for failover), and WAL segments that are not
// reserved on disk in full (64 MiB each otherwise).
var baseFlags = []string{
	"-heartbeat-interval", "50", "-election-timeout", "500",
	"-wal-preallocate", "false", "-log-level", "info",
}

// NewCluster starts `size` members the usual way (the first bootstraps, the others join through
// it), waits until every member is a voter, agrees on a leader and takes writes and linearizable
// reads through its own endpoint, and registers the cleanup that kills them all.
func NewCluster(t testing.TB, size int, extraArgs ...string) *Cluster {
	t.Helper()
	root, err := os.MkdirTemp("", "raftdb-go-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, Root: root, Args: extraArgs, binary: raftdbBinary(t)}
	t.Cleanup(c.cleanup)
	for i := 0; i < size; i++ {
		name := fmt.Sprintf("node%02d", i+1)
		c.Nodes = append(c.Nodes, &Node{
			Name: name, HTTPPort: freePort(t), RaftPort: freePort(t),
			Dir: filepath.Join(root, name), LogPath: filepath.Join(root, name+".log"),
		})
	}
	c.Start(0)
	if err := c.waitFor(20*time.Second, func() bool {
		s, err := c.Status(0)
		return err == nil && s.State == "leader"
	}); err != nil {
		t.Fatalf("node01 did not lead: %v\n%s", err, c.LogTail(0, 30))
	}
	for i := 1; i < size; i++ {
		c.Start(i)
	}
	if _, err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatalf("cluster did not become ready: %v", err)
	}
	return c
}

func (c *Cluster) cleanup() {
	for _, n := range c.Nodes {
		// SIGKILL also ends a stopped process.
		if err := n.killAndWait(); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
		n.mu.Lock()
		for _, u := range n.unexpected {
			c.t.Errorf("%s exited by itself: %s", n.Name, u)
		}
		n.mu.Unlock()
	}
	if c.t.Failed() {
		for i := range c.Nodes {
			c.t.Logf("--- %s log tail:\n%s", c.Nodes[i].Name, c.LogTail(i, 40))
		}
		c.t.Logf("data and logs kept in %s", c.Root)
		return
	}
	if os.Getenv(envKeepData) == "" {
		os.RemoveAll(c.Root)
	}
}

// Start starts (or restarts) node i. On its first start every node but the first joins through
// the first; a restart finds its state in its directory and needs no -join.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		c.t.Fatalf("%s is already running (pid %d)", n.Name, n.pid)
	}
	args := []string{"-id", n.Name, "-haddr", n.Endpoint(), "-raddr", fmt.Sprintf("127.0.0.1:%d", n.RaftPort)}
	if i > 0 && n.started == 0 {
		args = append(args, "-join", c.Nodes[0].Endpoint())
	}
	args = append(args, baseFlags...)
	args = append(args, c.Args...)
	args = append(args, n.Dir)
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "=== %s start #%d: %s %s\n", time.Now().Format(time.RFC3339Nano), n.started+1,
		c.binary, strings.Join(args, " "))
	cmd := exec.Command(c.binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	result := make(chan error)
	spawnRequests <- spawnRequest{cmd, result}
	if err := <-result; err != nil {
		c.t.Fatalf("starting %s: %v", n.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		// Reaped: from now on the pid may belong to another process, so it is forgotten before
		// anyone can signal it again.
		n.mu.Lock()
		if !n.killing {
			n.unexpected = append(n.unexpected, fmt.Sprintf("pid %d: %v", cmd.Process.Pid, err))
		}
		n.proc, n.pid, n.paused, n.killing = nil, 0, false, false
		n.mu.Unlock()
		if f, ferr := os.OpenFile(n.LogPath, os.O_APPEND|os.O_WRONLY, 0o644); ferr == nil {
			fmt.Fprintf(f, "=== %s pid %d exited: %v\n", time.Now().Format(time.RFC3339Nano), cmd.Process.Pid, err)
			f.Close()
		}
		close(exited)
	}()
	n.proc, n.pid, n.exited, n.paused, n.killing = cmd.Process, cmd.Process.Pid, exited, false, false
	n.started++
}

// killAndWait sends SIGKILL to the node's process, if it still runs, and waits for it to be
// reaped. The signal goes through the os.Process handle of the process this harness started,
// which refuses to signal once that process has been waited for.
func (n *Node) killAndWait() error {
	n.mu.Lock()
	proc, pid, exited := n.proc, n.pid, n.exited
	if proc != nil {
		n.killing = true
	}
	n.mu.Unlock()
	if proc == nil {
		return nil
	}
	_ = proc.Signal(syscall.SIGKILL)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", n.Name, pid)
	}
}

// Kill sends SIGKILL to node i by process id and waits until it has exited.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	if err := c.Nodes[i].killAndWait(); err != nil {
		c.t.Fatal(err)
	}
}

// Pause sends SIGSTOP to node i.
func (c *Cluster) Pause(i int) { c.signal(i, syscall.SIGSTOP, true) }

// Resume sends SIGCONT to node i.
func (c *Cluster) Resume(i int) { c.signal(i, syscall.SIGCONT, false) }

func (c *Cluster) signal(i int, sig syscall.Signal, paused bool) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		c.t.Fatalf("%s is not running", n.Name)
	}
	if err := n.proc.Signal(sig); err != nil {
		c.t.Fatalf("%v to %s (pid %d): %v", sig, n.Name, n.pid, err)
	}
	n.paused = paused
}

// Restart kills node i (if running) and starts it again on the same directory and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	c.Start(i)
}

// Endpoints are every member's client address, in node order.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, n := range c.Nodes {
		eps = append(eps, n.Endpoint())
	}
	return eps
}

// LogTail is the last `lines` lines of node i's log.
func (c *Cluster) LogTail(i, lines int) string {
	f, err := os.Open(c.Nodes[i].LogPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var all []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<16), 1<<20)
	for s.Scan() {
		all = append(all, s.Text())
		if len(all) > 4*lines {
			all = all[len(all)-lines:]
		}
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// NodeStatus is what raftdb's HTTP GET /status reports (the fields the tests use).
type NodeStatus struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Term   int64  `json:"term"`
	Leader *struct {
		ID    string `json:"id"`
		HAddr string `json:"haddr"`
	} `json:"leader"`
	Members []struct {
		ID       string `json:"id"`
		HAddr    string `json:"haddr"`
		Voter    bool   `json:"voter"`
		MemberID string `json:"member_id"`
	} `json:"members"`
	MemberID  string `json:"member_id"`
	ClusterID string `json:"cluster_id"`
}

var statusClient = &http.Client{Timeout: time.Second}

// Status asks node i for /status.
func (c *Cluster) Status(i int) (*NodeStatus, error) {
	resp, err := statusClient.Get("http://" + c.Nodes[i].Endpoint() + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/status of %s: %s", c.Nodes[i].Name, resp.Status)
	}
	var s NodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// MemberID is node i's etcd member id (what response headers carry), from its /status.
func (c *Cluster) MemberID(i int) uint64 {
	c.t.Helper()
	s, err := c.Status(i)
	if err != nil {
		c.t.Fatalf("status of %s: %v", c.Nodes[i].Name, err)
	}
	id, err := strconv.ParseUint(s.MemberID, 16, 64)
	if err != nil {
		c.t.Fatalf("member id %q of %s: %v", s.MemberID, c.Nodes[i].Name, err)
	}
	return id
}

// leaderNow is the index of the node that every running, unpaused member names as leader (and
// that says it leads), with every node a voter in its member list; -1 if there is none.
func (c *Cluster) leaderNow() int {
	leader := ""
	for i, n := range c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		s, err := c.Status(i)
		if err != nil || s.Leader == nil || s.Leader.ID == "" {
			return -1
		}
		if leader == "" {
			leader = s.Leader.ID
		} else if leader != s.Leader.ID {
			return -1
		}
		if s.ID == leader {
			if s.State != "leader" {
				return -1
			}
			voters := 0
			for _, m := range s.Members {
				if m.Voter {
					voters++
				}
			}
			if voters != len(c.Nodes) || len(s.Members) != len(c.Nodes) {
				return -1
			}
		}
	}
	for i, n := range c.Nodes {
		if n.Name == leader && n.Running() && !n.Paused() {
			return i
		}
	}
	return -1
}

// Leader waits for an agreed leader and returns its index.
func (c *Cluster) Leader() int {
	c.t.Helper()
	leader := -1
	if err := c.waitFor(20*time.Second, func() bool { leader = c.leaderNow(); return leader >= 0 }); err != nil {
		c.t.Fatalf("no agreed leader: %v", err)
	}
	return leader
}

// Follower returns the index of some running follower.
func (c *Cluster) Follower() int {
	c.t.Helper()
	leader := c.Leader()
	for i, n := range c.Nodes {
		if i != leader && n.Running() && !n.Paused() {
			return i
		}
	}
	c.t.Fatal("no running follower")
	return -1
}

// WaitReady waits until the running, unpaused members agree on a leader whose member list has
// every node as a voter, and each of them takes a put and a linearizable get through its own
// endpoint. It returns the leader's index.
func (c *Cluster) WaitReady(timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	clients := map[int]*clientv3.Client{}
	defer func() {
		for _, cli := range clients {
			cli.Close()
		}
	}()
	var lastErr error
	for time.Now().Before(deadline) {
		leader := c.leaderNow()
		if leader < 0 {
			lastErr = fmt.Errorf("no agreed leader with %d voters", len(c.Nodes))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ok := true
		for i, n := range c.Nodes {
			if !n.Running() || n.Paused() {
				continue
			}
			cli := clients[i]
			if cli == nil {
				var err error
				cli, err = newClient([]string{n.Endpoint()}, 2*time.Second)
				if err != nil {
					lastErr, ok = err, false
					break
				}
				clients[i] = cli
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := cli.Put(ctx, "_ready/"+n.Name, time.Now().Format(time.RFC3339Nano))
			if err == nil {
				_, err = cli.Get(ctx, "_ready/"+n.Name)
			}
			cancel()
			if err != nil {
				lastErr, ok = fmt.Errorf("%s: %v", n.Name, err), false
				break
			}
		}
		if ok {
			return leader, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1, lastErr
}

func (c *Cluster) waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cond() {
		return nil
	}
	return fmt.Errorf("timed out after %v", timeout)
}

// clientLogConfig quiets clientv3 (its retries log warnings under faults) unless asked.
func clientLogConfig() *zap.Config {
	cfg := logutil.DefaultZapLoggerConfig
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	if v := os.Getenv(envClientLog); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	cfg.Level = level
	return &cfg
}

func newClient(endpoints []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		LogConfig:   clientLogConfig(),
	})
}

// Client is a clientv3 client over the given endpoints (default: every member), closed when the
// test ends.
func (c *Cluster) Client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	cli, err := newClient(endpoints, 5*time.Second)
	if err != nil {
		t.Fatalf("clientv3.New(%v): %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// NodeClient is a client over node i's endpoint alone.
func (c *Cluster) NodeClient(t testing.TB, i int) *clientv3.Client {
	return c.Client(t, c.Nodes[i].Endpoint())
}

// timeoutCtx is a context that ends after d or when the test ends.
func timeoutCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
