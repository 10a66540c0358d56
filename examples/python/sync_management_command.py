"""A Django-style management command on the blocking face (etcd_recipes.sync).

The shape of ``yourapp/management/commands/rebuild_index.py`` (Django is not imported:
``BaseCommand`` below stands in for ``django.core.management.base.BaseCommand``, with the
same ``help`` / ``add_arguments`` / ``handle`` contract). It uses three recipes:

* config: the batch size comes from a watched config key, read locally;
* a lock: when cron starts the command on several hosts at once, one rebuilds and the
  others give up after ``--wait`` seconds (``LockTimeoutError``), instead of all rebuilding;
* a leader loop (``--scheduler``): a long-running ``manage.py rebuild_index --scheduler``
  on every host, of which one (the leader) runs the periodic work; its work function is
  blocking and returns when its ``cancelled`` event is set (leadership lost, Ctrl-C).

    python sync_management_command.py                 # the demo: both modes, two hosts
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from _common import connect_sync
from etcd_recipes import sync

APP = "demo-manage"


class BaseCommand:
    """Stands in for django.core.management.base.BaseCommand (the part this example uses)."""

    help = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def handle(self, *args: Any, **options: Any) -> str | None:
        raise NotImplementedError

    def run_from_argv(self, argv: list[str]) -> str | None:
        parser = argparse.ArgumentParser(description=self.help)
        self.add_arguments(parser)
        return self.handle(**vars(parser.parse_args(argv)))


class Command(BaseCommand):
    help = "Rebuild the search index (one host at a time), or run the rebuild scheduler."

    def __init__(self, client: sync.Client, host: str) -> None:
        # In Django: a module-level client made once per process (e.g. in AppConfig.ready()).
        self.client = client
        self.host = host

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--wait", type=float, default=0.5, help="seconds to wait for another host's rebuild")
        parser.add_argument("--scheduler", action="store_true", help="run the periodic rebuild while leader")
        parser.add_argument("--rounds", type=int, default=3, help="scheduler: rebuilds per term (demo)")

    def handle(self, *args: Any, **options: Any) -> str | None:
        with self.client.config(f"{APP}/batch-size") as config:
            batch = int(config.get_json() or 100)
            if options["scheduler"]:
                return self.schedule(batch, options["rounds"])
            return self.rebuild_once(batch, options["wait"])

    def rebuild_once(self, batch: int, wait: float) -> str:
        try:
            with self.client.lock(f"{APP}/rebuild", ttl=10, timeout=wait) as guard:
                # Fenced: if we lost the lock (a long pause, a partition), the write is refused.
                guard.put(f"{APP}/index/built-by", self.host)
                return f"{self.host} rebuilt the index in batches of {batch} (fencing token {guard.fencing_token})"
        except sync.LockTimeoutError:
            return f"{self.host}: another host is rebuilding; giving up after {wait:g} s"

    def schedule(self, batch: int, rounds: int) -> str:
        done: list[int] = []

        def work(leadership: sync.Leadership, cancelled: threading.Event) -> None:
            # Runs in a thread of its own while we lead; return when `cancelled` is set.
            for _ in range(rounds):
                if cancelled.is_set():
                    return
                leadership.put(f"{APP}/index/scheduled-by", self.host)  # fenced to this term
                done.append(leadership.fencing_token)
                cancelled.wait(0.05)  # the period; wakes at once on cancellation

        with self.client.leader_loop(f"{APP}/scheduler", self.host, ttl=5, requeue=False) as loop:
            loop.run(work, timeout=60.0)  # until the work returns (requeue=False: one term)
        return f"{self.host} led one term and scheduled {len(done)} rebuilds in batches of {batch}"


def main() -> None:
    with connect_sync() as client:
        client.put(f"{APP}/batch-size", "250")
        # Two hosts started by cron at the same moment: one rebuilds, the other gives up.
        holder = client.lock(f"{APP}/rebuild", ttl=10).acquire()  # host-a's rebuild, in progress
        print(Command(client, "host-b").run_from_argv(["--wait", "0.3"]))
        holder.release()
        print(Command(client, "host-a").run_from_argv([]))
        print(Command(client, "host-a").run_from_argv(["--scheduler", "--rounds", "3"]))
        print(f"index built by {client.get_string(f'{APP}/index/built-by')}, "
              f"scheduled by {client.get_string(f'{APP}/index/scheduled-by')}")


if __name__ == "__main__":
    main()
