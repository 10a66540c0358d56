// Command bench is the Go side of the bench card's R1 and Q1 (../shared/BENCH.md): etcd's
// own contrib/recipes RWMutex and Queue, timed the same way as examples/src/bin/bench.rs
// times ours, against the same etcd. One JSON line on stdout with the figure.
//
//	bench [--endpoints a,b] r1 [--name N] [--readers 8] [--writers 2] [--cycles 100]
//	bench [--endpoints a,b] q1 [--name N] [--producers 2] [--consumers 2] [--items 5000]
//
// r1: readers+writers goroutines, each its own client and session (made before the clock
// starts), `cycles` RLock/Lock cycles each. Inside a hold, the occupancy record <name>-state
// ("" empty, "r<n>" n readers, "w" a writer) is changed with a compare-and-swap on its mod
// revision: entering as a writer needs "" or "r0", as a reader anything but "w"; so an
// overlap is caught in etcd, not by local flags. Prints cycles/s; ok = no overlap seen,
// the state back to "r0"/"" and no lock key left.
//
// q1: producers enqueue items/producers values each ("p<i>-<n>"), consumers dequeue until
// all items are taken; each its own client. Prints items/s from the first enqueue to the
// last dequeue; ok = every value taken exactly once and no key left under <name>/.
//
// Errors: {"event":"error","message":M} and exit 1.
// Build: tests/go/build.sh bench (offline, GOPATH=/usr/share/gocode GO111MODULE=off).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

func fail(err interface{}) {
	emit(map[string]interface{}{"event": "error", "message": fmt.Sprint(err)})
	os.Exit(1)
}

func connect(endpoints []string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		fail(err)
	}
	return c
}

// update changes the record at key from s to f(s) with a compare-and-swap on its mod
// revision; f's false means s must never be seen: it is returned as an error.
func update(c *clientv3.Client, key string, f func(string) (string, bool)) error {
	ctx := context.Background()
	for {
		got, err := c.Get(ctx, key)
		if err != nil {
			return err
		}
		now, modrev := "", int64(0)
		if len(got.Kvs) > 0 {
			now, modrev = string(got.Kvs[0].Value), got.Kvs[0].ModRevision
		}
		next, ok := f(now)
		if !ok {
			return fmt.Errorf("entered while the state was %q", now)
		}
		resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modrev)).
			Then(clientv3.OpPut(key, next)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
	}
}

func readers(s string) (int, bool) {
	if s == "" {
		return 0, true
	}
	if !strings.HasPrefix(s, "r") {
		return 0, false
	}
	n, err := strconv.Atoi(s[1:])
	return n, err == nil
}

