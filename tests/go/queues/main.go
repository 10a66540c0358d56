// Command queues drives etcd's Go contrib/recipes Barrier, DoubleBarrier, Queue and
// PriorityQueue for the interop tests in core/tests/queue.rs and core/tests/barrier.rs.
//
//	queues <endpoints> queue-enqueue <prefix> <value>...
//	queues <endpoints> queue-dequeue <prefix> <n>          prints one value per line
//	queues <endpoints> pq-enqueue <key> <priority>:<value>...
//	queues <endpoints> pq-dequeue <key> <n>                prints one value per line
//	queues <endpoints> barrier-hold <key>
//	queues <endpoints> barrier-release <key>
//	queues <endpoints> barrier-wait <key>                  prints "waiting", then "released"
//	queues <endpoints> double-barrier <key> <count> <ttl>  prints "entering", "entered";
//	                                                       reads a line, prints "leaving", "left"
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o queues .
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: queues <endpoints> <command> <args>...")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(os.Args[1], ","),
		DialTimeout: 5 * time.Second,
	})
	check(err, "connect")
	defer cli.Close()
	cmd, args := os.Args[2], os.Args[3:]
	switch cmd {
	case "queue-enqueue":
		q := recipe.NewQueue(cli, args[0])
		for _, v := range args[1:] {
			check(q.Enqueue(v), "enqueue")
		}
	case "queue-dequeue":
		q := recipe.NewQueue(cli, args[0])
		n, _ := strconv.Atoi(args[1])
		for i := 0; i < n; i++ {
			v, err := q.Dequeue()
			check(err, "dequeue")
			fmt.Println(v)
		}
	case "pq-enqueue":
		q := recipe.NewPriorityQueue(cli, args[0])
		for _, pv := range args[1:] {
			parts := strings.SplitN(pv, ":", 2)
			pr, err := strconv.Atoi(parts[0])
			check(err, "priority")
			check(q.Enqueue(parts[1], uint16(pr)), "enqueue")
		}
	case "pq-dequeue":
		q := recipe.NewPriorityQueue(cli, args[0])
		n, _ := strconv.Atoi(args[1])
		for i := 0; i < n; i++ {
			v, err := q.Dequeue()
			check(err, "dequeue")
			fmt.Println(v)
		}
	case "barrier-hold":
		check(recipe.NewBarrier(cli, args[0]).Hold(), "hold")
	case "barrier-release":
		check(recipe.NewBarrier(cli, args[0]).Release(), "release")
	case "barrier-wait":
		fmt.Println("waiting")
		check(recipe.NewBarrier(cli, args[0]).Wait(), "wait")
		fmt.Println("released")
	case "double-barrier":
		count, _ := strconv.Atoi(args[1])
		ttl, _ := strconv.Atoi(args[2])
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
		check(err, "session")
		defer s.Close()
		b := recipe.NewDoubleBarrier(s, args[0], count)
		fmt.Println("entering")
		check(b.Enter(), "enter")
		fmt.Println("entered")
		bufio.NewReader(os.Stdin).ReadString('\n')
		fmt.Println("leaving")
		check(b.Leave(), "leave")
		fmt.Println("left")
	default:
		fail("unknown command %q", cmd)
	}
}
