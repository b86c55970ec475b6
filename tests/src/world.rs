//! The world: virtual time, one seeded RNG, the delivery queue, the nodes, the TCP
//! model and the ground truth.
//!
//! The loop is the one of ARCHITECTURE.md §7: every node's outputs are drained into the
//! network as soon as the node has handled an input; then time jumps to the
//! earliest delivery or timer on the (time, sequence) queue, which is delivered.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use magnetar_core::addr::is_sendable;
use magnetar_core::Rng;
use magnetar_core::{CloseReason, NodeId, Timestamp};

use crate::net::{EndpointNet, NetConfig, Network};
use crate::util::{prefetch, prefetch_bytes, FxMap, RadixEntry, RadixHeap, TraceHash};

/// Index of a node in the world.
pub type NodeIdx = u32;
/// Index of an endpoint (one UDP address) in the world.
pub type EpIdx = u32;
/// A TCP connection in the world.
pub type TcpId = u64;

/// What a node is (for the directory and the ground truth).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Honest,
    Crawler,
    Client,
    Adversary,
    Baseline,
    Other,
}

/// One endpoint as the world knows it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub node: NodeIdx,
    /// The node's local socket number for this endpoint.
    pub local: u16,
    pub kind: Kind,
    pub alive: bool,
    /// Answers DHT queries (alive, reachable, not read-only).
    pub responsive: bool,
}

/// The ground-truth directory of endpoints, with an id-sorted index of the DHT
/// nodes that other nodes may know about.
#[derive(Default)]
pub struct Directory {
    pub entries: Vec<DirEntry>,
    /// IPv4 endpoints (and their nodes) by `ip << 16 | port` (one multiply to
    /// hash).
    by_addr4: FxMap<u64, (EpIdx, NodeIdx)>,
    by_addr6: FxMap<SocketAddr, (EpIdx, NodeIdx)>,
    /// Visible DHT nodes (honest, not read-only, and crawlers), sorted by id.
    sorted: Vec<(NodeId, EpIdx)>,
}

fn bit(id: &[u8; 20], d: usize) -> bool {
    (id[d / 8] >> (7 - d % 8)) & 1 == 1
}

impl Directory {
    pub fn lookup(&self, addr: &SocketAddr) -> Option<EpIdx> {
        self.lookup_with_node(addr).map(|(ep, _)| ep)
    }
    /// The endpoint at `addr` and its node (the node of an endpoint never
    /// changes), without reading the endpoint's entry.
    pub fn lookup_with_node(&self, addr: &SocketAddr) -> Option<(EpIdx, NodeIdx)> {
        match addr {
            SocketAddr::V4(v) => self
                .by_addr4
                .get(&((u32::from(*v.ip()) as u64) << 16 | v.port() as u64))
                .copied(),
            SocketAddr::V6(_) => self.by_addr6.get(addr).copied(),
        }
    }
    fn insert_addr(&mut self, addr: SocketAddr, ep: EpIdx, node: NodeIdx) {
        match addr {
            SocketAddr::V4(v) => {
                let k = (u32::from(*v.ip()) as u64) << 16 | v.port() as u64;
                self.by_addr4.insert(k, (ep, node));
            }
            SocketAddr::V6(_) => {
                self.by_addr6.insert(addr, (ep, node));
            }
        }
    }
    pub fn get(&self, ep: EpIdx) -> &DirEntry {
        &self.entries[ep as usize]
    }
    pub fn visible(&self) -> &[(NodeId, EpIdx)] {
        &self.sorted
    }
    pub(crate) fn add_visible(&mut self, id: NodeId, ep: EpIdx) {
        let pos = self.sorted.partition_point(|e| e.0 < id);
        self.sorted.insert(pos, (id, ep));
    }
    pub(crate) fn remove_visible(&mut self, ep: EpIdx) {
        let id = self.entries[ep as usize].id;
        let pos = self.sorted.partition_point(|e| e.0 < id);
        if let Some(i) = (pos..self.sorted.len())
            .take_while(|&i| self.sorted[i].0 == id)
            .find(|&i| self.sorted[i].1 == ep)
        {
            self.sorted.remove(i);
        }
    }

    /// The `n` visible endpoints closest to `target` that pass `keep`, nearest
    /// first. Exact: walks the id-sorted index as a binary trie.
    pub fn closest(
        &self,
        target: &[u8; 20],
        n: usize,
        keep: &dyn Fn(&DirEntry) -> bool,
        out: &mut Vec<EpIdx>,
    ) {
        out.clear();
        self.collect(0, self.sorted.len(), 0, target, n, keep, out);
    }

