"""Does libtorrent freeze a full BEP 51 sample for its interval?

Three libtorrent sessions on loopback (127.0.0.81-83, ports 47001-47003): B announces
30 infohashes to A (interval 21600, 20 samples at most), then C samples A four times.
libtorrent 2.1 answers `num 30 count 20` with the same 20 every time (the sample is
rebuilt only when it is not full or its interval has passed).

    python3 -W ignore tests/interop/sample_freeze.py
"""
import hashlib
import os
import time

import libtorrent as lt


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
        "dht_block_ratelimit": 1000000,
        "dht_sample_infohashes_interval": 21600,
        "dht_max_infohashes_sample_count": 20,
        "alert_mask": lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification,
    }


def main():
    a = lt.session(settings("127.0.0.81", 47001))
    b = lt.session(settings("127.0.0.82", 47002))
    c = lt.session(settings("127.0.0.83", 47003))
    for s in (b, c):
        s.add_dht_node(("127.0.0.81", 47001))
    a.add_dht_node(("127.0.0.82", 47002))
    time.sleep(3)
    for _ in range(30):
        b.dht_announce(lt.sha1_hash(hashlib.sha1(os.urandom(8)).digest()), 6881, 0)
    time.sleep(8)

    def sample():
        c.dht_sample_infohashes(("127.0.0.81", 47001), lt.sha1_hash(os.urandom(20)))
        t = time.time()
        while time.time() - t < 5:
            for al in c.pop_alerts():
                if isinstance(al, lt.dht_sample_infohashes_alert):
                    return al.num_infohashes, sorted(str(x) for x in al.samples)
            time.sleep(0.1)
        return None, []

    for _ in range(4):
        num, s = sample()
        digest = hashlib.sha1("".join(s).encode()).hexdigest()[:8]
        print(f"num {num} count {len(s)} samples {digest}")
        time.sleep(2)


if __name__ == "__main__":
    main()
