//! Deterministic simulation of whole Mainline DHT networks in virtual time, for
//! magnetar's end-to-end tests and its discovery benchmark (the `sim` binary).
//!
//! - [`world`]: virtual time, the one seeded RNG, the (time, sequence) delivery
//!   queue, the node trait, the TCP model and the bounded drive loop.
//! - [`net`]: link model (latency, jitter, loss, bursts, duplication, reordering,
//!   MTU, partitions, NAT, packet budgets).
//! - [`honest`]: lightweight honest DHT nodes (BEP 5, 43, 51).
//! - [`adversary`]: garbage senders, id spoofers, floods, and an honest probe.
//! - [`baseline`]: magnetico v0.12 and bitmagnet models for the comparison.
//! - [`client`], [`seeder`]: BitTorrent clients that announce and serve metadata.
//! - [`crawler_node`]: a magnetar `Crawler` driven like a runtime would.
//! - [`scenario`]: world builders and ground-truth helpers.
//! - [`truth`]: torrents, their info dicts and holders.
//! - [`alloc_meter`]: heap metering of one node (the `sim` binary's memory figure).
//! - [`utp_link`]: two uTP endpoints on a lossy, reordering, duplicating link.
//! - [`nat`]: clients behind NATs or uTP-only, and metadata success by class.
//!
//! Everything is driven by `World::rng`: two runs with one seed produce the same
//! [`world::World::trace_hash`]. Tests read their seed with
//! [`util::seed_from_env`], so `SIM_SEED=n` replays a failure.

pub mod adversary;
pub mod alloc_meter;
pub mod baseline;
pub mod client;
pub mod crawler_node;
pub mod honest;
pub mod nat;
pub mod net;
pub mod scenario;
pub mod seeder;
pub mod soak;
pub mod truth;
pub mod util;
pub mod utp_link;
pub mod world;

pub use crawler_node::{Acquire, CrawlerNode, RuntimePolicy, PRODUCTION_POLICY};
pub use net::{GilbertElliott, NetConfig};
pub use scenario::HonestSpec;
pub use world::{Ctx, Kind, Node, NodeIdx, SimNode, Stuck, World};