    /// The `n` closest responsive visible endpoints.
    pub fn closest_responsive(&self, target: &[u8; 20], n: usize) -> Vec<EpIdx> {
        let mut out = Vec::new();
        self.closest(target, n, &|e| e.responsive, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        lo: usize,
        hi: usize,
        depth: usize,
        target: &[u8; 20],
        n: usize,
        keep: &dyn Fn(&DirEntry) -> bool,
        out: &mut Vec<EpIdx>,
    ) {
        if out.len() >= n || lo >= hi {
            return;
        }
        if depth >= 160 && hi - lo > 16 {
            // Many endpoints sharing one id: sort them all.
            let mut v: Vec<(magnetar_core::Distance, EpIdx)> = self.sorted[lo..hi]
                .iter()
                .filter(|e| keep(&self.entries[e.1 as usize]))
                .map(|e| (e.0.distance(target), e.1))
                .collect();
            v.sort_unstable();
            for (_, ep) in v {
                if out.len() >= n {
                    break;
                }
                out.push(ep);
            }
            return;
        }
        if hi - lo <= 16 {
            // A leaf: sort its entries on the stack.
            let mut v = [(magnetar_core::Distance([0; 20]), 0 as EpIdx); 16];
            let mut m = 0;
            for e in &self.sorted[lo..hi] {
                if keep(&self.entries[e.1 as usize]) {
                    v[m] = (e.0.distance(target), e.1);
                    m += 1;
                }
            }
            let v = &mut v[..m];
            v.sort_unstable();
            for &(_, ep) in v.iter() {
                if out.len() >= n {
                    break;
                }
                out.push(ep);
            }
            return;
        }
        let mid = lo + self.sorted[lo..hi].partition_point(|e| !bit(&e.0 .0, depth));
        let (first, second) = if bit(target, depth) {
            ((mid, hi), (lo, mid))
        } else {
            ((lo, mid), (mid, hi))
        };
        self.collect(first.0, first.1, depth + 1, target, n, keep, out);
        self.collect(second.0, second.1, depth + 1, target, n, keep, out);
    }

    /// A BEP 5-shaped table for `own`: for every bucket depth, up to `k` random
    /// visible nodes at that distance (as a long-running node would hold).
    pub fn random_table(&self, own: &NodeId, k: usize, rng: &mut Rng, out: &mut Vec<EpIdx>) {
        out.clear();
        let (mut lo, mut hi) = (0usize, self.sorted.len());
        for depth in 0..160 {
            if hi - lo <= 1 {
                break;
            }
            let mid = lo + self.sorted[lo..hi].partition_point(|e| !bit(&e.0 .0, depth));
            let (other, mine) = if bit(&own.0, depth) {
                ((lo, mid), (mid, hi))
            } else {
                ((mid, hi), (lo, mid))
            };
            let len = other.1 - other.0;
            if len <= k {
                out.extend(self.sorted[other.0..other.1].iter().map(|e| e.1));
            } else {
                let start = out.len();
                while out.len() - start < k {
                    let ep = self.sorted[other.0 + rng.index(len)].1;
                    if !out[start..].contains(&ep) {
                        out.push(ep);
                    }
                }
            }
            (lo, hi) = mine;
        }
        out.retain(|&ep| self.entries[ep as usize].id != *own);
    }
}

/// A datagram's bytes on their way: shared bytes a node handed over, or a
/// buffer from the world's [`BufPool`] (given back to it after delivery, so the
/// hot path neither allocates nor counts references).
#[derive(Debug)]
pub(crate) enum Payload {
    Shared(Bytes),
    Pooled(Vec<u8>),
}

impl Payload {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Shared(b) => b,
            Payload::Pooled(v) => v,
        }
    }
    /// A second copy (a duplicated datagram).
    fn duplicate(&self) -> Payload {
        match self {
            Payload::Shared(b) => Payload::Shared(b.clone()),
            Payload::Pooled(v) => Payload::Pooled(v.clone()),
        }
    }
}

/// Recycled datagram buffers.
#[derive(Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
}

impl BufPool {
    /// Buffers kept for reuse at most (the most ever in flight at once, roughly).
    const MAX_FREE: usize = 1 << 16;
    /// Larger buffers are freed rather than kept.
    const MAX_CAPACITY: usize = 4096;

    /// An empty buffer.
    fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(v) => v,
            None => {
                // The pool's buffers outlive the node that happened to ask first:
                // charge them to nobody.
                let owner = crate::alloc_meter::suspend();
                let v = Vec::with_capacity(512);
                crate::alloc_meter::resume(owner);
                v
            }
        }
    }
    fn give(&mut self, mut v: Vec<u8>) {
        if self.free.len() < Self::MAX_FREE && v.capacity() <= Self::MAX_CAPACITY {
            v.clear();
            self.free.push(v);
        }
    }
    /// A node's bytes as a payload: copied into a pooled buffer and released
    /// now, while the node that made them has them in its cache (releasing
    /// them at delivery would touch their allocation, and their shared count,
    /// long after it left the cache). Large ones stay shared.
    fn adopt(&mut self, b: Bytes) -> Payload {
        if b.len() > Self::MAX_CAPACITY {
            return Payload::Shared(b);
        }
        let mut v = self.take();
        v.extend_from_slice(&b);
        Payload::Pooled(v)
    }
    fn recycle(&mut self, p: Payload) {
        if let Payload::Pooled(v) = p {
            self.give(v);
        }
    }
}

/// Something a node asked the world to do.
#[derive(Debug)]
pub(crate) enum Action {
    Send {
        local: u16,
        src: Option<SocketAddr>,
        to: SocketAddr,
        payload: Payload,
    },
    Wake(Timestamp),
    Connect {
        tcp: TcpId,
        local: u16,
        tag: u64,
        to: SocketAddr,
    },
    TcpSend {
        tcp: TcpId,
        bytes: Bytes,
    },
    TcpClose {
        tcp: TcpId,
    },
    TcpReset {
        tcp: TcpId,
    },
}

/// A node's handle on the world while it handles an input.
pub struct Ctx<'a> {
    pub now: Timestamp,
    pub node: NodeIdx,
    pub rng: &'a mut Rng,
    pub dir: &'a Directory,
    eps: &'a [EpIdx],
    actions: &'a mut Vec<Action>,
    next_tcp: &'a mut TcpId,
    sender: Option<EpIdx>,
    scratch: &'a mut Scratch,
    pool: &'a mut BufPool,
}

/// Reusable buffers for building messages (lent to the node being run, so the
/// hot paths do not allocate and grow a fresh buffer per message).
#[derive(Default)]
pub struct Scratch {
    pub out: Vec<u8>,
    pub a: Vec<u8>,
    pub b: Vec<u8>,
}

impl Scratch {
    pub fn clear(&mut self) {
        self.out.clear();
        self.a.clear();
        self.b.clear();
    }
}

