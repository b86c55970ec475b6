#!/usr/bin/env python3
"""A swarm of libtorrent sessions on loopback for magnetar's interop tests.

Run inside a network namespace that has only `lo` (tests/tests/interop.rs makes one).
Every session listens on its own 127.0.0.x address, runs the DHT among the others
(see README.md for the settings and why), and seeds torrents this script generates:

  * single  - one file
  * multi   - nested directories and Unicode names
  * big     - about 1500 files, an info dict above 64 KiB (several ut_metadata pieces)
  * hybrid  - optional (--hybrid): a BEP 52 hybrid torrent made by libtorrent itself

--encryption POLICY,... sets peer-wire encryption per pair of sessions (sessions 2m
and 2m+1 get the m-th policy, cycling) and then seeds each torrent from one such
pair, so every torrent's seeders share a policy:
  * rc4       - out/in_enc_policy pe_forced, allowed_enc_level pe_rc4
  * plaintext - pe_forced, allowed_enc_level pe_plaintext (MSE, then plaintext)
  * disabled  - pe_disabled (plaintext only)
  * enabled   - libtorrent's default (pe_enabled, pe_both)
Each torrent in "ready" then carries its "encryption".

--per-node N replaces the shapes above with N small single-file torrents per
session, each seeded by that session alone (the completeness tests: 20 sessions x 5).
--cold emits "ready" as soon as the sessions exist, before the DHT has formed or
anything was announced (the crawler, given with --extra-node, joins a swarm that is
starting, as it would join a fresh one); with --stagger S the sessions start
seeding one after another over S seconds; "announced" follows once every
announce landed.

--ip-prefix P puts the sessions at P + octet instead of 127.0.0. + octet (the NAT
test, tests/tests/interop.rs, runs them on a LAN behind a router namespace).

--utp-only switches TCP off both ways in the seeding sessions
(enable_outgoing_tcp / enable_incoming_tcp false): they speak uTP only, on their
DHT socket. The leech ("fetch") keeps both.

Protocol with the test (line based, JSON on stdout, commands on stdin):
  stdout {"event":"ready", "torrents":[...], "nodes":["ip:port",...]}
         once every session has DHT nodes and every torrent was announced
         (with --cold: at once, then {"event":"announced","secs":...}).
  stdin  "fetch\n"  starts a fresh libtorrent session that joins the swarm and adds a
         magnet link (infohash only) for every torrent; each
         {"event":"lt_fetch","infohash":...,"secs":...} reports its time to metadata.
  stdin  "node ip:port\n"  adds that DHT node to every session (again every few s).
  EOF on stdin, or --max-secs elapsed, ends the swarm.
Diagnostics go to stderr.
"""
import argparse
import hashlib
import json
import os
import queue
import threading
import subprocess
import sys
import time

import libtorrent as lt


def log(*a):
    print("swarm:", *a, file=sys.stderr, flush=True)


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, str):
        return benc(x.encode())
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    raise TypeError(x)