func r1(endpoints []string, name string, nr, nw, cycles int) {
	type worker struct {
		c  *clientv3.Client
		s  *concurrency.Session
		rw *recipe.RWMutex
	}
	ws := make([]worker, nr+nw)
	for i := range ws {
		c := connect(endpoints)
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			fail(err)
		}
		ws[i] = worker{c, s, recipe.NewRWMutex(s, name)}
	}
	state := name + "-state"
	var overlaps int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := ws[i]
			writer := i < nw
			for n := 0; n < cycles; n++ {
				var err error
				if writer {
					if err = w.rw.Lock(); err != nil {
						firstErr.Store(err.Error())
						return
					}
					if e := update(w.c, state, func(s string) (string, bool) { return "w", s == "" || s == "r0" }); e != nil {
						atomic.AddInt64(&overlaps, 1)
					}
					if e := update(w.c, state, func(s string) (string, bool) { return "", s == "w" }); e != nil {
						atomic.AddInt64(&overlaps, 1)
					}
					err = w.rw.Unlock()
				} else {
					if err = w.rw.RLock(); err != nil {
						firstErr.Store(err.Error())
						return
					}
					if e := update(w.c, state, func(s string) (string, bool) {
						k, ok := readers(s)
						return "r" + strconv.Itoa(k+1), ok
					}); e != nil {
						atomic.AddInt64(&overlaps, 1)
					}
					if e := update(w.c, state, func(s string) (string, bool) {
						k, ok := readers(s)
						return "r" + strconv.Itoa(k-1), ok && k > 0
					}); e != nil {
						atomic.AddInt64(&overlaps, 1)
					}
					err = w.rw.RUnlock()
				}
				if err != nil {
					firstErr.Store(err.Error())
					return
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	total := (nr + nw) * cycles
	c := ws[0].c
	left, err := c.Get(context.Background(), name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		fail(err)
	}
	end, err := c.Get(context.Background(), state)
	if err != nil {
		fail(err)
	}
	endState := ""
	if len(end.Kvs) > 0 {
		endState = string(end.Kvs[0].Value)
	}
	e, _ := firstErr.Load().(string)
	ok := overlaps == 0 && e == "" && left.Count == 0 && (endState == "" || endState == "r0")
	out := map[string]interface{}{"side": "go-etcd-recipes", "lang": "go", "workload": "R1", "value": float64(total) / elapsed, "unit": "cycles/s",
		"ok": ok, "overlaps": overlaps, "cycles": total, "seconds": elapsed}
	if e != "" {
		out["error"] = e
	}
	emit(out)
	for _, w := range ws {
		w.s.Close()
		w.c.Close()
	}
}

func q1(endpoints []string, name string, np, nc, items int) {
	prod := make([]*clientv3.Client, np)
	for i := range prod {
		prod[i] = connect(endpoints)
	}
	cons := make([]*clientv3.Client, nc)
	for i := range cons {
		cons[i] = connect(endpoints)
	}
	var mu sync.Mutex
	seen := make(map[string]int, items)
	var taken int64
	done := make(chan struct{})
	var firstErr atomic.Value
	start := time.Now()
	for i := range cons {
		go func(i int) {
			q := recipe.NewQueue(cons[i], name)
			for {
				v, err := q.Dequeue()
				if err != nil {
					firstErr.Store(err.Error())
					return
				}
				mu.Lock()
				seen[v]++
				mu.Unlock()
				if atomic.AddInt64(&taken, 1) == int64(items) {
					close(done)
				}
			}
		}(i)
	}
	var pw sync.WaitGroup
	per := items / np
	for i := range prod {
		pw.Add(1)
		go func(i int) {
			defer pw.Done()
			q := recipe.NewQueue(prod[i], name)
			n := per
			if i == np-1 {
				n = items - per*(np-1)
			}
			for k := 0; k < n; k++ {
				if err := q.Enqueue(fmt.Sprintf("p%d-%d", i, k)); err != nil {
					firstErr.Store(err.Error())
					return
				}
			}
		}(i)
	}
	pw.Wait()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		firstErr.Store("timed out waiting for the consumers")
	}
	elapsed := time.Since(start).Seconds()
	left, err := prod[0].Get(context.Background(), name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		fail(err)
	}
	mu.Lock()
	dups := 0
	for _, n := range seen {
		if n > 1 {
			dups += n - 1
		}
	}
	distinct := len(seen)
	mu.Unlock()
	e, _ := firstErr.Load().(string)
	ok := e == "" && distinct == items && dups == 0 && left.Count == 0
	out := map[string]interface{}{"side": "go-etcd-recipes", "lang": "go", "workload": "Q1", "value": float64(items) / elapsed, "unit": "items/s",
		"ok": ok, "distinct": distinct, "duplicates": dups, "left": left.Count, "seconds": elapsed}
	if e != "" {
		out["error"] = e
	}
	emit(out)
	// Consumers may still wait in Dequeue (it has no cancel): exit without closing them.
	os.Exit(0)
}

func main() {
	endpoints := []string{"127.0.0.1:2379"}
	name := ""
	nums := map[string]int{"readers": 8, "writers": 2, "cycles": 100, "producers": 2, "consumers": 2, "items": 5000}
	var args []string
	argv := os.Args[1:]
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "--") {
			args = append(args, a)
			continue
		}
		flag, val := a[2:], ""
		if j := strings.IndexByte(flag, '='); j >= 0 {
			flag, val = flag[:j], flag[j+1:]
		} else {
			if i+1 >= len(argv) {
				fail("missing value for --" + flag)
			}
			i++
			val = argv[i]
		}
		switch flag {
		case "endpoints":
			endpoints = strings.Split(val, ",")
		case "name":
			name = val
		default:
			if _, known := nums[flag]; !known {
				fail("unknown flag --" + flag)
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				fail("bad value for --" + flag + ": " + val)
			}
			nums[flag] = n
		}
	}
	if len(args) != 1 {
		fail("usage: bench [--endpoints a,b] r1|q1|k1|k2|k3|l1|l2|e1|e2|s1|f1|w1 [--name N] [--readers|--writers|--cycles|--producers|--consumers|--items N]")
	}
	switch args[0] {
	case "r1":
		if name == "" {
			name = "bench-r1/go"
		}
		r1(endpoints, name, nums["readers"], nums["writers"], nums["cycles"])
	case "q1":
		if name == "" {
			name = "bench-q1/go"
		}
		q1(endpoints, name, nums["producers"], nums["consumers"], nums["items"])
	default:
		if !card(args[0], endpoints, name) {
			fail("unknown command " + args[0])
		}
	}
}
