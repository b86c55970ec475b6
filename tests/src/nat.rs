//! The NAT world of issue 15: a share of the BitTorrent clients behind NATs
//! (address-and-port-restricted filtering, no port forwarding: see
//! [`crate::net::EndpointNet::nat`]), some uTP-only, the rest on TCP and uTP;
//! and the account of metadata success per class of torrent, to compare a
//! crawler with uTP against one without in the same world.
//!
//! A client behind a NAT is reachable only by datagrams from an endpoint it
//! sent to within the NAT's mapping timeout: for a crawler, only over uTP from
//! its DHT socket, after the client has talked DHT to it (a get_peers of an
//! announce traversal, a refresh, an announce_peer). A long-running crawler sits
//! in many clients' tables; [`introduce`] puts a new one there, as the issue's
//! interop proof puts magnetar in every NAT-ed seeder's routing table.

use std::fmt;

use crate::client::Client;
use crate::crawler_node::Tally;
use crate::world::{NodeIdx, World};

/// How the world's clients are reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientMix {
    /// Share of clients behind a NAT (TCP and uTP on, as libtorrent's
    /// defaults; TCP never gets in).
    pub nat: f64,
    /// Share of the others with TCP off (uTP only).
    pub utp_only: f64,
    /// Share of the rest that serve uTP besides TCP (the others: TCP only).
    pub dual: f64,
}

impl ClientMix {
    /// Every client on TCP only, none behind a NAT (the worlds of earlier runs).
    pub const TCP_ONLY: ClientMix = ClientMix {
        nat: 0.0,
        utp_only: 0.0,
        dual: 0.0,
    };

    /// Whether the mix changes anything (else no random draw is made, and a
    /// world is built exactly as before the mix existed).
    pub fn is_tcp_only(&self) -> bool {
        *self == Self::TCP_ONLY
    }
}

/// How one client is reached.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientClass {
    /// Public, TCP only.
    Tcp,
    /// Public, TCP and uTP.
    Dual,
    /// Public, uTP only (TCP off).
    UtpOnly,
    /// Behind a NAT (TCP and uTP on).
    Nat,
}

/// The class of a torrent: the best way in to any of its holders.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TorrentClass {
    /// Some holder takes TCP connections.
    TcpReachable,
    /// No holder takes TCP, some public holder takes uTP.
    UtpOnly,
    /// Every holder is behind a NAT.
    Nat,
}

impl TorrentClass {
    pub const ALL: [TorrentClass; 3] = [
        TorrentClass::TcpReachable,
        TorrentClass::UtpOnly,
        TorrentClass::Nat,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            TorrentClass::TcpReachable => "TCP-reachable",
            TorrentClass::UtpOnly => "uTP-only",
            TorrentClass::Nat => "behind NATs",
        }
    }
}

/// The class of client `n` (`None`: not a client).
pub fn client_class(w: &World, n: NodeIdx) -> Option<ClientClass> {
    let c = w.get::<Client>(n)?;
    let ep = *w.endpoints(n).first()?;
    Some(if w.net.eps[ep as usize].nat {
        ClientClass::Nat
    } else if !c.tcp {
        ClientClass::UtpOnly
    } else if c.utp {
        ClientClass::Dual
    } else {
        ClientClass::Tcp
    })
}

/// Sets every client's transports and NAT from `mix`, in node order, with the
/// world's RNG (so one seed gives one world). A [`ClientMix::TCP_ONLY`] mix
/// draws nothing and changes nothing.
pub fn apply_mix(w: &mut World, mix: &ClientMix) {
    if mix.is_tcp_only() {
        return;
    }
    for n in 0..w.node_count() as NodeIdx {
        if w.get::<Client>(n).is_none() {
            continue;
        }
        let class = if w.rng.chance(mix.nat) {
            ClientClass::Nat
        } else if w.rng.chance(mix.utp_only) {
            ClientClass::UtpOnly
        } else if w.rng.chance(mix.dual) {
            ClientClass::Dual
        } else {
            ClientClass::Tcp
        };
        set_class(w, n, class);
    }
}

/// Makes client `n` of `class`.
pub fn set_class(w: &mut World, n: NodeIdx, class: ClientClass) {
    let Some(ep) = w.endpoints(n).first().copied() else {
        return;
    };
    w.net.eps[ep as usize].nat = class == ClientClass::Nat;
    if let Some(c) = w.get_mut::<Client>(n) {
        c.tcp = class != ClientClass::UtpOnly;
        c.utp = class != ClientClass::Tcp;
    }
}

/// Puts every endpoint of `crawler` in the routing table of every client (in
/// a bucket with room): the crawler has been running for a while.
pub fn introduce(w: &mut World, crawler: NodeIdx) {
    let eps: Vec<_> = w
        .endpoints(crawler)
        .iter()
        .map(|&ep| (w.dir.get(ep).id, w.dir.get(ep).addr))
        .collect();
    for n in 0..w.node_count() as NodeIdx {
        if let Some(c) = w.get_mut::<Client>(n) {
            for &(id, addr) in &eps {
                c.know(id, addr);
            }
        }
    }
}

/// The class of torrent `t` (its index in the truth).
pub fn torrent_class(w: &World, t: usize) -> Option<TorrentClass> {
    let tor = w.truth.torrents.get(t)?;
    let classes: Vec<ClientClass> = tor
        .holders
        .iter()
        .filter_map(|&h| client_class(w, h))
        .collect();
    Some(
        if classes
            .iter()
            .any(|c| matches!(c, ClientClass::Tcp | ClientClass::Dual))
        {
            TorrentClass::TcpReachable
        } else if classes.contains(&ClientClass::UtpOnly) {
            TorrentClass::UtpOnly
        } else {
            TorrentClass::Nat
        },
    )
}

/// Torrents of one class and what a crawler made of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCount {
    pub torrents: usize,
    pub discovered: usize,
    pub fetched: usize,
}

impl ClassCount {
    /// Fetched per discovered (0 with nothing discovered).
    pub fn success(&self) -> f64 {
        self.fetched as f64 / self.discovered.max(1) as f64
    }
}

/// Metadata success per torrent class ([`TorrentClass::ALL`] order) and in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub classes: [ClassCount; 3],
    pub all: ClassCount,
}

impl Account {
    pub fn of(&self, c: TorrentClass) -> ClassCount {
        self.classes[c as usize]
    }
}

/// What the crawler whose tally is `tally` discovered and fetched, by class.
pub fn account(w: &World, tally: &Tally) -> Account {
    let mut a = Account::default();
    for (i, tor) in w.truth.torrents.iter().enumerate() {
        let Some(class) = torrent_class(w, i) else {
            continue;
        };
        let disc = tally.discovered.contains_key(&tor.ih);
        let got = tally.fetched.contains_key(&tor.ih);
        for c in [&mut a.classes[class as usize], &mut a.all] {
            c.torrents += 1;
            c.discovered += usize::from(disc);
            c.fetched += usize::from(got);
        }
    }
    a
}

impl fmt::Display for Account {
    /// One line: each class, then all: fetched / discovered (torrents).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in TorrentClass::ALL {
            let x = self.of(c);
            write!(
                f,
                "{}: {}/{} ({:.1} %) of {}; ",
                c.name(),
                x.fetched,
                x.discovered,
                100.0 * x.success(),
                x.torrents
            )?;
        }
        write!(
            f,
            "all: {}/{} ({:.1} %) of {}",
            self.all.fetched,
            self.all.discovered,
            100.0 * self.all.success(),
            self.all.torrents
        )
    }
}
