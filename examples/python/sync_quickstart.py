"""The quick start on the blocking face (etcd_recipes.sync): no asyncio, threads welcome."""

import os
import threading

from etcd_recipes import sync

endpoints = os.environ.get("ETCD_ENDPOINTS", "127.0.0.1:2379").split(",")
namespace = os.environ.get("ETCD_NAMESPACE", "") + "sync-quickstart/"

with sync.Client.connect(endpoints, namespace=namespace) as client:
    # One client, one Lock object, many threads: `with lock` excludes them from each other.
    lock = client.lock("jobs/report", ttl=10, timeout=30)
    client.put("visits", "0")

    def visit() -> None:
        for _ in range(5):
            with lock as guard:  # blocks this thread only; other threads run meanwhile
                n = int(client.get_string("visits") or "0")
                guard.put("visits", str(n + 1))  # fenced: refused once the lock is lost

    threads = [threading.Thread(target=visit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("visits:", client.get_string("visits"))

    # Every call that can wait takes a timeout; giving up raises the asyncio face's errors.
    with client.lock("jobs/report").acquire():
        try:
            client.lock("jobs/report").acquire(timeout=0.2)
        except sync.LockTimeoutError as e:
            print("busy:", e.code)

    # Iterators instead of async iterators; a watched config view reads locally.
    with client.config("app/", prefix=True) as config, config.changes() as changes:
        client.put("app/feature-x", "on")
        change = changes.next(timeout=10)
        print("changed:", change.key, change.new, "now:", config.get_string("app/feature-x"))
