//! Ground truth: every torrent in the world, its info dict and who holds it.

use magnetar_core::InfoHash;
use magnetar_core::Rng;
use sha1::{Digest, Sha1};

use crate::util::{bencode, FxMap};
use crate::world::NodeIdx;

/// One torrent of the world.
#[derive(Clone, Debug)]
pub struct Torrent {
    pub ih: InfoHash,
    /// Drives the info dict's name and piece hashes.
    pub seed: u64,
    /// Piece hashes in the info dict (20 bytes each): sets the metadata size.
    pub pieces: u32,
    /// Client nodes that hold (seed) it.
    pub holders: Vec<NodeIdx>,
}

impl Torrent {
    pub fn info_dict(&self) -> Vec<u8> {
        info_dict(self.seed, self.pieces)
    }
}

/// A valid single-file info dict: `length`, `name`, `piece length`, `pieces`.
pub fn info_dict(seed: u64, pieces: u32) -> Vec<u8> {
    const PIECE_LEN: i64 = 1 << 18;
    let mut rng = Rng::new(seed);
    let mut d = Vec::with_capacity(96 + pieces as usize * 20);
    d.push(b'd');
    bencode::bytes(&mut d, b"length");
    bencode::int(
        &mut d,
        pieces as i64 * PIECE_LEN - rng.below(PIECE_LEN as u64) as i64,
    );
    bencode::bytes(&mut d, b"name");
    bencode::bytes(&mut d, format!("sim-torrent-{seed:016x}.bin").as_bytes());
    bencode::bytes(&mut d, b"piece length");
    bencode::int(&mut d, PIECE_LEN);
    bencode::bytes(&mut d, b"pieces");
    let mut p = vec![0u8; pieces as usize * 20];
    rng.fill(&mut p);
    bencode::bytes(&mut d, &p);
    d.push(b'e');
    d
}

pub fn sha1(b: &[u8]) -> [u8; 20] {
    Sha1::digest(b).into()
}

/// Everything the world knows that nodes do not.
#[derive(Default)]
pub struct Truth {
    pub torrents: Vec<Torrent>,
    index: FxMap<InfoHash, u32>,
}

impl Truth {
    /// Creates a torrent with `pieces` piece hashes; returns its index.
    pub fn add_torrent(&mut self, rng: &mut Rng, pieces: u32) -> u32 {
        let seed = rng.next_u64();
        let ih = InfoHash(sha1(&info_dict(seed, pieces)));
        let i = self.torrents.len() as u32;
        self.torrents.push(Torrent {
            ih,
            seed,
            pieces: pieces.max(1),
            holders: Vec::new(),
        });
        self.index.insert(ih, i);
        i
    }
    pub fn find(&self, ih: &InfoHash) -> Option<&Torrent> {
        self.index.get(ih).map(|&i| &self.torrents[i as usize])
    }
    pub fn index_of(&self, ih: &InfoHash) -> Option<u32> {
        self.index.get(ih).copied()
    }
    pub fn len(&self) -> usize {
        self.torrents.len()
    }
    pub fn is_empty(&self) -> bool {
        self.torrents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_dict_is_deterministic_and_hashes_to_the_infohash() {
        let mut t = Truth::default();
        let mut rng = Rng::new(5);
        let i = t.add_torrent(&mut rng, 3);
        let tor = &t.torrents[i as usize];
        assert_eq!(sha1(&tor.info_dict()), tor.ih.0);
        assert_eq!(t.find(&tor.ih).map(|x| x.seed), Some(tor.seed));
        let d = info_dict(1, 2);
        assert!(d.starts_with(b"d6:lengthi"));
        assert_eq!(d, info_dict(1, 2));
        // 2 pieces = 40 bytes of hashes.
        assert!(d.windows(9).any(|w| w == b"6:pieces4"));
    }
}
