// peer drives etcd's own Go concurrency package (Mutex, Election) for interop tests.
// One JSON object a line on stdout; see tests/go/README.md.
//
//	peer [--endpoints a,b] [--ttl SECONDS] [--hold-ms N] [--count N] <command> ...
//	  mutex <name>            Lock, print acquired, hold, Unlock, print released
//	  elect <name> <value>    Campaign, print elected, hold (stdin "proclaim V" proclaims), Resign
//	  observe <name>          print each leader value (--count N: exit after N)
//	  leader <name>           print the current leader (exit 2 when there is none)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

var outMu sync.Mutex

// emit prints one JSON object, keys in the order given: emit("acquired", "key", k, "rev", r).
func emit(event string, kv ...interface{}) {
	var b bytes.Buffer
	b.WriteString(`{"event":`)
	ev, _ := json.Marshal(event)
	b.Write(ev)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := json.Marshal(kv[i])
		v, err := json.Marshal(kv[i+1])
		if err != nil {
			v, _ = json.Marshal(fmt.Sprint(kv[i+1]))
		}
		b.WriteByte(',')
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteString("}\n")
	outMu.Lock()
	os.Stdout.Write(b.Bytes())
	outMu.Unlock()
}

// fail prints an error line and exits with code (1 unless given).
func fail(kind string, err interface{}, code ...int) {
	emit("error", "kind", kind, "message", fmt.Sprint(err))
	c := 1
	if len(code) > 0 {
		c = code[0]
	}
	os.Exit(c)
}

type options struct {
	endpoints []string
	ttl       int
	holdMs    int // <0: hold until stdin closes (or "release")
	count     int // <=0: no limit
	args      []string
}

// parse accepts flags anywhere, as --name value or --name=value.
func parse(argv []string) options {
	o := options{endpoints: []string{"127.0.0.1:2379"}, ttl: 60, holdMs: -1}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "--") {
			o.args = append(o.args, a)
			continue
		}
		name, val, has := a[2:], "", false
		if j := strings.IndexByte(name, '='); j >= 0 {
			name, val, has = name[:j], name[j+1:], true
		}
		if !has {
			if i+1 >= len(argv) {
				fail("usage", "missing value for --"+name)
			}
			i++
			val = argv[i]
		}
		num := func() int {
			n, err := strconv.Atoi(val)
			if err != nil {
				fail("usage", fmt.Sprintf("--%s wants an integer, got %q", name, val))
			}
			return n
		}
		switch name {
		case "endpoints":
			o.endpoints = strings.Split(val, ",")
		case "ttl":
			o.ttl = num()
		case "hold-ms":
			o.holdMs = num()
		case "count":
			o.count = num()
		default:
			fail("usage", "unknown flag --"+name)
		}
	}
	return o
}

func connect(o options) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: o.endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		fail("connect", err)
	}
	return c
}

func session(c *clientv3.Client, o options) *concurrency.Session {
	s, err := concurrency.NewSession(c, concurrency.WithTTL(o.ttl))
	if err != nil {
		fail("session", err)
	}
	return s
}

// stdinLines delivers stdin's lines; the channel closes at EOF.
func stdinLines() <-chan string {
	ch := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
		close(ch)
	}()
	return ch
}

// hold returns when it is time to let go: stdin closed or said "release" (or "resign"),
// --hold-ms elapsed, or the session ended (then it prints "lost" and returns false).
// Other stdin lines go to onLine.
func hold(o options, s *concurrency.Session, lines <-chan string, onLine func(string)) bool {
	var timer <-chan time.Time
	if o.holdMs >= 0 {
		timer = time.After(time.Duration(o.holdMs) * time.Millisecond)
		lines = nil // --hold-ms: stdin is not read
	}
	for {
		select {
		case <-timer:
			return true
		case <-s.Done():
			emit("lost", "lease", int64(s.Lease()))
			return false
		case l, ok := <-lines:
			if !ok || l == "release" || l == "resign" {
				return true
			}
			if onLine != nil {
				onLine(l)
			} else if l != "" {
				emit("error", "kind", "usage", "message", "unknown stdin command "+strconv.Quote(l))
			}
		}
	}
}

func want(o options, n int, usage string) {
	if len(o.args) != n+1 {
		fail("usage", "usage: peer "+usage)
	}
}

