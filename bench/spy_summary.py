"""Summarise a `py-spy record --native --threads --format raw` file: samples per thread,
and for the main (asyncio) thread the busiest places, each as the innermost Python frame
and the native calls under it. See crossing.py for the command that records one.

    python bench/spy_summary.py /tmp/k3.txt [TOP]
"""

from __future__ import annotations

import collections
import sys


def main() -> None:
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    threads: collections.Counter[str] = collections.Counter()
    places: collections.Counter[str] = collections.Counter()
    for line in open(path):
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        threads[frames[0].split(":")[-1].strip() or frames[0]] += int(n)
        if "MainThread" not in frames[0]:
            continue
        if frames[-1].startswith("epoll_wait"):
            places["(idle: the loop waits in epoll_wait)"] += int(n)
            continue
        py = [i for i, f in enumerate(frames) if ".py:" in f]
        at = py[-1] if py else 0
        native = " > ".join(f.split(" (")[0].split("::h")[0][-48:] for f in frames[at + 1:at + 4])
        places[f"{frames[at]}{' > ' + native if native else ''}"] += int(n)
    total = sum(places.values())
    print(f"samples per thread: {dict(threads.most_common())}")
    print(f"main thread, {total} samples:")
    for place, n in places.most_common(top):
        print(f"{n / total:6.1%}  {place}")


if __name__ == "__main__":
    main()