impl Ctx<'_> {
    /// While handling a datagram: the directory endpoint of its source address
    /// (what `dir.lookup(from)` gives, found once by the world when it was sent).
    pub fn sender(&self) -> Option<EpIdx> {
        self.sender
    }
    /// Borrows the world's scratch buffers (cleared); give them back with
    /// [`Ctx::put_scratch`].
    pub fn take_scratch(&mut self) -> Scratch {
        let mut s = std::mem::take(self.scratch);
        s.clear();
        s
    }
    pub fn put_scratch(&mut self, s: Scratch) {
        *self.scratch = s;
    }
    /// Sends a copy of `payload` (for messages built in a scratch buffer). The
    /// copy goes into a recycled buffer: no allocation in the steady state.
    pub fn send_copy(&mut self, local: u16, to: SocketAddr, payload: &[u8]) {
        let mut v = self.pool.take();
        v.extend_from_slice(payload);
        self.send_buf(local, to, v);
    }
    /// An empty buffer from the world's pool, to build a datagram in and hand to
    /// [`Ctx::send_buf`] (cheaper than a fresh `Vec` per message).
    pub fn take_buf(&mut self) -> Vec<u8> {
        self.pool.take()
    }
    /// Sends `payload`; the world recycles the buffer after delivery.
    pub fn send_buf(&mut self, local: u16, to: SocketAddr, payload: Vec<u8>) {
        self.actions.push(Action::Send {
            local,
            src: None,
            to,
            payload: Payload::Pooled(payload),
        });
    }
    /// The address of local socket `local`.
    pub fn addr(&self, local: u16) -> SocketAddr {
        self.dir.get(self.eps[local as usize]).addr
    }
    pub fn ep(&self, local: u16) -> EpIdx {
        self.eps[local as usize]
    }
    pub fn send(&mut self, local: u16, to: SocketAddr, payload: impl Into<Bytes>) {
        let payload = self.pool.adopt(payload.into());
        self.actions.push(Action::Send {
            local,
            src: None,
            to,
            payload,
        });
    }
    /// Sends with a forged source address (an adversary's spoofing).
    pub fn send_spoofed(&mut self, src: SocketAddr, to: SocketAddr, payload: impl Into<Bytes>) {
        self.actions.push(Action::Send {
            local: 0,
            src: Some(src),
            to,
            payload: self.pool.adopt(payload.into()),
        });
    }
    /// Asks to be woken at `t` (replacing any earlier request).
    pub fn wake_at(&mut self, t: Timestamp) {
        self.actions.push(Action::Wake(t));
    }
    /// Opens a TCP connection from local socket `local`; `tag` comes back with
    /// every event of the connection.
    pub fn connect(&mut self, local: u16, tag: u64, to: SocketAddr) -> TcpId {
        let tcp = *self.next_tcp;
        *self.next_tcp += 1;
        self.actions.push(Action::Connect {
            tcp,
            local,
            tag,
            to,
        });
        tcp
    }
    pub fn tcp_send(&mut self, tcp: TcpId, bytes: impl Into<Bytes>) {
        self.actions.push(Action::TcpSend {
            tcp,
            bytes: bytes.into(),
        });
    }
    /// Closes our side cleanly (the peer sees EOF after the bytes in flight).
    pub fn tcp_close(&mut self, tcp: TcpId) {
        self.actions.push(Action::TcpClose { tcp });
    }
    /// Resets the connection (the peer sees a reset; bytes in flight are lost).
    pub fn tcp_reset(&mut self, tcp: TcpId) {
        self.actions.push(Action::TcpReset { tcp });
    }
}