func main() {
	o := parse(os.Args[1:])
	if len(o.args) == 0 {
		fail("usage", "usage: peer [--endpoints a,b] [--ttl s] [--hold-ms n] [--count n] mutex|elect|observe|leader ...")
	}
	ctx := context.Background()
	switch o.args[0] {
	case "mutex":
		want(o, 1, "mutex <name>")
		c := connect(o)
		s := session(c, o)
		lines := stdinLines()
		m := concurrency.NewMutex(s, o.args[1])
		emit("session", "lease", int64(s.Lease()), "key", fmt.Sprintf("%s/%x", o.args[1], s.Lease()))
		if err := m.Lock(ctx); err != nil {
			fail("lock", err)
		}
		rev := int64(-1)
		if r, err := c.Get(ctx, m.Key()); err == nil && len(r.Kvs) == 1 {
			rev = r.Kvs[0].CreateRevision
		}
		emit("acquired", "key", m.Key(), "rev", rev, "lease", int64(s.Lease()), "header_rev", m.Header().Revision)
		if !hold(o, s, lines, nil) {
			os.Exit(3)
		}
		if err := m.Unlock(ctx); err != nil {
			fail("unlock", err)
		}
		emit("released")
		s.Close()
	case "elect":
		want(o, 2, "elect <name> <value>")
		c := connect(o)
		s := session(c, o)
		lines := stdinLines()
		e := concurrency.NewElection(s, o.args[1])
		emit("session", "lease", int64(s.Lease()), "key", fmt.Sprintf("%s/%x", o.args[1], s.Lease()))
		if err := e.Campaign(ctx, o.args[2]); err != nil {
			fail("campaign", err)
		}
		// Election.Header() is the campaign's first response; a read after Campaign returned
		// gives a revision at which this side knew it led (tests order events by it).
		seen := int64(-1)
		if r, err := c.Get(ctx, e.Key()); err == nil {
			seen = r.Header.Revision
		}
		emit("elected", "key", e.Key(), "rev", e.Rev(), "value", o.args[2], "lease", int64(s.Lease()), "header_rev", seen)
		ok := hold(o, s, lines, func(l string) {
			if v := strings.TrimPrefix(l, "proclaim "); v != l {
				if err := e.Proclaim(ctx, v); err != nil {
					emit("error", "kind", "proclaim", "message", err.Error())
					return
				}
				emit("proclaimed", "value", v)
			} else if l != "" {
				emit("error", "kind", "usage", "message", "unknown stdin command "+strconv.Quote(l))
			}
		})
		if !ok {
			os.Exit(3)
		}
		if err := e.Resign(ctx); err != nil {
			fail("resign", err)
		}
		emit("resigned")
		s.Close()
	case "observe":
		want(o, 1, "observe <name> [--count N]")
		c := connect(o)
		s := session(c, o)
		e := concurrency.NewElection(s, o.args[1])
		cctx, cancel := context.WithCancel(ctx)
		go func() { // stdin closing ends the observation
			for range stdinLines() {
			}
			if o.count <= 0 {
				cancel()
			}
		}()
		ch := e.Observe(cctx)
		emit("ready")
		n := 0
		for r := range ch {
			kv := r.Kvs[0]
			emit("leader", "key", string(kv.Key), "rev", kv.CreateRevision, "value", string(kv.Value), "lease", kv.Lease)
			n++
			if o.count > 0 && n >= o.count {
				break
			}
		}
		cancel()
		if o.count > 0 && n < o.count {
			fail("observe", fmt.Sprintf("observation ended after %d of %d leader values", n, o.count))
		}
		s.Close()
	case "leader":
		want(o, 1, "leader <name>")
		c := connect(o)
		s := session(c, o)
		r, err := concurrency.NewElection(s, o.args[1]).Leader(ctx)
		if err == concurrency.ErrElectionNoLeader {
			s.Close()
			fail("no_leader", err, 2)
		} else if err != nil {
			fail("leader", err)
		}
		kv := r.Kvs[0]
		emit("leader", "key", string(kv.Key), "rev", kv.CreateRevision, "value", string(kv.Value), "lease", kv.Lease)
		s.Close()
	default:
		fail("usage", "unknown command "+strconv.Quote(o.args[0]))
	}
}
