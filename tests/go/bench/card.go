// The bench card's K1-K3, L1, L2, E1, E2, S1 and F1 on etcd's own Go client and concurrency
// package, timed like the other sides of bench/ (one JSON line each; W1 prints n/a):
//
//	bench [--endpoints a,b] k1|k2|k3|l1|l2|e1|e2|s1|f1|w1 [--name PREFIX]
//
// k1: 20,000 puts of 256-byte values, 64 in flight, one client. k2: 20,000 gets of
// <name>/<i> (the driver writes them first), 64 in flight; ok = every key found. k3: 2,000
// sequential puts, median latency in us. l1: 500 Lock/Unlock cycles of a concurrency.Mutex.
// l2: 8 workers, each its own client and session, 100 cycles of Lock, get counter, +1, put,
// Unlock; ok = the counter ends at 800. e1: two candidates (concurrency.Election); the leader
// resigns, ms until the other's Campaign returns, median over 30.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	run := map[string]func([]string, string){"k1": k1, "k2": k2, "k3": k3, "l1": l1, "l2": l2, "e1": e1,
		"e2": e2, "e2child": e2child, "s1": s1, "f1": f1}[cmd]
	if cmd == "w1" {
		emit(map[string]interface{}{"side": "go-etcd-recipes", "lang": "go", "workload": "W1", "value": nil, "ok": nil,
			"na": "etcd's Go packages have no reliable work queue (recipe.Queue deletes on dequeue: at most once)"})
		return true
	}
	if run == nil {
		return false
	}
	if name == "" {
		name = "bench-go/" + cmd
	}
	run(endpoints, name)
	return true
}

// e2: a child process (this program, `e2child`) campaigns with a session of TTL 2 s and
// leads; our candidate (TTL 2 s) queues behind it; the child is SIGKILLed; ms until our
// Campaign returns, median over 3 kills. ok = etcd reports the old leader's lease gone
// (TimeToLive -1) when we lead: we did not lead before it had really expired.
func e2(endpoints []string, name string) {
	ctx := context.Background()
	c := connect(endpoints)
	times, ok, early := make([]float64, 0, 3), true, 0
	for turn := 0; turn < 3; turn++ {
		n := name + "-" + strconv.Itoa(turn)
		cmd := exec.Command(os.Args[0], "--endpoints="+strings.Join(endpoints, ","), "e2child", "--name="+n)
		out, err := cmd.StdoutPipe()
		if err != nil {
			fail(err)
		}
		if err := cmd.Start(); err != nil {
			fail(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			fail("the e2 child ended before leading: " + err.Error())
		}
		old, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "leader ")), 10, 64)
		if err != nil {
			fail(err)
		}
		s, err := concurrency.NewSession(c, concurrency.WithTTL(2))
		if err != nil {
			fail(err)
		}
		e := concurrency.NewElection(s, n)
		done := make(chan time.Time, 1)
		go func() {
			if err := e.Campaign(ctx, "new"); err != nil {
				fail(err)
			}
			done <- time.Now()
		}()
		for {
			r, err := c.Get(ctx, n+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				fail(err)
			}
			if r.Count >= 2 {
				break
			}
			time.Sleep(2 * time.Millisecond) // until our candidate is queued
		}
		t := time.Now()
		cmd.Process.Kill()
		at := <-done
		ttl, err := c.TimeToLive(ctx, clientv3.LeaseID(old))
		if err != nil {
			fail(err)
		}
		if ttl.TTL != -1 {
			early++
		}
		times = append(times, float64(at.Sub(t).Nanoseconds())/1e6)
		e.Resign(ctx)
		s.Close()
		cmd.Wait()
	}
	mx := 0.0
	for _, v := range times {
		if v > mx {
			mx = v
		}
	}
	emit(map[string]interface{}{"side": "go-etcd-concurrency", "lang": "go", "workload": "E2", "value": medianOf(times), "unit": "ms",
		"ok": ok && early == 0, "max_ms": mx, "kills": len(times), "led_before_expiry": early})
}

