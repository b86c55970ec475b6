#!/usr/bin/env python3
"""One libtorrent 2.1 session on 127.0.0.1 that speaks only uTP, seeding one
small torrent, for tests/tests/utp_interop.rs.

TCP is off both ways, and DHT, LSD, UPnP and NAT-PMP are off, so the session
sends nothing but answers to the test's uTP packets on loopback. Prints one line
of JSON on stdout, {"port": N, "infohash": "<hex>"}, when it listens, then runs
until stdin closes (or --max-secs). The stdin line "connect IP:PORT" makes it
open a (uTP) connection to that peer for the torrent. Diagnostics go to stderr.
"""
import argparse
import hashlib
import json
import os
import select
import sys
import tempfile
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-secs", type=float, default=60)
    a = ap.parse_args()
    wd = tempfile.mkdtemp(prefix="magnetar-utp-")
    data = bytes(i * 7 % 251 for i in range(40000))
    with open(os.path.join(wd, "utp.bin"), "wb") as f:
        f.write(data)
    plen = 16384
    pieces = b"".join(hashlib.sha1(data[i:i + plen]).digest() for i in range(0, len(data), plen))
    info = b"d6:lengthi%de4:name7:utp.bin12:piece lengthi%de6:pieces%d:%se" % (
        len(data), plen, len(pieces), pieces)
    ti = lt.torrent_info(b"d4:info" + info + b"e")
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_outgoing_tcp": False,
        "enable_incoming_tcp": False,
        "enable_outgoing_utp": True,
        "enable_incoming_utp": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # Plaintext outgoing connections (MSE is a separate issue).
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.connect_notification,
    })
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = wd
    p.flags = lt.torrent_flags.seed_mode
    h = s.add_torrent(p)
    deadline = time.time() + 10
    while s.listen_port() == 0 and time.time() < deadline:
        time.sleep(0.05)
    print(json.dumps({"port": s.listen_port(), "infohash": ti.info_hashes().v1.to_bytes().hex()}), flush=True)
    end = time.time() + a.max_secs
    while time.time() < end:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        for al in s.pop_alerts():
            print("utp_peer:", al.message(), file=sys.stderr, flush=True)
        if r:
            line = sys.stdin.readline()
            if not line:
                break
            cmd = line.split()
            if len(cmd) == 2 and cmd[0] == "connect":
                ip, port = cmd[1].rsplit(":", 1)
                h.connect_peer((ip, int(port)))


if __name__ == "__main__":
    main()
