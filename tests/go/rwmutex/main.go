// rwmutex drives etcd's own Go recipe.RWMutex (contrib/recipes) for interop tests.
// One JSON object a line on stdout:
//
//	rwmutex [--endpoints a,b] [--ttl SECONDS] [--hold-ms N] read|write <name>
//
// prints {"event":"session","lease":ID}, takes RLock (read) or Lock (write), prints
// {"event":"acquired","mode":"read"|"write","lease":ID,"keys":[...]} (keys: what this
// lease holds under <name>/), holds until stdin closes or says "release" (or for
// --hold-ms), unlocks, prints {"event":"released"}. Errors: {"event":"error",...}, exit 1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

func fail(kind string, err interface{}) {
	emit(map[string]interface{}{"event": "error", "kind": kind, "message": fmt.Sprint(err)})
	os.Exit(1)
}

func main() {
	endpoints := []string{"127.0.0.1:2379"}
	ttl, holdMs := 60, -1
	var args []string
	argv := os.Args[1:]
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "--") {
			args = append(args, a)
			continue
		}
		name, val := a[2:], ""
		if j := strings.IndexByte(name, '='); j >= 0 {
			name, val = name[:j], name[j+1:]
		} else {
			if i+1 >= len(argv) {
				fail("usage", "missing value for --"+name)
			}
			i++
			val = argv[i]
		}
		n, err := strconv.Atoi(val)
		switch {
		case name == "endpoints":
			endpoints = strings.Split(val, ",")
		case name == "ttl" && err == nil:
			ttl = n
		case name == "hold-ms" && err == nil:
			holdMs = n
		default:
			fail("usage", "bad flag --"+name+" "+val)
		}
	}
	if len(args) != 2 || (args[0] != "read" && args[0] != "write") {
		fail("usage", "usage: rwmutex [--endpoints a,b] [--ttl s] [--hold-ms n] read|write <name>")
	}
	mode, name := args[0], args[1]
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		fail("connect", err)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(ttl))
	if err != nil {
		fail("session", err)
	}
	lease := int64(s.Lease())
	emit(map[string]interface{}{"event": "session", "lease": lease})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	m := recipe.NewRWMutex(s, name)
	if mode == "read" {
		err = m.RLock()
	} else {
		err = m.Lock()
	}
	if err != nil {
		fail("lock", err)
	}
	var keys []string
	if r, err := c.Get(context.Background(), name+"/", clientv3.WithPrefix()); err == nil {
		for _, kv := range r.Kvs {
			if kv.Lease == lease {
				keys = append(keys, string(kv.Key))
			}
		}
	}
	emit(map[string]interface{}{"event": "acquired", "mode": mode, "lease": lease, "keys": keys})
	var timer <-chan time.Time
	if holdMs >= 0 {
		timer = time.After(time.Duration(holdMs) * time.Millisecond)
	}
wait:
	for {
		select {
		case <-timer:
			break wait
		case <-s.Done():
			emit(map[string]interface{}{"event": "lost", "lease": lease})
			os.Exit(3)
		case l, ok := <-lines:
			if !ok || l == "release" {
				break wait
			}
		}
	}
	if mode == "read" {
		err = m.RUnlock()
	} else {
		err = m.Unlock()
	}
	if err != nil {
		fail("unlock", err)
	}
	emit(map[string]interface{}{"event": "released"})
	s.Close()
}