def content(path, size):
    """Deterministic file content."""
    seed = hashlib.sha1(path.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha1(seed).digest()
        out += seed
    return bytes(out[:size])


def make_torrent(root, name, files, piece_length=16384, tag=b""):
    """A v1 torrent. `files` is None for a single-file torrent (then `name` is the
    file) or a list of (path components, size). Writes the payload under `root`."""
    if files is None:
        data = content(name, 40000)
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        blob = data
        info = {"name": name, "length": len(data), "piece length": piece_length}
        listing = [(name, len(data))]
    else:
        blob = b""
        flist = []
        listing = []
        for comps, size in files:
            rel = "/".join(comps)
            data = content(name + "/" + rel, size)
            full = os.path.join(root, name, *comps)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
            blob += data
            flist.append({"length": size, "path": list(comps)})
            listing.append((rel, size))
        info = {"name": name, "files": flist, "piece length": piece_length}
    pieces = b"".join(
        hashlib.sha1(blob[i : i + piece_length]).digest() for i in range(0, len(blob), piece_length)
    )
    info["pieces"] = pieces
    if tag:
        info["x-magnetar-run"] = tag  # unique per run: fresh infohashes every run
    raw = benc(info)
    ih = hashlib.sha1(raw).hexdigest()
    ti = lt.torrent_info(benc({"info": info}))
    assert str(ti.info_hashes().v1) == ih, (str(ti.info_hashes().v1), ih)
    return {
        "infohash": ih,
        "name": name,
        "size": len(blob),
        "files": len(listing),
        "info_len": len(raw),
        "ti": ti,
        "raw": raw,
    }


def make_hybrid(root, tag):
    """A BEP 52 hybrid torrent made by libtorrent (pad files included)."""
    name = "hybrid-" + tag.decode()
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    for rel, size in [("a.bin", 20000), ("sub/b.bin", 70000)]:
        with open(os.path.join(d, rel), "wb") as f:
            f.write(content(name + rel, size))
    fs = lt.file_storage()
    lt.add_files(fs, d)
    ct = lt.create_torrent(fs, 16384)
    lt.set_piece_hashes(ct, root)
    e = ct.generate()
    raw = lt.bencode(e[b"info"])
    ti = lt.torrent_info(lt.bencode(e))
    ih = str(ti.info_hashes().v1)
    files = ti.files()
    real = [i for i in range(files.num_files()) if not files.file_flags(i) & lt.file_storage.flag_pad_file]
    return {
        "infohash": ih,
        "v2": str(ti.info_hashes().v2),
        "name": name,
        "size": sum(files.file_size(i) for i in real),
        "files": len(real),
        "files_with_pad": files.num_files(),
        "info_len": len(raw),
        "ti": ti,
    }


ENCRYPTION = {
    "rc4": ("pe_forced", "pe_rc4"),
    "plaintext": ("pe_forced", "pe_plaintext"),
    "disabled": ("pe_disabled", "pe_both"),
    "enabled": ("pe_enabled", "pe_both"),
}


def encryption_settings(name):
    policy, level = ENCRYPTION[name]
    p = getattr(lt.enc_policy, policy)
    lv = getattr(lt.enc_level, level)
    return {
        "out_enc_policy": int(p),
        "in_enc_policy": int(p),
        "allowed_enc_level": int(lv),
        "prefer_rc4": level == "pe_rc4",
    }


def settings(ip, port):
    """Settings that let libtorrent's DHT run among loopback addresses (README.md)."""
    return {
        "listen_interfaces": f"{ip}:{port}",
        "outgoing_interfaces": ip,
        "listen_system_port_fallback": False,
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_block_ratelimit": 1_000_000,
        "dht_upload_rate_limit": 10_000_000,
        "dht_announce_interval": 10,
        "dht_sample_infohashes_interval": 0,
        "dht_max_infohashes_sample_count": 20,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "active_dht_limit": -1,
        "active_tracker_limit": -1,
        "active_lsd_limit": -1,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--first-ip", type=int, default=10, help="last octet of the first session")
    ap.add_argument("--ip-prefix", default="127.0.0.", help="the sessions' addresses are PREFIX + octet (a NAT test puts them on a LAN)")
    ap.add_argument("--port", type=int, default=6881)
    ap.add_argument("--big-files", type=int, default=1500)
    ap.add_argument("--extra", type=int, default=0, help="more small single-file torrents (more samples for the timing medians)")
    ap.add_argument("--hybrid", action="store_true")
    ap.add_argument("--per-node", type=int, default=0, help="N single-file torrents per session instead of the shapes")
    ap.add_argument("--sample-interval", type=int, default=0, help="dht_sample_infohashes_interval (libtorrent's default: 21600)")
    ap.add_argument("--cold", action="store_true", help="emit ready before the DHT forms")
    ap.add_argument("--stagger", type=float, default=0, help="--per-node: session i starts seeding at i * STAGGER / nodes s")
    ap.add_argument("--extra-node", action="append", default=[], help="ip:port every session adds as a DHT node from the start")
    ap.add_argument("--aria2", action="store_true", help="also seed one torrent from aria2c")
    ap.add_argument("--max-secs", type=float, default=300)
    ap.add_argument("--tag", default=str(os.getpid()))
    ap.add_argument("--utp-only", action="store_true", help="seeding sessions without TCP (both ways)")
    ap.add_argument(
        "--encryption",
        default="",
        help="comma list of rc4|plaintext|disabled|enabled, one per pair of sessions (see the docstring)",
    )
    a = ap.parse_args()
    enc = [e for e in a.encryption.split(",") if e]
    for e in enc:
        if e not in ENCRYPTION:
            ap.error(f"unknown --encryption {e}")
    if enc and a.nodes < 2:
        ap.error("--encryption needs at least two sessions")
    t_start = time.time()
    tag = a.tag.encode()

    root = os.path.join(a.workdir, "payload")
    if a.per_node:
        return per_node_main(a, root, tag, t_start)
    torrents = [
        make_torrent(root, f"single-{a.tag}.bin", None, tag=tag),
        make_torrent(
            root,
            f"Mehrteilig — 多文件 ✓ {a.tag}",
            [
                (["Ünïcødé 目录", "子目录", "файл ✓.txt"], 1234),
                (["Ünïcødé 目录", "naïve café.md"], 5678),
                (["a", "b", "c", "d", "deep.bin"], 30000),
                (["émoji 🎉.txt"], 10),
                (["plain.txt"], 0 + 777),
            ],
            tag=tag,
        ),
        make_torrent(
            root,
            f"big-{a.tag}",
            [
                ([f"dir_{i // 100:02d}", f"file_{i:05d}_with_a_longer_name_to_grow_the_info.bin"], 1 + i % 97)
                for i in range(a.big_files)
            ],
            tag=tag,
        ),
    ]
    for i in range(a.extra):
        t = make_torrent(root, f"extra-{i:02d}-{a.tag}.bin", None, tag=tag)
        torrents.append(t)
    if a.hybrid:
        torrents.append(make_hybrid(root, tag))
    assert torrents[2]["info_len"] > 65536, torrents[2]["info_len"]
    log("torrents:", [(t["name"], t["info_len"]) for t in torrents])

    addrs = [(f"{a.ip_prefix}{a.first_ip + i}", a.port) for i in range(a.nodes)]
    aria = None
    if a.aria2:
        # A second implementation: aria2 seeds its own torrent and joins the DHT.
        aria_ip = f"{a.ip_prefix}{a.first_ip + a.nodes + 1}"
        t = make_torrent(root, f"aria2-seeded-{a.tag}.bin", None, tag=tag + b"-aria2")
        tfile = os.path.join(a.workdir, "aria2.torrent")
        with open(tfile, "wb") as f:
            f.write(b"d4:info" + t["raw"] + b"e")
        aria = subprocess.Popen(
            [
                "aria2c", f"--interface={aria_ip}", f"--listen-port={a.port}",
                f"--dht-listen-port={a.port}", "--enable-dht=true", "--enable-dht6=false",
                f"--dht-entry-point={addrs[0][0]}:{addrs[0][1]}", "--seed-ratio=0.0",
                "--bt-seed-unverified=true", "--bt-enable-lpd=false",
                "--enable-peer-exchange=false", "--disable-ipv6=true", "--console-log-level=warn",
                "--summary-interval=0", "--quiet=true",
                f"--dht-file-path={os.path.join(a.workdir, 'aria2-dht.dat')}", f"--stop={int(a.max_secs)}", "-d", root, tfile,
            ],
            stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL,
        )
        t["seeders"] = [f"{aria_ip}:{a.port}"]
        t["client"] = "aria2"
        torrents.append(t)
    def session_enc(i):
        return enc[(i // 2) % len(enc)] if enc else None

    def session_settings(i, ip, port):
        s = settings(ip, port)
        if session_enc(i):
            s.update(encryption_settings(session_enc(i)))
        if a.utp_only:
            s.update({
                "enable_outgoing_tcp": False,
                "enable_incoming_tcp": False,
                "enable_outgoing_utp": True,
                "enable_incoming_utp": True,
            })
        return s

    sessions = [lt.session(session_settings(i, ip, port)) for i, (ip, port) in enumerate(addrs)]
    if enc:
        log("encryption per session:", [session_enc(i) for i in range(a.nodes)])
    if a.utp_only:
        log("seeding sessions are uTP-only")
    extra_nodes = []

    def link_all():
        for i, s in enumerate(sessions):
            for j, addr in enumerate(addrs):
                if i != j:
                    s.add_dht_node(addr)
            for n in extra_nodes:
                s.add_dht_node(n)

    link_all()
    # Every torrent is seeded by two sessions (aria2's by aria2): neighbours, or
    # with --encryption the two sessions of one pair (same policy).
    handles = []
    pairs = max(1, a.nodes // 2)
    for k, t in enumerate(torrents):
        if t.get("client") == "aria2":
            continue
        seeders = (2 * (k % pairs), 2 * (k % pairs) + 1) if enc else (k % a.nodes, (k + 1) % a.nodes)
        if enc:
            t["encryption"] = session_enc(seeders[0])
        for i in seeders:
            p = lt.add_torrent_params()
            p.ti = t["ti"]
            p.save_path = root
            p.flags = lt.torrent_flags.seed_mode
            handles.append((i, sessions[i].add_torrent(p)))
            t.setdefault("seeders", []).append(f"{addrs[i][0]}:{addrs[i][1]}")

    def drain_alerts(ss, label):
        for s in ss:
            for al in s.pop_alerts():
                if al.category() & lt.alert.category_t.error_notification:
                    log(label, "alert:", al.message())

    # Ready once every session knows others and every torrent announced (announce
    # replies are invisible here; we wait for a routing table, then force announces).
    deadline = time.time() + 60
    while True:
        drain_alerts(sessions, "seed")
        live = []
        for s in sessions:
            s.post_dht_stats()
        time.sleep(0.2)
        for s in sessions:
            n = 0
            for al in s.pop_alerts():
                if isinstance(al, lt.dht_stats_alert):
                    n = sum(b["num_nodes"] for b in al.routing_table)
                elif al.category() & lt.alert.category_t.error_notification:
                    log("seed alert:", al.message())
            live.append(n)
        if all(n >= min(2, a.nodes - 1) for n in live):
            break
        if time.time() > deadline:
            log("DHT did not form:", live)
            sys.exit(3)
        link_all()
    log("routing tables:", live, "after", round(time.time() - t_start, 2), "s")
    # Then until every seeder's announce_peer reached some node (dht_announce_alert).
    want = {(t["infohash"], s.split(":")[0]) for t in torrents for s in t["seeders"]}
    seen = set()
    deadline = time.time() + 60
    next_force = 0
    while not want <= seen:
        if time.time() > next_force:
            for _, h in handles:
                h.force_dht_announce()
            next_force = time.time() + 5
        if time.time() > deadline:
            log("announces missing:", sorted(want - seen))
            if aria is not None:
                aria.terminate()
            sys.exit(3)
        time.sleep(0.1)
        for s in sessions:
            for al in s.pop_alerts():
                if isinstance(al, lt.dht_announce_alert):
                    seen.add((str(al.info_hash), str(al.ip)))
                elif al.category() & lt.alert.category_t.error_notification:
                    log("seed alert:", al.message())
    log("announced after", round(time.time() - t_start, 2), "s")
    emit(
        {
            "event": "ready",
            "nodes": [f"{ip}:{port}" for ip, port in addrs],
            "torrents": [{k: v for k, v in t.items() if k not in ("ti", "raw")} for t in torrents],
        }
    )

    leech = None
    fetch_start = {}
    next_link = time.time() + 3
    # Commands arrive through a thread: select() on a buffered stdin misses lines
    # that readline() already pulled into Python's buffer.
    lines = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    while time.time() - t_start < a.max_secs:
        try:
            line = lines.get(timeout=0.1 if leech is None else 0.005)
        except queue.Empty:
            line = ""
        if line is None:
            log("stdin closed; stopping")
            break
        if line:
            cmd = line.split()
            if cmd and cmd[0] == "node":
                ip, port = cmd[1].rsplit(":", 1)
                extra_nodes.append((ip, int(port)))
                link_all()
            elif cmd and cmd[0] == "fetch":
                ip = f"{a.ip_prefix}{a.first_ip + a.nodes}"
                leech = lt.session(settings(ip, a.port))
                # Measure from a joined DHT node, as the crawler is after bootstrap.
                dl = time.time() + 20
                n = 0
                while n < 2 and time.time() < dl:
                    for addr in addrs:
                        leech.add_dht_node(addr)
                    leech.post_dht_stats()
                    time.sleep(0.1)
                    for al in leech.pop_alerts():
                        if isinstance(al, lt.dht_stats_alert):
                            n = sum(b["num_nodes"] for b in al.routing_table)
                log("leech joined with", n, "nodes")
                for t in torrents:
                    p = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + t["infohash"])
                    p.save_path = os.path.join(a.workdir, "leech")
                    p.flags |= lt.torrent_flags.upload_mode
                    p.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
                    fetch_start[t["infohash"]] = time.time()
                    # force_dht_announce: libtorrent otherwise spreads the torrents'
                    # DHT lookups over dht_announce_interval, one at a time.
                    leech.add_torrent(p).force_dht_announce()
        if leech is not None:
            for al in leech.pop_alerts():
                if isinstance(al, lt.metadata_received_alert):
                    ih = str(al.handle.info_hashes().v1)
                    polled = time.time() - fetch_start[ih]
                    # The alert's own time: this loop polls every few ms, which
                    # would add up to that much to libtorrent's figure.
                    at = al.timestamp().timestamp() - fetch_start[ih]
                    if not 0 <= at <= polled:
                        log("alert timestamp off:", at, "polled", polled)
                        at = polled
                    emit({"event": "lt_fetch", "infohash": ih, "secs": at, "secs_polled": polled})
                elif al.category() & lt.alert.category_t.error_notification:
                    log("leech alert:", al.message())
        if time.time() > next_link:
            link_all()
            if leech is not None:
                for addr in addrs:
                    leech.add_dht_node(addr)
            drain_alerts(sessions, "seed")
            next_link = time.time() + 3
            if leech is not None and os.environ.get("SWARM_DEBUG"):
                for h in leech.get_torrents():
                    st = h.status()
                    log("leech", st.name, st.state, "peers", st.num_peers, "meta", st.has_metadata, "dht", st.announcing_to_dht, "flags", h.flags())
                for s in sessions[:2]:
                    for h in s.get_torrents():
                        st = h.status()
                        log("seed", st.name, st.state, "peers", st.num_peers, "dht", st.announcing_to_dht, "flags", h.flags(), st.errc.message())
    if aria is not None:
        aria.terminate()
        aria.wait(5)
    log("done after", round(time.time() - t_start, 2), "s")


def per_node_main(a, root, tag, t_start):
    """--per-node: N single-file torrents per session, seeded by it alone."""
    addrs = [(f"{a.ip_prefix}{a.first_ip + i}", a.port) for i in range(a.nodes)]
    extra = []
    for n in a.extra_node:
        ip, port = n.rsplit(":", 1)
        extra.append((ip, int(port)))

    def node_settings(ip, port):
        s = settings(ip, port)
        s["dht_sample_infohashes_interval"] = a.sample_interval
        return s

    sessions = [lt.session(node_settings(ip, port)) for ip, port in addrs]

    def link_all():
        for i, s in enumerate(sessions):
            for j, addr in enumerate(addrs):
                if i != j:
                    s.add_dht_node(addr)
            for n in extra:
                s.add_dht_node(n)

    torrents, handles = [], []
    # (start time, session, torrent): with --stagger the sessions start seeding
    # one after another, so the torrents are announced while the crawler starts.
    pending = []
    for i in range(len(sessions)):
        for k in range(a.per_node):
            t = make_torrent(root, f"node{i:02d}-t{k}-{a.tag}.bin", None, tag=tag)
            t["seeders"] = [f"{addrs[i][0]}:{addrs[i][1]}"]
            torrents.append(t)
            pending.append((i * a.stagger / max(1, len(sessions)), i, t))

    def start_seeding(now):
        while pending and t_first + pending[0][0] <= now:
            _, i, t = pending.pop(0)
            p = lt.add_torrent_params()
            p.ti = t["ti"]
            p.save_path = root
            p.flags = lt.torrent_flags.seed_mode
            h = sessions[i].add_torrent(p)
            h.force_dht_announce()
            handles.append(h)

    link_all()
    t_first = time.time()
    start_seeding(t_first)
    ready = {
        "event": "ready",
        "nodes": [f"{ip}:{port}" for ip, port in addrs],
        "torrents": [{k: v for k, v in t.items() if k not in ("ti", "raw")} for t in torrents],
    }
    if a.cold:
        emit(ready)
    log("sessions up after", round(time.time() - t_start, 2), "s")
    want = {(t["infohash"], t["seeders"][0].split(":")[0]) for t in torrents}
    seen = set()
    next_force = 0
    announced = False
    lines = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    next_link = 0
    while time.time() - t_start < a.max_secs:
        now = time.time()
        start_seeding(now)
        if now > next_link:
            link_all()
            next_link = now + 3
        if not announced and now > next_force:
            # Until each torrent's first announce landed, as libtorrent does for a
            # torrent just added (its first announce waits for DHT nodes).
            for h in handles:
                h.force_dht_announce()
            next_force = now + 5
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
        if line is None:
            log("stdin closed; stopping")
            break
        if line:
            cmd = line.split()
            if cmd and cmd[0] == "node":
                ip, port = cmd[1].rsplit(":", 1)
                extra.append((ip, int(port)))
                link_all()
        for s in sessions:
            for al in s.pop_alerts():
                if isinstance(al, lt.dht_announce_alert):
                    seen.add((str(al.info_hash), str(al.ip)))
                elif al.category() & lt.alert.category_t.error_notification:
                    log("seed alert:", al.message())
        if not announced and want <= seen:
            announced = True
            secs = round(time.time() - t_start, 2)
            log("announced after", secs, "s")
            if a.cold:
                emit({"event": "announced", "secs": secs})
            else:
                emit(ready)
    log("done after", round(time.time() - t_start, 2), "s")


if __name__ == "__main__":
    main()