// e2child leads the election and waits to be killed.
func e2child(endpoints []string, name string) {
	c := connect(endpoints)
	s, err := concurrency.NewSession(c, concurrency.WithTTL(2))
	if err != nil {
		fail(err)
	}
	if err := concurrency.NewElection(s, name).Campaign(context.Background(), "old"); err != nil {
		fail(err)
	}
	fmt.Printf("leader %d\n", int64(s.Lease()))
	select {}
}

// semaphore: etcd's Go packages have none; built from its primitives the way
// concurrency.Mutex is: a key <name>/<lease> on the session's lease, and the holder is
// among the first `permits` keys by create revision; else wait for a delete under the
// prefix and look again.
type semaphore struct {
	s       *concurrency.Session
	pfx     string
	permits int64
	key     string
}

func (m *semaphore) acquire(ctx context.Context) error {
	c := m.s.Client()
	m.key = fmt.Sprintf("%s%x", m.pfx, m.s.Lease())
	put, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, "", clientv3.WithLease(m.s.Lease()))).
		Else(clientv3.OpGet(m.key)).Commit()
	if err != nil {
		return err
	}
	myRev := put.Header.Revision
	if !put.Succeeded {
		myRev = put.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	for {
		// (not WithCountOnly: etcd counts before the create-revision filter)
		ahead, err := c.Get(ctx, m.pfx, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(myRev-1), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		if int64(len(ahead.Kvs)) < m.permits {
			return nil
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := c.Watch(wctx, m.pfx, clientv3.WithPrefix(), clientv3.WithRev(ahead.Header.Revision+1), clientv3.WithFilterPut())
		for resp := range wch {
			if len(resp.Events) > 0 || resp.Err() != nil {
				break
			}
		}
		cancel()
	}
}

func (m *semaphore) release(ctx context.Context) error {
	_, err := m.s.Client().Delete(ctx, m.key)
	return err
}

// s1: 12 workers, each its own client and session, 50 cycles each on a 3-permit semaphore
// (above); inside, a counter in etcd is raised and lowered by compare-and-swap: raising it
// above 3 is refused and counted. ok = never refused, the counter back at 0, no key left.
func s1(endpoints []string, name string) {
	ctx := context.Background()
	inside := name + "-inside"
	type worker struct {
		c *clientv3.Client
		s *concurrency.Session
	}
	ws := make([]worker, 12)
	for i := range ws {
		c := connect(endpoints)
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			fail(err)
		}
		ws[i] = worker{c, s}
	}
	var over, most int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range ws {
		wg.Add(1)
		go func(w worker) {
			defer wg.Done()
			m := &semaphore{s: w.s, pfx: name + "/", permits: 3}
			for n := 0; n < 50; n++ {
				if err := m.acquire(ctx); err != nil {
					fail(err)
				}
				if err := update(w.c, inside, func(s string) (string, bool) {
					k, _ := strconv.Atoi(s)
					for {
						cur := atomic.LoadInt64(&most)
						if int64(k+1) <= cur || atomic.CompareAndSwapInt64(&most, cur, int64(k+1)) {
							break
						}
					}
					return strconv.Itoa(k + 1), k+1 <= 3
				}); err != nil {
					atomic.AddInt64(&over, 1)
				} else if err := update(w.c, inside, func(s string) (string, bool) {
					k, _ := strconv.Atoi(s)
					return strconv.Itoa(k - 1), k > 0
				}); err != nil {
					atomic.AddInt64(&over, 1)
				}
				if err := m.release(ctx); err != nil {
					fail(err)
				}
			}
		}(w)
	}
	wg.Wait()
	rate := 600 / time.Since(start).Seconds()
	c := ws[0].c
	left, err := c.Get(ctx, name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		fail(err)
	}
	end, err := c.Get(ctx, inside)
	if err != nil {
		fail(err)
	}
	for _, w := range ws {
		w.s.Close()
	}
	ok := over == 0 && left.Count == 0 && len(end.Kvs) == 1 && string(end.Kvs[0].Value) == "0"
	emit(map[string]interface{}{"side": "go-etcd-concurrency", "lang": "go", "workload": "S1", "value": rate, "unit": "acquisitions/s",
		"ok": ok, "most_inside": most, "note": "built from concurrency.Session (Go has no semaphore)"})
}

// f1: puts and concurrency.Mutex cycles (a session of TTL 3 s) in loops on a client of all
// members; prints `ready`, then reads `fault` (a member was SIGSTOPped) and `end` on stdin.
// p99 of the ops in flight at the fault or started in its first 2 s, and of those started in its 2-10 s.
func f1(endpoints []string, name string) {
	ctx := context.Background()
	c := connect(endpoints)
	s, err := concurrency.NewSession(c, concurrency.WithTTL(3))
	if err != nil {
		fail(err)
	}
	var stop int32
	type sample struct {
		t0     time.Time
		ms     float64
		failed bool
	}
	loop := func(op func(i int) error) chan []sample {
		out := make(chan []sample, 1)
		go func() {
			var v []sample
			for i := 0; atomic.LoadInt32(&stop) == 0; i++ {
				t0 := time.Now()
				err := op(i)
				v = append(v, sample{t0, float64(time.Since(t0).Nanoseconds()) / 1e6, err != nil})
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
			out <- v
		}()
		return out
	}
	lost := 0
	puts := loop(func(i int) error {
		_, err := c.Put(ctx, name+"/put", strconv.Itoa(i))
		return err
	})
	locks := loop(func(i int) error {
		select {
		case <-s.Done():
			lost++
			ns, err := concurrency.NewSession(c, concurrency.WithTTL(3))
			if err != nil {
				return err
			}
			s = ns
		default:
		}
		m := concurrency.NewMutex(s, name+"/lock")
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := m.Lock(lctx); err != nil {
			return err
		}
		_, err := c.Put(ctx, name+"/lock-value", strconv.Itoa(i))
		m.Unlock(ctx)
		return err
	})
	fmt.Println("ready")
	var fault time.Time
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "fault" {
			fault = time.Now()
		}
		if strings.TrimSpace(in.Text()) == "end" {
			break
		}
	}
	atomic.StoreInt32(&stop, 1)
	ps, ls := <-puts, <-locks
	select {
	case <-s.Done():
		lost++
	default:
	}
	s.Close()
	if fault.IsZero() {
		fail("no `fault` line on stdin")
	}
	phase := func(v []sample, from, to float64) (interface{}, int, int) {
		var lat []float64
		errs := 0
		for _, x := range v {
			// In the phase: started in it, or (the first) still running when the fault began.
			since := x.t0.Sub(fault).Seconds()
			if since < to && (since >= from || (from == 0 && since+x.ms/1e3 >= 0)) {
				lat = append(lat, x.ms)
				if x.failed {
					errs++
				}
			}
		}
		if len(lat) == 0 {
			return nil, 0, errs // no op in this phase: null
		}
		sort.Float64s(lat)
		return lat[int(float64(len(lat)-1)*0.99+0.5)], len(lat), errs
	}
	p1, n1, e1 := phase(ps, 0, 2)
	p2, n2, e2 := phase(ps, 2, 10)
	l1, m1, f1 := phase(ls, 0, 2)
	l2, m2, f2 := phase(ls, 2, 10)
	emit(map[string]interface{}{"side": "go-etcd-concurrency", "lang": "go", "workload": "F1", "value": p1, "unit": "ms p99",
		"after_p99_ms": p2, "lock_p99_ms": l1, "lock_after_p99_ms": l2, "ops": n1 + n2, "lock_cycles": m1 + m2,
		"errors": e1 + e2 + f1 + f2, "sessions_lost": lost, "ok": lost == 0 && n1+n2 > 0 && m1+m2 > 0})
}
