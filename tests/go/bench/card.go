// The bench card's K1-K3, L1, L2 and E1 on etcd's own Go client and concurrency package,
// timed like the other sides of bench/ (one JSON line each):
//
//	bench [--endpoints a,b] k1|k2|k3|l1|l2|e1 [--name PREFIX]
//
// k1: 20,000 puts of 256-byte values, 64 in flight, one client. k2: 20,000 gets of
// <name>/<i> (the driver writes them first), 64 in flight; ok = every key found. k3: 2,000
// sequential puts, median latency in us. l1: 500 Lock/Unlock cycles of a concurrency.Mutex.
// l2: 8 workers, each its own client and session, 100 cycles of Lock, get counter, +1, put,
// Unlock; ok = the counter ends at 800. e1: two candidates (concurrency.Election); the leader
// resigns, ms until the other's Campaign returns, median over 30.
package main

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

const (
	kvOps    = 20000
	inFlight = 64
)

func cardEmit(workload string, value float64, unit string, ok bool) {
	emit(map[string]interface{}{"side": "go-etcd-concurrency", "lang": "go", "workload": workload, "value": value, "unit": unit, "ok": ok})
}

func medianOf(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// parallel runs op(i) for i in [0, n) with `inFlight` goroutines and returns ops/s and
// whether every op succeeded.
func parallel(n int, op func(i int) bool) (float64, bool) {
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	start := time.Now()
	for g := 0; g < inFlight; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if !op(i) {
					mu.Lock()
					ok = false
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), ok
}

func k1(endpoints []string, name string) {
	c := connect(endpoints)
	value := string(make([]byte, 256))
	rate, ok := parallel(kvOps, func(i int) bool {
		_, err := c.Put(context.Background(), name+"/"+strconv.Itoa(i), value)
		return err == nil
	})
	cardEmit("K1", rate, "ops/s", ok)
}

func k2(endpoints []string, name string) {
	c := connect(endpoints)
	rate, ok := parallel(kvOps, func(i int) bool {
		r, err := c.Get(context.Background(), name+"/"+strconv.Itoa(i))
		return err == nil && len(r.Kvs) == 1
	})
	cardEmit("K2", rate, "ops/s", ok)
}

func k3(endpoints []string, name string) {
	c := connect(endpoints)
	lat := make([]float64, 0, 2000)
	for i := 0; i < 2000; i++ {
		t := time.Now()
		if _, err := c.Put(context.Background(), name+"/"+strconv.Itoa(i), "v"); err != nil {
			fail(err)
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
	}
	cardEmit("K3", medianOf(lat), "us", true)
}

func l1(endpoints []string, name string) {
	c := connect(endpoints)
	s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
	if err != nil {
		fail(err)
	}
	m := concurrency.NewMutex(s, name)
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 500; i++ {
		if err := m.Lock(ctx); err != nil {
			fail(err)
		}
		if err := m.Unlock(ctx); err != nil {
			fail(err)
		}
	}
	rate := 500 / time.Since(start).Seconds()
	s.Close()
	cardEmit("L1", rate, "cycles/s", true)
}

func l2(endpoints []string, name string) {
	ctx := context.Background()
	counter := name + "-counter"
	type worker struct {
		c *clientv3.Client
		m *concurrency.Mutex
		s *concurrency.Session
	}
	ws := make([]worker, 8)
	for i := range ws {
		c := connect(endpoints)
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			fail(err)
		}
		ws[i] = worker{c, concurrency.NewMutex(s, name), s}
	}
	if _, err := ws[0].c.Put(ctx, counter, "0"); err != nil {
		fail(err)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range ws {
		wg.Add(1)
		go func(w worker) {
			defer wg.Done()
			for n := 0; n < 100; n++ {
				if err := w.m.Lock(ctx); err != nil {
					fail(err)
				}
				r, err := w.c.Get(ctx, counter)
				if err != nil {
					fail(err)
				}
				v, _ := strconv.Atoi(string(r.Kvs[0].Value))
				if _, err := w.c.Put(ctx, counter, strconv.Itoa(v+1)); err != nil {
					fail(err)
				}
				if err := w.m.Unlock(ctx); err != nil {
					fail(err)
				}
			}
		}(w)
	}
	wg.Wait()
	rate := 800 / time.Since(start).Seconds()
	r, err := ws[0].c.Get(ctx, counter)
	if err != nil {
		fail(err)
	}
	for _, w := range ws {
		w.s.Close()
	}
	cardEmit("L2", rate, "handoffs/s", string(r.Kvs[0].Value) == "800")
}

func e1(endpoints []string, name string) {
	ctx := context.Background()
	c := connect(endpoints)
	var es [2]*concurrency.Election
	for i := range es {
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			fail(err)
		}
		defer s.Close()
		es[i] = concurrency.NewElection(s, name)
	}
	if err := es[0].Campaign(ctx, "a"); err != nil {
		fail(err)
	}
	leader, times := 0, make([]float64, 0, 30)
	for n := 0; n < 30; n++ {
		other := 1 - leader
		done := make(chan time.Time, 1)
		go func() {
			if err := es[other].Campaign(ctx, "b"); err != nil {
				fail(err)
			}
			done <- time.Now()
		}()
		time.Sleep(20 * time.Millisecond) // the other is queued
		t := time.Now()
		if err := es[leader].Resign(ctx); err != nil {
			fail(err)
		}
		at := <-done
		times = append(times, float64(at.Sub(t).Nanoseconds())/1e6)
		leader = other
	}
	es[leader].Resign(ctx)
	cardEmit("E1", medianOf(times), "ms", true)
}

// card runs one of the workloads above; false if cmd is not one of them.
func card(cmd string, endpoints []string, name string) bool {
	run := map[string]func([]string, string){"k1": k1, "k2": k2, "k3": k3, "l1": l1, "l2": l2, "e1": e1}[cmd]
	if run == nil {
		return false
	}
	if name == "" {
		name = "bench-go/" + cmd
	}
	run(endpoints, name)
	return true
}
