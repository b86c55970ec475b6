#!/usr/bin/env python3
"""Torrents that only a tracker knows, for magnetar's tracker interop test.

Run inside a network namespace that has only `lo` (tests/tests/trackers.rs makes
one, and starts a real tracker, Debian's opentracker, in it).

  * seeders: libtorrent sessions with the DHT OFF that seed the torrents and
    announce them to --tracker only;
  * a DHT: libtorrent sessions with the DHT on and no torrents, which also know the
    crawlers (--crawler, any number);
  * queriers (--queriers, two by default, on their own addresses): DHT sessions
    that repeatedly look the infohashes up with plain get_peers (`dht_get_peers`,
    no announce), as magnet clients would: that is how the crawlers learn the
    infohashes; a DHT peer search finds nobody for them. Two, because a crawler
    asks trackers only about an infohash with evidence of being a torrent, and
    get_peers from a single address is no evidence (random lookup targets look
    just like that).

Protocol with the test (line based, JSON on stdout, commands on stdin):
  stdout {"event":"torrents","torrents":[...]} first (the test whitelists them in
         the tracker and starts it), then waits for "go" on stdin;
  stdout {"event":"ready","nodes":[...],"seeders":[...]} once every seeder's
         announce was answered by the tracker and the DHT has formed.
  EOF on stdin, or --max-secs elapsed, ends it. Diagnostics go to stderr.
"""
import argparse
import json
import os
import sys
import threading
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swarm import emit, log, make_torrent, settings  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tracker", required=True, help="URL the seeders announce to")
    ap.add_argument("--crawler", action="append", default=[], help="ip:port of a crawler")
    ap.add_argument("--torrents", type=int, default=3)
    # Few DHT nodes: with the crawlers, at most 8 in all, so that every get_peers
    # lookup (k = 8) reaches every crawler.
    ap.add_argument("--dht-nodes", type=int, default=2)
    ap.add_argument("--queriers", type=int, default=2)
    ap.add_argument("--port", type=int, default=6881)
    ap.add_argument("--max-secs", type=float, default=300)
    ap.add_argument("--tag", default=str(os.getpid()))
    a = ap.parse_args()
    t_start = time.time()
    tag = a.tag.encode()
    root = os.path.join(a.workdir, "payload")
    torrents = [
        make_torrent(root, f"tracker-only-{i:02d}-{a.tag}.bin", None, tag=tag)
        for i in range(a.torrents)
    ]
    emit({"event": "torrents",
          "torrents": [{k: v for k, v in t.items() if k not in ("ti", "raw")} for t in torrents]})
    if sys.stdin.readline().strip() != "go":
        log("no go; stopping")
        return

    mask = (lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification)
    seeders = []
    for i in range(2):
        s = settings(f"127.0.0.{20 + i}", a.port)
        s["enable_dht"] = False
        s["alert_mask"] = mask
        seeders.append(lt.session(s))
    handles = []
    for si, s in enumerate(seeders):
        for t in torrents:
            p = lt.add_torrent_params()
            p.ti = t["ti"]
            p.save_path = root
            p.flags = lt.torrent_flags.seed_mode
            p.trackers = [a.tracker]
            handles.append(s.add_torrent(p))
            t.setdefault("seeders", []).append(f"127.0.0.{20 + si}:{a.port}")
    # Until the tracker answered every seeder's announce.
    want = len(handles)
    replied = set()
    deadline = time.time() + 60
    next_force = 0
    while len(replied) < want:
        if time.time() > deadline:
            log("tracker announces missing:", want - len(replied))
            sys.exit(3)
        if time.time() > next_force:
            for h in handles:
                h.force_reannounce()
            next_force = time.time() + 5
        time.sleep(0.1)
        for si, s in enumerate(seeders):
            for al in s.pop_alerts():
                if isinstance(al, lt.tracker_reply_alert):
                    replied.add((si, str(al.handle.info_hashes().v1)))
                elif al.category() & lt.alert.category_t.error_notification:
                    log("seed alert:", al.message())
    log("tracker announces answered after", round(time.time() - t_start, 2), "s")

    dht = [(f"127.0.0.{10 + i}", a.port) for i in range(a.dht_nodes)]
    crawlers = [(c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) for c in a.crawler]
    nodes = [lt.session(settings(ip, port)) for ip, port in dht]
    queriers = [lt.session(settings(f"127.0.0.{30 + i}", a.port)) for i in range(a.queriers)]

    def link_all():
        for s in nodes + queriers:
            for n in dht + crawlers:
                s.add_dht_node(n)

    link_all()
    deadline = time.time() + 60
    while True:
        for s in nodes + queriers:
            s.post_dht_stats()
        time.sleep(0.2)
        live = []
        for s in nodes + queriers:
            n = 0
            for al in s.pop_alerts():
                if isinstance(al, lt.dht_stats_alert):
                    n = sum(b["num_nodes"] for b in al.routing_table)
            live.append(n)
        if all(n >= min(2, a.dht_nodes) for n in live):
            break
        if time.time() > deadline:
            log("DHT did not form:", live)
            sys.exit(3)
        link_all()
    emit({"event": "ready", "nodes": [f"{ip}:{port}" for ip, port in dht],
          "torrents": [{"infohash": t["infohash"], "seeders": t["seeders"]} for t in torrents]})

    stop = threading.Event()

    def read_stdin():
        for _ in sys.stdin:
            pass
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    # The queriers look every infohash up again every few seconds (as magnet
    # clients retry); the DHT keeps answering that nobody has it.
    while not stop.is_set() and time.time() - t_start < a.max_secs:
        link_all()
        for t in torrents:
            for q in queriers:
                q.dht_get_peers(lt.sha1_hash(bytes.fromhex(t["infohash"])))
        end = time.time() + 3
        while time.time() < end and not stop.is_set():
            time.sleep(0.1)
            for s in nodes + queriers + seeders:
                for al in s.pop_alerts():
                    if isinstance(al, lt.dht_get_peers_reply_alert) and al.num_peers() > 0:
                        log("the DHT knows peers of", al.info_hash, "(the test assumes not)")
                    elif al.category() & lt.alert.category_t.error_notification:
                        log("alert:", al.message())
    log("done after", round(time.time() - t_start, 2), "s")


if __name__ == "__main__":
    main()
