"""A Celery-style worker on the blocking face (etcd_recipes.sync), using the work queue.

Celery is not imported: ``TaskApp`` below shows the shape (``@app.task`` registers a
function, ``fn.delay(...)`` enqueues a call, ``app.worker(concurrency=n)`` consumes), with
etcd's reliable work queue as the broker: at-least-once delivery, each claim held under
the consumer's lease (a worker that dies gives its items back when its lease expires),
``nack`` with a delay to retry, dead letters after ``max_deliveries``.

    python sync_celery_worker.py     # enqueue a few tasks, run 3 worker threads, report

Processes that fork (Celery's default prefork pool, gunicorn ``--preload``): a forked
child gets a runtime of its own at its first call, and clients made before the fork are
closed in the child (``ClosedError``): connect in each child after the fork (Celery's
``worker_process_init`` signal, gunicorn's ``post_fork`` hook). This example consumes with
threads, as Celery's ``--pool threads`` does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec

from _common import connect_sync
from etcd_recipes import sync

P = ParamSpec("P")


class Task(Generic[P]):
    def __init__(self, app: TaskApp, fn: Callable[P, object]) -> None:
        self.app, self.fn, self.name = app, fn, fn.__name__

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call; returns the item id."""
        return self.app.queue.put(json.dumps({"task": self.name, "args": args, "kwargs": kwargs}))


class TaskApp:
    def __init__(self, client: sync.Client, name: str, max_deliveries: int = 3) -> None:
        # One queue object for producers and consumers: each receive() makes its own claim.
        self.queue = client.work_queue(name, ttl=10, max_deliveries=max_deliveries)
        self.tasks: dict[str, Callable[..., object]] = {}
        self.log: list[str] = []
        self._log_lock = threading.Lock()

    def task(self, fn: Callable[P, object]) -> Task[P]:
        self.tasks[fn.__name__] = fn
        return Task(self, fn)

    def say(self, line: str) -> None:
        with self._log_lock:  # one line at a time: print() from threads may interleave
            self.log.append(line)
            print(line, flush=True)

    def worker(self, concurrency: int, idle_timeout: float) -> None:
        """Run `concurrency` consumer threads until the queue stays empty for `idle_timeout` s."""

        def consume(me: str) -> None:
            while True:
                try:
                    item = self.queue.receive(timeout=idle_timeout)
                except sync.LockTimeoutError:
                    return  # idle: the demo ends (a real worker keeps receiving)
                call: dict[str, Any] = item.value_json()
                try:
                    self.tasks[call["task"]](*call["args"], **call["kwargs"])
                except Exception as e:
                    self.say(f"{me}: {call['task']} raised {e!r} (delivery {item.deliveries}); retry")
                    item.nack(delay=0.05)  # back on the queue after a short delay
                else:
                    item.ack()

        threads = [threading.Thread(target=consume, args=(f"worker-{i}",)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main() -> None:
    with connect_sync() as client:
        app = TaskApp(client, "demo-celery")

        @app.task
        def send_email(to: str, subject: str) -> None:
            app.say(f"sent {subject!r} to {to}")

        @app.task
        def resize(image: str, width: int) -> None:
            if image == "broken.png":
                raise ValueError("not an image")
            app.say(f"resized {image} to {width}px")

        send_email.delay("ada@example.com", subject="welcome")
        for image in ["a.png", "b.png", "broken.png"]:
            resize.delay(image, width=256)
        app.worker(concurrency=3, idle_timeout=1.0)
        dead = [(json.loads(d.value_string)["args"][0], d.deliveries) for d in app.queue.dead_letters()]
        print(f"dead letters: {dead}")
        print(f"visible items left: {app.queue.length()}")


if __name__ == "__main__":
    main()