/// A simulated node. Every method gets the node's [`Ctx`].
pub trait SimNode: Any {
    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, local: u16, from: SocketAddr, bytes: &[u8]);
    fn on_wake(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Whether an incoming connect is accepted (else it is refused).
    fn accepts_tcp(&self) -> bool {
        false
    }
    fn on_tcp_accepted(&mut self, _ctx: &mut Ctx<'_>, _tcp: TcpId) {}
    fn on_tcp_connected(&mut self, _ctx: &mut Ctx<'_>, _tcp: TcpId, _tag: u64) {}
    fn on_tcp_data(&mut self, _ctx: &mut Ctx<'_>, _tcp: TcpId, _tag: u64, _bytes: &[u8]) {}
    fn on_tcp_closed(&mut self, _ctx: &mut Ctx<'_>, _tcp: TcpId, _tag: u64, _r: CloseReason) {}
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A slot of the world: honest nodes inline (there are many, and a box would
/// cost an indirection per delivery), others boxed.
#[allow(clippy::large_enum_variant)]
pub enum Node {
    Honest(crate::honest::HonestNode),
    Dyn(Box<dyn SimNode>),
    Gone,
}

impl Node {
    fn get(&mut self) -> Option<&mut dyn SimNode> {
        match self {
            Node::Honest(h) => Some(h),
            Node::Dyn(b) => Some(b.as_mut()),
            Node::Gone => None,
        }
    }
}

#[derive(Debug)]
enum Item {
    Datagram {
        ep: EpIdx,
        /// The node of `ep` (to fetch it into the cache ahead of delivery).
        node: NodeIdx,
        from: SocketAddr,
        /// The directory endpoint of `from`, if any.
        from_ep: Option<EpIdx>,
        payload: Payload,
    },
    Wake {
        node: NodeIdx,
    },
    Syn {
        tcp: TcpId,
    },
    Established {
        tcp: TcpId,
    },
    ConnectFailed {
        tcp: TcpId,
        reason: CloseReason,
    },
    Data {
        tcp: TcpId,
        side: u8,
        bytes: Bytes,
    },
    Fin {
        tcp: TcpId,
        side: u8,
    },
    Rst {
        tcp: TcpId,
        side: u8,
    },
    Hook {
        id: u32,
    },
    /// An empty slab slot.
    Free,
}

/// The delivery queue: a radix heap of (time, sequence) keys over a slab of
/// items (free slots are reused, so steady state allocates nothing). The heap
/// moves only the 24-byte keys; the items stay put in the slab. Time never goes
/// backwards, which is what a radix heap needs; it pops in exactly the
/// (time, sequence) order of a binary heap (see `RadixHeap`).
#[derive(Default)]
struct Queue {
    heap: RadixHeap,
    items: Vec<Item>,
    free: Vec<u32>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Timestamp, item: Item) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.items[s as usize] = item;
                s
            }
            None => {
                self.items.push(item);
                (self.items.len() - 1) as u32
            }
        };
        self.heap.push(RadixEntry {
            hi: at.as_nanos(),
            lo: self.seq,
            val: slot,
        });
    }
    fn pop(&mut self) -> Option<(Timestamp, Item)> {
        let s = self.heap.pop()?;
        let item = std::mem::replace(&mut self.items[s.val as usize], Item::Free);
        self.free.push(s.val);
        Some((Timestamp::from_nanos(s.hi), item))
    }
    fn peek_at(&self) -> Option<Timestamp> {
        self.heap.peek().map(|s| Timestamp::from_nanos(s.hi))
    }
    /// Finds the next item and starts loading its slab slot into the cache (a
    /// slot is written when pushed and read when popped, usually long evicted
    /// by then), so it is there when its turn comes after the current one.
    fn prefetch_next(&mut self) {
        if let Some(s) = self.heap.peek_mut() {
            if let Some(item) = self.items.get(s.val as usize) {
                prefetch(item);
            }
        }
    }
    /// The next item, if [`Queue::prefetch_next`] found it (no search).
    fn next_ready(&self) -> Option<&Item> {
        let s = self.heap.peek_ready()?;
        self.items.get(s.val as usize)
    }
    /// [`Queue::peek_at`], readying the next item to be popped.
    fn peek_at_mut(&mut self) -> Option<Timestamp> {
        self.heap.peek_mut().map(|s| Timestamp::from_nanos(s.hi))
    }
    fn len(&self) -> usize {
        self.heap.len()
    }
    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
struct TcpEnd {
    node: NodeIdx,
    ep: EpIdx,
    tag: u64,
}

struct Conn {
    ends: [TcpEnd; 2],
    established: bool,
    /// Side `s` has closed or been told it is closed.
    done: [bool; 2],
    /// Latest scheduled delivery towards side `s` (keeps the stream ordered).
    last: [Timestamp; 2],
}

/// A bounded drive ran out of steps (or the queue emptied) before its goal.
#[derive(Debug, Clone)]
pub struct Stuck {
    pub seed: u64,
    pub steps: u64,
    pub now: Timestamp,
    pub queue_empty: bool,
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation did not reach its goal after {} steps at t={:.3}s (queue empty: {}); replay with SIM_SEED={}",
            self.steps,
            self.now.as_nanos() as f64 / 1e9,
            self.queue_empty,
            self.seed
        )
    }
}

impl std::error::Error for Stuck {}

/// World-level hooks (churn and the like) get the world itself.
pub type Hook = Box<dyn FnMut(&mut World, u32)>;

/// Counters of the world loop.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Items delivered to nodes (datagrams, timers, TCP events).
    pub node_events: u64,
    pub stale_wakes: u64,
    pub joins: u64,
    pub leaves: u64,
}

/// The whole simulated world.
pub struct World {
    seed: u64,
    now: Timestamp,
    pub rng: Rng,
    queue: Queue,
    pub net: Network,
    pub dir: Directory,
    nodes: Vec<Node>,
    /// Each node's endpoints, `start..end` (a node's endpoints are added
    /// together, so their indices are consecutive).
    node_eps: Vec<(EpIdx, EpIdx)>,
    /// `ep_ids[i] == i`: the slices handed out for a node's endpoints (one flat
    /// array instead of a `Vec` per node, which cost a pointer chase per event).
    ep_ids: Vec<EpIdx>,
    wake: Vec<Option<Timestamp>>,
    conns: FxMap<TcpId, Conn>,
    next_tcp: TcpId,
    actions: Vec<Action>,
    delays: Vec<Duration>,
    trace: TraceHash,
    pub stats: WorldStats,
    next_subnet: u32,
    hooks: Vec<Option<Hook>>,
    pub truth: crate::truth::Truth,
    /// The node whose heap [`crate::alloc_meter`] charges (when installed).
    pub meter: Option<NodeIdx>,
    scratch: Scratch,
    pool: BufPool,
}

fn addr_key(a: &SocketAddr) -> u64 {
    match a {
        SocketAddr::V4(v) => (u32::from(*v.ip()) as u64) << 16 | v.port() as u64,
        SocketAddr::V6(v) => {
            let o = v.ip().octets();
            u64::from_le_bytes(o[8..16].try_into().unwrap_or([0; 8])) ^ v.port() as u64
        }
    }
}

