"""Silent-OT iterations with both parties as threads of one process (as bench.malicious_cost and
the front door's per-connection threads run them): wall and process CPU for n random COTs per
direction.

    nice python -m bench.ferret_threads --cots 15000000

Both parties set up their two engines (LPN set b11, seeded: a benchmark, not a secure session) over
an in-process channel pair, then party 0 runs its sender's and its receiver's ``random_cots(n)``
on a thread while party 1 runs the matching receiver's and sender's on the main thread. Prints
one line: wall seconds, CPU seconds of the process (both threads), 1-minute load.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

from protocols.net.transport import local_channel_pair
from protocols.ot.ferret import setup_pair


def measure(n: int) -> tuple[float, float]:
    """(wall s, process CPU s) of n random COTs in each direction, set-up excluded."""
    c0, c1 = local_channel_pair(timeout=600)
    engines: dict[int, tuple] = {}

    def party(role: int, ch) -> None:  # type: ignore[no-untyped-def]
        engines[role] = setup_pair(ch, role, seeds=(2 * role + 1, 2 * role + 2))

    th = threading.Thread(target=party, args=(0, c0))
    th.start()
    party(1, c1)
    th.join()
    (s0, r0), (s1, r1) = engines[0], engines[1]

    def party0() -> None:
        s0.random_cots(n)  # sender first: its flights never wait for the peer
        r0.random_cots(n)

    w0, p0 = time.perf_counter(), time.process_time()
    th = threading.Thread(target=party0)
    th.start()
    r1.random_cots(n)
    s1.random_cots(n)
    th.join()
    return time.perf_counter() - w0, time.process_time() - p0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cots", type=int, default=15_000_000, help="random COTs per direction")
    args = ap.parse_args(argv)
    wall, cpu = measure(args.cots)
    print(f"wall {wall:.2f} s  cpu {cpu:.2f} s  load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
