"""Which get_peers queries of libtorrent carry BEP 33 `noseed=1`?

A stand-in DHT node on loopback (127.0.0.91:47101, a UDP socket that answers every
query with an empty `nodes` and a token) is the only DHT node of two libtorrent
sessions: S (127.0.0.92) seeds one torrent, L (127.0.0.93) adds the same torrent by
magnet link (a leecher). For 20 s the node records every get_peers it gets: whose
it is, whether it names the torrent, and its `noseed` and `scrape` flags.

libtorrent 2.1 sets `noseed=1` only in the seeder's lookups of its torrent; its
table refreshes and bootstrap lookups (random or own-id targets) and the leecher's
lookups carry no flag. So a get_peers with `noseed=1` is a seeder's, and names a
torrent.

    python3 -W ignore tests/interop/noseed_probe.py
"""
import hashlib
import os
import socket
import tempfile
import time
from collections import Counter

import libtorrent as lt

NODE = ("127.0.0.91", 47101)


def bdecode(b, i=0):
    c = b[i : i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1 : j]), j + 1
    if c == b"l":
        i, out = i + 1, []
        while b[i : i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while b[i : i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1 : j + 1 + n], j + 1 + n


def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    return b"d" + b"".join(benc(k) + benc(v) for k, v in sorted(x.items())) + b"e"


def settings(ip, port):
    return {
        "listen_interfaces": f"{ip}:{port}",
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_enforce_node_id": False,
        "dht_announce_interval": 5,
    }


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(NODE)
    sock.settimeout(0.2)
    own = os.urandom(20)
    work = tempfile.mkdtemp()
    data = os.path.join(work, "probe.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(40000))
    fs = lt.file_storage()
    lt.add_files(fs, data)
    ct = lt.create_torrent(fs)
    lt.set_piece_hashes(ct, work)
    ti = lt.torrent_info(ct.generate())
    # libtorrent 2.1 makes hybrid torrents: it looks up the v1 infohash and the
    # v2 one truncated to 20 bytes.
    hashes = ti.info_hashes()
    ih = hashes.v1.to_bytes()
    names = {ih: "torrent (v1)", hashes.v2.to_bytes()[:20]: "torrent (v2)"}

    seeder = lt.session(settings("127.0.0.92", 47102))
    leecher = lt.session(settings("127.0.0.93", 47103))
    for s in (seeder, leecher):
        s.add_dht_node(NODE)
    p = lt.add_torrent_params()
    p.ti, p.save_path, p.flags = ti, work, lt.torrent_flags.seed_mode
    seeder.add_torrent(p).force_dht_announce()
    m = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + ih.hex())
    m.save_path = os.path.join(work, "leech")
    leecher.add_torrent(m).force_dht_announce()
    who = {"127.0.0.92": "seeder", "127.0.0.93": "leecher"}

    seen = Counter()
    end = time.time() + 20
    while time.time() < end:
        try:
            pkt, addr = sock.recvfrom(2048)
        except socket.timeout:
            continue
        try:
            msg, _ = bdecode(pkt)
        except (ValueError, IndexError):
            continue
        if msg.get(b"y") != b"q":
            continue
        a = msg.get(b"a", {})
        q = msg.get(b"q")
        r = {b"id": own}
        if q in (b"find_node", b"get_peers"):
            r[b"nodes"] = b""
        if q == b"get_peers":
            r[b"token"] = b"tk"
            target = names.get(a.get(b"info_hash"), "other id")
            flags = ",".join(k.decode() for k in (b"noseed", b"scrape") if a.get(k)) or "-"
            seen[(who.get(addr[0], addr[0]), target, flags)] += 1
        sock.sendto(benc({b"t": msg.get(b"t", b""), b"y": b"r", b"r": r}), addr)

    for (w, target, flags), n in sorted(seen.items()):
        print(f"{w:8} get_peers for {target:12} flags {flags:7} x{n}")


if __name__ == "__main__":
    main()