impl World {
    pub fn new(seed: u64, net: NetConfig) -> Self {
        World {
            seed,
            now: Timestamp::ZERO,
            rng: Rng::new(seed),
            queue: Queue::default(),
            net: Network::new(net),
            dir: Directory::default(),
            nodes: Vec::new(),
            node_eps: Vec::new(),
            ep_ids: Vec::new(),
            wake: Vec::new(),
            conns: FxMap::default(),
            next_tcp: 1,
            actions: Vec::new(),
            delays: Vec::new(),
            trace: TraceHash::default(),
            stats: WorldStats::default(),
            next_subnet: 0x01_00_00,
            hooks: Vec::new(),
            truth: Default::default(),
            meter: None,
            scratch: Scratch::default(),
            pool: BufPool::default(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn now(&self) -> Timestamp {
        self.now
    }
    /// The determinism oracle.
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }
    pub fn deliveries(&self) -> u64 {
        self.trace.count
    }
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
    pub fn endpoints(&self, node: NodeIdx) -> &[EpIdx] {
        let (s, e) = self.node_eps[node as usize];
        &self.ep_ids[s as usize..e as usize]
    }
    /// The address of a node's first endpoint.
    pub fn addr_of(&self, node: NodeIdx) -> SocketAddr {
        self.dir.get(self.endpoints(node)[0]).addr
    }

    /// A fresh public IPv4 address in its own /24 (so subnet rules never bite).
    pub fn alloc_ip(&mut self) -> Ipv4Addr {
        loop {
            let s = self.next_subnet;
            self.next_subnet += 1;
            let host = 1 + self.rng.below(250) as u32;
            let ip = Ipv4Addr::from(s << 8 | host);
            if is_sendable(&SocketAddr::new(IpAddr::V4(ip), 6881), false) {
                return ip;
            }
        }
    }

    /// A random high port.
    pub fn alloc_port(&mut self) -> u16 {
        1024 + self.rng.below(64_000) as u16
    }

    fn push(&mut self, at: Timestamp, item: Item) {
        self.queue.push(at, item);
    }

    /// Adds a node with one endpoint per address (each with its DHT id).
    pub fn add_node(
        &mut self,
        node: Node,
        kind: Kind,
        endpoints: &[(NodeId, SocketAddr)],
    ) -> NodeIdx {
        let idx = self.nodes.len() as NodeIdx;
        let first = self.dir.entries.len() as EpIdx;
        for (local, (id, addr)) in endpoints.iter().enumerate() {
            let ep = self.dir.entries.len() as EpIdx;
            self.dir.entries.push(DirEntry {
                id: *id,
                addr: *addr,
                node: idx,
                local: local as u16,
                kind,
                alive: true,
                responsive: kind == Kind::Honest || kind == Kind::Crawler,
            });
            debug_assert!(self.dir.lookup(addr).is_none(), "address {addr} taken");
            self.dir.insert_addr(*addr, ep, idx);
            let access = self.net.draw_access(&mut self.rng);
            self.net.eps.push(EndpointNet::new(*addr, access));
            self.ep_ids.push(ep);
        }
        self.nodes.push(node);
        self.node_eps.push((first, self.dir.entries.len() as EpIdx));
        self.wake.push(None);
        idx
    }

    /// Takes a node out of the world: its endpoints stop answering.
    pub fn kill(&mut self, node: NodeIdx) {
        let (first, end) = self.node_eps[node as usize];
        for ep in first..end {
            let e = &mut self.dir.entries[ep as usize];
            if !e.alive {
                continue;
            }
            e.alive = false;
            e.responsive = false;
            self.net.eps[ep as usize].alive = false;
            self.dir.remove_visible(ep);
        }
        self.nodes[node as usize] = Node::Gone;
        self.wake[node as usize] = None;
        self.stats.leaves += 1;
    }

    /// Schedules a wake-up for a node from outside (start timers).
    pub fn wake_node_at(&mut self, node: NodeIdx, t: Timestamp) {
        self.set_wake(node, t);
    }

    fn set_wake(&mut self, node: NodeIdx, t: Timestamp) {
        let t = t.max(self.now);
        if self.wake[node as usize] == Some(t) {
            return;
        }
        self.wake[node as usize] = Some(t);
        self.push(t, Item::Wake { node });
    }

    /// Registers a world hook, first run at `at`; it reschedules itself with
    /// [`World::schedule_hook`].
    pub fn add_hook(&mut self, at: Timestamp, hook: Hook) -> u32 {
        let id = self.hooks.len() as u32;
        self.hooks.push(Some(hook));
        self.push(at, Item::Hook { id });
        id
    }
    pub fn schedule_hook(&mut self, id: u32, at: Timestamp) {
        self.push(at, Item::Hook { id });
    }

    pub fn node(&self, node: NodeIdx) -> &Node {
        &self.nodes[node as usize]
    }

    /// A boxed node as its concrete type.
    pub fn get<T: SimNode>(&self, node: NodeIdx) -> Option<&T> {
        match &self.nodes[node as usize] {
            Node::Dyn(b) => b.as_any().downcast_ref(),
            Node::Honest(h) => (h as &dyn Any).downcast_ref(),
            Node::Gone => None,
        }
    }
    pub fn get_mut<T: SimNode>(&mut self, node: NodeIdx) -> Option<&mut T> {
        match &mut self.nodes[node as usize] {
            Node::Dyn(b) => b.as_any_mut().downcast_mut(),
            Node::Honest(h) => (h as &mut dyn Any).downcast_mut(),
            Node::Gone => None,
        }
    }

    /// Runs `f` on a node with its context, then carries out what it asked for.
    /// This is how a test calls a node's API (a crawler's `find_node`, …).
    pub fn with_node<T: SimNode, R>(
        &mut self,
        node: NodeIdx,
        f: impl FnOnce(&mut T, &mut Ctx<'_>) -> R,
    ) -> R {
        let mut slot = std::mem::replace(&mut self.nodes[node as usize], Node::Gone);
        let r = {
            let n: &mut T = match &mut slot {
                Node::Dyn(b) => b.as_any_mut().downcast_mut().expect("node type"),
                Node::Honest(h) => (h as &mut dyn Any).downcast_mut().expect("node type"),
                Node::Gone => panic!("node {node} is gone"),
            };
            let mut ctx = Ctx {
                now: self.now,
                node,
                rng: &mut self.rng,
                dir: &self.dir,
                eps: Self::eps_in(&self.ep_ids, self.node_eps[node as usize]),
                actions: &mut self.actions,
                next_tcp: &mut self.next_tcp,
                sender: None,
                scratch: &mut self.scratch,
                pool: &mut self.pool,
            };
            let metered = self.meter == Some(node);
            if metered {
                crate::alloc_meter::enter();
            }
            let r = f(n, &mut ctx);
            if metered {
                crate::alloc_meter::leave();
            }
            r
        };
        self.nodes[node as usize] = slot;
        self.apply_actions(node);
        r
    }

    fn eps_in(ep_ids: &[EpIdx], (first, end): (EpIdx, EpIdx)) -> &[EpIdx] {
        &ep_ids[first as usize..end as usize]
    }

    fn dispatch(&mut self, node: NodeIdx, f: impl FnOnce(&mut dyn SimNode, &mut Ctx<'_>)) {
        self.dispatch_from(node, None, f)
    }

    fn dispatch_from(
        &mut self,
        node: NodeIdx,
        sender: Option<EpIdx>,
        f: impl FnOnce(&mut dyn SimNode, &mut Ctx<'_>),
    ) {
        let Some(n) = self.nodes[node as usize].get() else {
            self.actions.clear();
            return;
        };
        self.stats.node_events += 1;
        let mut ctx = Ctx {
            now: self.now,
            node,
            rng: &mut self.rng,
            dir: &self.dir,
            eps: Self::eps_in(&self.ep_ids, self.node_eps[node as usize]),
            actions: &mut self.actions,
            next_tcp: &mut self.next_tcp,
            sender,
            scratch: &mut self.scratch,
            pool: &mut self.pool,
        };
        let metered = self.meter == Some(node);
        if metered {
            crate::alloc_meter::enter();
        }
        f(n, &mut ctx);
        if metered {
            crate::alloc_meter::leave();
        }
        self.apply_actions(node);
    }

    fn apply_actions(&mut self, node: NodeIdx) {
        let mut actions = std::mem::take(&mut self.actions);
        for a in actions.drain(..) {
            match a {
                Action::Send {
                    local,
                    src,
                    to,
                    payload,
                } => self.send_datagram(node, local, src, to, payload),
                Action::Wake(t) => self.set_wake(node, t),
                Action::Connect {
                    tcp,
                    local,
                    tag,
                    to,
                } => self.tcp_connect(node, local, tcp, tag, to),
                Action::TcpSend { tcp, bytes } => self.tcp_send(node, tcp, bytes),
                Action::TcpClose { tcp } => self.tcp_close(node, tcp, false),
                Action::TcpReset { tcp } => self.tcp_close(node, tcp, true),
            }
        }
        self.actions = actions;
    }

    fn send_datagram(
        &mut self,
        node: NodeIdx,
        local: u16,
        src: Option<SocketAddr>,
        to: SocketAddr,
        payload: Payload,
    ) {
        let (first, end) = self.node_eps[node as usize];
        let a = first + local as EpIdx;
        if a >= end {
            self.pool.recycle(payload);
            return;
        }
        let (src, from_ep) = match src {
            None => (self.dir.entries[a as usize].addr, Some(a)),
            Some(s) => (s, self.dir.lookup(&s)),
        };
        let dest = self.dir.lookup_with_node(&to);
        let b = dest.map(|(ep, _)| ep);
        let mut delays = std::mem::take(&mut self.delays);
        if self
            .net
            .route(
                self.now,
                a as usize,
                src,
                b.map(|b| b as usize),
                payload.as_slice().len(),
                &mut self.rng,
                &mut delays,
            )
            .is_ok()
        {
            if let (Some((b, bn)), Some((&last, copies))) = (dest, delays.split_last()) {
                // Duplicates get copies; the last delivery takes the original.
                for d in copies {
                    let payload = payload.duplicate();
                    self.push(
                        self.now.add(*d),
                        Item::Datagram {
                            ep: b,
                            node: bn,
                            from: src,
                            from_ep,
                            payload,
                        },
                    );
                }
                self.push(
                    self.now.add(last),
                    Item::Datagram {
                        ep: b,
                        node: bn,
                        from: src,
                        from_ep,
                        payload,
                    },
                );
                self.delays = delays;
                return;
            }
        }
        self.pool.recycle(payload);
        self.delays = delays;
    }

    // ---- TCP ----

    fn tcp_connect(&mut self, node: NodeIdx, local: u16, tcp: TcpId, tag: u64, to: SocketAddr) {
        self.net.stats.tcp_connects += 1;
        let a = self.endpoints(node)[local as usize];
        let b = self.dir.lookup(&to);
        let end_a = TcpEnd { node, ep: a, tag };
        let mut conn = Conn {
            ends: [end_a, end_a],
            established: false,
            done: [false; 2],
            last: [self.now; 2],
        };
        let reach = b.map(|b| self.net.reachable(a as usize, b as usize, self.now));
        match (b, reach) {
            (Some(b), Some(Ok(()))) => {
                let bn = self.dir.entries[b as usize].node;
                conn.ends[1] = TcpEnd {
                    node: bn,
                    ep: b,
                    tag: tcp,
                };
                let d = self.net.delay(a as usize, b as usize, &mut self.rng);
                self.conns.insert(tcp, conn);
                self.push(self.now.add(d), Item::Syn { tcp });
            }
            _ => {
                // No host, dead, partitioned or NAT-ed: the SYN vanishes.
                self.net.stats.tcp_blackholed += 1;
                self.conns.insert(tcp, conn);
                let t = self.now.add(self.net.cfg.tcp_connect_timeout);
                self.push(
                    t,
                    Item::ConnectFailed {
                        tcp,
                        reason: CloseReason::ConnectTimedOut,
                    },
                );
            }
        }
    }

    fn side_of(conn: &Conn, node: NodeIdx) -> Option<usize> {
        if conn.ends[0].node == node {
            Some(0)
        } else if conn.ends[1].node == node {
            Some(1)
        } else {
            None
        }
    }

    /// Schedules a delivery towards side `to` after everything already in flight.
    fn tcp_schedule(&mut self, tcp: TcpId, to: usize, item: Item, extra: Duration) {
        let Some(c) = self.conns.get(&tcp) else {
            return;
        };
        let (a, b) = (c.ends[1 - to].ep as usize, c.ends[to].ep as usize);
        let d = self.net.delay(a, b, &mut self.rng) + extra;
        let c = self.conns.get_mut(&tcp).expect("conn");
        let at = self.now.add(d).max(c.last[to]);
        c.last[to] = at;
        self.push(at, item);
    }

    fn tcp_send(&mut self, node: NodeIdx, tcp: TcpId, bytes: Bytes) {
        let Some(c) = self.conns.get(&tcp) else {
            return;
        };
        let Some(s) = Self::side_of(c, node) else {
            return;
        };
        if !c.established || c.done[s] || c.done[1 - s] {
            return;
        }
        let to = 1 - s;
        // Re-split the bytes at random points.
        let mut rest = bytes;
        while !rest.is_empty() {
            // Segments of at most one MSS, cut at random points.
            let max = rest.len().min(1460);
            let n = if self.rng.chance(0.3) {
                max
            } else {
                1 + self.rng.index(max)
            };
            let chunk = rest.split_to(n);
            self.net.stats.tcp_segments += 1;
            let extra = if self.rng.chance(self.net.cfg.tcp_loss) {
                self.net.cfg.tcp_rto
            } else {
                Duration::ZERO
            };
            self.tcp_schedule(
                tcp,
                to,
                Item::Data {
                    tcp,
                    side: to as u8,
                    bytes: chunk,
                },
                extra,
            );
        }
    }

    fn tcp_close(&mut self, node: NodeIdx, tcp: TcpId, reset: bool) {
        let Some(c) = self.conns.get_mut(&tcp) else {
            return;
        };
        let Some(s) = Self::side_of(c, node) else {
            return;
        };
        if c.done[s] {
            return;
        }
        c.done[s] = true;
        let to = 1 - s;
        if !c.established || c.done[to] {
            // Closing a pending connect, or the other side already went away.
            if c.done[0] && c.done[1] || !c.established {
                self.conns.remove(&tcp);
            }
            return;
        }
        if reset {
            self.net.stats.tcp_resets += 1;
            let (a, b) = (c.ends[s].ep as usize, c.ends[to].ep as usize);
            let d = self.net.delay(a, b, &mut self.rng);
            self.push(
                self.now.add(d),
                Item::Rst {
                    tcp,
                    side: to as u8,
                },
            );
        } else {
            self.tcp_schedule(
                tcp,
                to,
                Item::Fin {
                    tcp,
                    side: to as u8,
                },
                Duration::ZERO,
            );
        }
    }

    /// Resets a connection from the network (both ends see a reset).
    pub fn reset_tcp(&mut self, tcp: TcpId) {
        if let Some(c) = self.conns.get(&tcp) {
            if !c.established {
                return;
            }
            let done = c.done;
            self.net.stats.tcp_resets += 1;
            for side in 0..2u8 {
                if !done[side as usize] {
                    self.push(self.now, Item::Rst { tcp, side });
                }
            }
        }
    }

    /// Open connections (for tests and the flood bound).
    pub fn tcp_open(&self) -> usize {
        self.conns.len()
    }

    fn tcp_event(&mut self, tcp: TcpId, side: usize) -> Option<TcpEnd> {
        self.conns.get(&tcp).map(|c| c.ends[side])
    }

    fn finish_side(&mut self, tcp: TcpId, side: usize) {
        if let Some(c) = self.conns.get_mut(&tcp) {
            c.done[side] = true;
            if c.done[0] && c.done[1] {
                self.conns.remove(&tcp);
            }
        }
    }

    // ---- the loop ----

    fn deliver(&mut self, item: Item) {
        match item {
            Item::Datagram {
                ep,
                from,
                from_ep,
                payload,
                ..
            } => {
                let e = &self.dir.entries[ep as usize];
                if !e.alive {
                    self.net.stats.dropped_dead += 1;
                    self.pool.recycle(payload);
                    return;
                }
                self.net.stats.datagrams_delivered += 1;
                let (node, local, to) = (e.node, e.local, e.addr);
                let bytes = payload.as_slice();
                self.trace
                    .record(self.now.as_nanos(), addr_key(&from), addr_key(&to), bytes);
                self.dispatch_from(node, from_ep, |n, ctx| {
                    n.on_datagram(ctx, local, from, bytes)
                });
                self.pool.recycle(payload);
            }
            Item::Wake { node } => {
                if self.wake[node as usize] != Some(self.now) {
                    self.stats.stale_wakes += 1;
                    return;
                }
                self.wake[node as usize] = None;
                self.trace.record(self.now.as_nanos(), 0, node as u64, b"w");
                self.dispatch(node, |n, ctx| n.on_wake(ctx));
            }
            Item::Syn { tcp } => {
                let Some(c) = self.conns.get(&tcp) else {
                    return;
                };
                let (a, b) = (c.ends[0], c.ends[1]);
                self.trace.record(self.now.as_nanos(), tcp, 1, b"syn");
                let accepts = self.dir.entries[b.ep as usize].alive
                    && self.nodes[b.node as usize]
                        .get()
                        .is_some_and(|n| n.accepts_tcp());
                let d = self.net.delay(b.ep as usize, a.ep as usize, &mut self.rng);
                if accepts {
                    let c = self.conns.get_mut(&tcp).expect("conn");
                    c.established = true;
                    c.last = [self.now; 2];
                    self.dispatch(b.node, |n, ctx| n.on_tcp_accepted(ctx, tcp));
                    self.push(self.now.add(d), Item::Established { tcp });
                } else {
                    self.net.stats.tcp_refused += 1;
                    self.push(
                        self.now.add(d),
                        Item::ConnectFailed {
                            tcp,
                            reason: CloseReason::Refused,
                        },
                    );
                }
            }
            Item::Established { tcp } => {
                let Some(end) = self.tcp_event(tcp, 0) else {
                    return;
                };
                if self.conns.get(&tcp).is_some_and(|c| c.done[0]) {
                    return;
                }
                self.trace.record(self.now.as_nanos(), tcp, 2, b"est");
                self.dispatch(end.node, |n, ctx| n.on_tcp_connected(ctx, tcp, end.tag));
            }
            Item::ConnectFailed { tcp, reason } => {
                let Some(end) = self.tcp_event(tcp, 0) else {
                    return;
                };
                let pending = self.conns.get(&tcp).is_some_and(|c| !c.done[0]);
                self.conns.remove(&tcp);
                if !pending {
                    return;
                }
                self.trace.record(self.now.as_nanos(), tcp, 3, b"fail");
                self.dispatch(end.node, |n, ctx| {
                    n.on_tcp_closed(ctx, tcp, end.tag, reason)
                });
            }
            Item::Data { tcp, side, bytes } => {
                let s = side as usize;
                let Some(end) = self.tcp_event(tcp, s) else {
                    return;
                };
                if self.conns.get(&tcp).is_some_and(|c| c.done[s]) {
                    return;
                }
                self.trace
                    .record(self.now.as_nanos(), tcp, 4 + side as u64, &bytes);
                self.dispatch(end.node, |n, ctx| n.on_tcp_data(ctx, tcp, end.tag, &bytes));
            }
            Item::Fin { tcp, side } => self.deliver_close(tcp, side as usize, CloseReason::Eof),
            Item::Rst { tcp, side } => self.deliver_close(tcp, side as usize, CloseReason::Reset),
            Item::Hook { id } => {
                if let Some(mut h) = self.hooks.get_mut(id as usize).and_then(|h| h.take()) {
                    self.stats.node_events += 1;
                    h(self, id);
                    self.hooks[id as usize] = Some(h);
                }
            }
            Item::Free => {}
        }
    }

    fn deliver_close(&mut self, tcp: TcpId, s: usize, reason: CloseReason) {
        let Some(end) = self.tcp_event(tcp, s) else {
            return;
        };
        if self.conns.get(&tcp).is_some_and(|c| c.done[s]) {
            return;
        }
        self.finish_side(tcp, s);
        if reason == CloseReason::Reset {
            // A reset ends both directions at once.
            self.finish_side(tcp, 1 - s);
        }
        self.trace
            .record(self.now.as_nanos(), tcp, 6 + s as u64, &[reason as u8]);
        self.dispatch(end.node, |n, ctx| {
            n.on_tcp_closed(ctx, tcp, end.tag, reason)
        });
    }

    /// Delivers the next item. False when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((at, item)) = self.queue.pop() else {
            return false;
        };
        debug_assert!(at >= self.now, "time went backwards");
        self.now = at.max(self.now);
        self.queue.prefetch_next();
        self.deliver(item);
        // The next item is in the cache by now: start loading what its delivery
        // reads: the endpoint, the bytes and the node, and the network state of
        // both ends (a reply is routed between them).
        if let Some(Item::Datagram {
            ep,
            node,
            payload,
            from_ep,
            ..
        }) = self.queue.next_ready()
        {
            if let Some(e) = self.dir.entries.get(*ep as usize) {
                prefetch(e);
            }
            prefetch_bytes(payload.as_slice(), 256);
            if let Some(n) = self.nodes.get(*node as usize) {
                prefetch(n);
            }
            for e in [Some(*ep), *from_ep].into_iter().flatten() {
                if let Some(n) = self.net.eps.get(e as usize) {
                    prefetch(n);
                }
            }
        } else if let Some(Item::Wake { node }) = self.queue.next_ready() {
            if let (Some(w), Some(n)) = (
                self.wake.get(*node as usize),
                self.nodes.get(*node as usize),
            ) {
                prefetch(w);
                prefetch(n);
            }
        }
        true
    }

    /// The time of the next scheduled item.
    pub fn next_at(&self) -> Option<Timestamp> {
        self.queue.peek_at()
    }

    /// Delivers everything scheduled up to `t` (at most `max_steps` items), then
    /// sets the clock to `t`. Returns the steps taken; `Err` if the cap was hit.
    pub fn run_until(&mut self, t: Timestamp, max_steps: u64) -> Result<u64, Stuck> {
        let mut steps = 0;
        while self.queue.peek_at_mut().is_some_and(|a| a <= t) {
            if steps >= max_steps {
                return Err(self.stuck(steps));
            }
            self.step();
            steps += 1;
        }
        self.now = self.now.max(t);
        Ok(steps)
    }

    pub fn run_for(&mut self, d: Duration, max_steps: u64) -> Result<u64, Stuck> {
        let t = self.now.add(d);
        self.run_until(t, max_steps)
    }

    /// Steps until `done(world)` holds, at most `max_steps` items.
    pub fn drive_until(
        &mut self,
        mut done: impl FnMut(&mut World) -> bool,
        max_steps: u64,
    ) -> Result<u64, Stuck> {
        let mut steps = 0;
        loop {
            if done(self) {
                return Ok(steps);
            }
            if steps >= max_steps || !self.step() {
                return Err(self.stuck(steps));
            }
            steps += 1;
        }
    }

    fn stuck(&self, steps: u64) -> Stuck {
        Stuck {
            seed: self.seed,
            steps,
            now: self.now,
            queue_empty: self.queue.is_empty(),
        }
    }
}
