#!/usr/bin/env python3
"""The two libtorrent 2.1 peers of the BEP 55 interop test (issue 15 class (c),
tests/tests/interop.rs `holepunch_through_a_libtorrent_relay_{mio,tokio}`).

--role relay: a public session (DHT on) in the torrent's swarm, built without libtorrent's default plugins, so it has no ut_metadata (it cannot hand
out the info dict itself) and gets only ut_pex back (add_extension): it tells its
peers about the target and, like every libtorrent >= 1.2, offers ut_holepunch.
It announces the torrent to the DHT every few seconds.

--role target: a session behind a NAT, TCP off both ways (uTP only, on its
listen socket), DHT off, with the same torrent, that keeps connecting out to
the relay (connect_peer), so the relay sees it at the NAT's mapping of its uTP
socket.

Both build the same single-file torrent (deterministic content) and hold none
of its data (libtorrent drops connections between two seeds or upload-only
peers; two peers that still download stay connected); the target has the info
dict, which is all a metadata fetch wants. Prints
{"event":"ready","infohash":...} on stdout, then every 2 s a {"event":"peers",
"peers":[...]} line with the peers it is connected to; runs until stdin closes
or --max-secs.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swarm import settings  # noqa: E402


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(*a):
    print("holepunch_peer:", *a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["relay", "target"], required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--port", type=int, default=6881)
    ap.add_argument("--relay", help="ip:port of the relay (target only)")
    ap.add_argument("--max-secs", type=float, default=120)
    a = ap.parse_args()

    wd = tempfile.mkdtemp(prefix=f"magnetar-hp-{a.role}-")
    data = hashlib.sha256(b"holepunch").digest() * (1 << 16)
    with open(os.path.join(wd, "punched.bin"), "wb") as f:
        f.write(data)
    plen = 16384
    pieces = b"".join(hashlib.sha1(data[i:i + plen]).digest() for i in range(0, len(data), plen))
    info = b"d6:lengthi%de4:name11:punched.bin12:piece lengthi%de6:pieces%d:%se" % (
        len(data), plen, len(pieces), pieces)
    ti = lt.torrent_info(b"d4:info" + info + b"e")

    s = settings(a.ip, a.port)
    s["alert_mask"] = (lt.alert.category_t.error_notification
                       | lt.alert.category_t.peer_notification
                       | lt.alert.category_t.connect_notification)
    if a.role == "relay":
        # No default plugins: no ut_metadata (and no smart_ban); ut_pex back.
        ses = lt.session(s, 0)
        ses.add_extension("ut_pex")
    else:
        s.update({
            "enable_dht": False,
            "enable_outgoing_tcp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_utp": True,
            "enable_incoming_utp": True,
        })
        ses = lt.session(s)
    p = lt.add_torrent_params()
    p.ti = ti
    # Neither holds any of the data: libtorrent drops connections between two
    # seeds or upload-only peers, and two peers that both still download stay
    # connected. The target has the metadata (the info dict), which is what a
    # metadata fetch wants.
    os.remove(os.path.join(wd, "punched.bin"))
    p.save_path = wd
    p.flags = 0
    h = ses.add_torrent(p)
    emit({"event": "ready", "infohash": str(ti.info_hashes().v1), "role": a.role})

    stop = threading.Event()

    def read_stdin():
        for _ in sys.stdin:
            pass
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    start = time.time()
    next_tick = 0
    while not stop.is_set() and time.time() - start < a.max_secs:
        now = time.time()
        if now >= next_tick:
            next_tick = now + 2
            if a.role == "relay":
                h.force_dht_announce()
            elif a.relay:
                ip, port = a.relay.rsplit(":", 1)
                if not any(str(pi.ip[0]) == ip for pi in h.get_peer_info()):
                    h.connect_peer((ip, int(port)))
            peers = [{"ip": f"{pi.ip[0]}:{pi.ip[1]}", "client": pi.client.decode("utf-8", "replace") if isinstance(pi.client, bytes) else pi.client,
                      "flags": int(pi.flags),
                      "incoming": not bool(pi.flags & lt.peer_info.local_connection),
                      "seed": bool(pi.flags & lt.peer_info.seed)}
                     for pi in h.get_peer_info()]
            emit({"event": "peers", "secs": round(now - start, 1), "peers": peers})
        for al in ses.pop_alerts():
            log(a.role, type(al).__name__, al.message())
        time.sleep(0.1)


if __name__ == "__main__":
    main()
