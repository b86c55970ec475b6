"""How many torrents of the completeness swarm are out of a polite crawler's reach.

A model of `magnetar_stores_every_torrent_of_a_swarm_at_steady_state` (see README.md,
"Completeness"): 21 random node ids (the crawler's first), 100 random infohashes,
each stored at its K closest nodes; each node's BEP 51 sample is libtorrent 2.1's
(`refresh_infohashes_sample`: 20 of what it holds, picked in key order with its
slight bias towards the first keys), frozen once taken; the crawler hears a torrent
if it is among the REACH closest nodes (its seeder's lookups come to it) or if a
sample holds it.

    python3 tests/interop/reach_model.py [runs] [seed]
"""
import random
import sys


def lt_sample(keys, k=20):
    keys = sorted(keys)
    if len(keys) <= k:
        return set(keys)
    out, to_pick, c = set(), k, len(keys)
    for key in keys:
        if to_pick == 0:
            break
        r = random.randint(0, c)
        c -= 1
        if r > to_pick:
            continue
        out.add(key)
        to_pick -= 1
    return out


def run(k, reach):
    ids = [random.getrandbits(160) for _ in range(21)]
    ihs = [random.getrandbits(160) for _ in range(100)]
    store = {i: [] for i in range(21)}
    heard = set()
    for x in ihs:
        near = sorted(range(21), key=lambda i: ids[i] ^ x)
        for i in near[:k]:
            store[i].append(x)
        if 0 in near[:reach]:
            heard.add(x)
    for i in range(1, 21):
        heard |= lt_sample(store[i])
    return sum(1 for x in ihs if x not in heard)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for k, reach in ((8, 8), (10, 8), (10, 10)):
        r = [run(k, reach) for _ in range(runs)]
        print(
            f"holders {k}, crawler reached at the {reach} closest: "
            f"unheard per run {sum(r) / runs:.2f}, runs with one or more "
            f"{sum(1 for x in r if x) / runs:.0%}, most {max(r)}"
        )


if __name__ == "__main__":
    main()
