//! Where the other replicas of a region live, for addressing messages to them.

use tessera_proto::storepb::{Peer as PeerMeta, Region};

/// The most peers a cache remembers from messages beyond the region's members. A peer hears
/// from replicas its region does not list yet (one created from a message knows no region
/// until its snapshot; members added by a change it has not applied), and from removed
/// ones; the oldest of those go first, the members never.
pub(crate) const LEARNED_PEERS_MAX: usize = 16;

/// A region's peers, members first, then peers learned from messages, oldest first.
///
/// A region has a handful of replicas, and every message in or out looks one up: a search
/// along a short vector beats hashing, and keeps the cache bounded.
#[derive(Debug, Default)]
pub(crate) struct PeerCache {
    peers: Vec<PeerMeta>,
    members_len: usize,
}

impl PeerCache {
    pub fn new(region: &Region) -> PeerCache {
        let mut cache = PeerCache::default();
        cache.set_members(region);
        cache
    }

    pub fn get(&self, peer_id: u64) -> Option<PeerMeta> {
        self.peers.iter().find(|p| p.id == peer_id).copied()
    }

    /// Every peer the cache knows, members first.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.peers.iter().map(|p| p.id)
    }

    /// The region's members replace what the cache knew of them. Peers that are not
    /// members stay as learned ones, former members as the newest: a removed peer may
    /// still be told of its removal.
    pub fn set_members(&mut self, region: &Region) {
        let mut learned = self.peers.split_off(self.members_len);
        learned.append(&mut self.peers);
        learned.retain(|p| region.peers.iter().all(|m| m.id != p.id));
        let forgotten = learned.len().saturating_sub(LEARNED_PEERS_MAX);
        self.peers.extend_from_slice(&region.peers);
        self.members_len = self.peers.len();
        self.peers.extend(learned.into_iter().skip(forgotten));
        if forgotten > 0 {
            metrics::counter!("tessera_store_learned_peers_forgotten_total").increment(forgotten as u64);
        }
    }

    /// What a message said of its sender: it replaces what the cache knew of that peer, or
    /// is learned, forgetting the oldest learned peer beyond `LEARNED_PEERS_MAX`.
    pub fn learn(&mut self, peer: PeerMeta) {
        if let Some(known) = self.peers.iter_mut().find(|p| p.id == peer.id) {
            *known = peer;
            return;
        }
        if self.peers.len() - self.members_len >= LEARNED_PEERS_MAX {
            self.peers.remove(self.members_len);
            metrics::counter!("tessera_store_learned_peers_forgotten_total").increment(1);
        }
        self.peers.push(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> PeerMeta {
        PeerMeta { id, store_id, role: 0 }
    }

    fn region(peers: &[PeerMeta]) -> Region {
        Region { id: 1, peers: peers.to_vec(), ..Default::default() }
    }

    #[test]
    fn members_and_learned_peers_are_found_and_messages_update_them() {
        let mut cache = PeerCache::new(&region(&[peer(1, 1), peer(2, 2)]));
        assert_eq!(cache.get(2), Some(peer(2, 2)));
        assert_eq!(cache.get(3), None);
        cache.learn(peer(3, 3));
        assert_eq!(cache.get(3), Some(peer(3, 3)));
        // A message tells where a peer lives now.
        cache.learn(peer(2, 7));
        assert_eq!(cache.get(2), Some(peer(2, 7)));
        // The region's list wins over what messages said of its members, and keeps the
        // learned peers that are not members.
        cache.set_members(&region(&[peer(1, 1), peer(2, 2), peer(4, 4)]));
        assert_eq!(
            (cache.get(2), cache.get(3), cache.get(4)),
            (Some(peer(2, 2)), Some(peer(3, 3)), Some(peer(4, 4)))
        );
        // A learned peer that became a member is held once, as a member; former members
        // stay, learned.
        cache.set_members(&region(&[peer(1, 1), peer(3, 3)]));
        assert_eq!(cache.peers, vec![peer(1, 1), peer(3, 3), peer(2, 2), peer(4, 4)]);
        assert_eq!(cache.members_len, 2);
    }

    #[test]
    fn learned_peers_are_bounded_and_members_never_forgotten() {
        let mut cache = PeerCache::new(&region(&[peer(1, 1), peer(2, 2), peer(3, 3)]));
        for id in 100..100 + LEARNED_PEERS_MAX as u64 + 5 {
            cache.learn(peer(id, id));
        }
        assert_eq!(cache.peers.len(), 3 + LEARNED_PEERS_MAX);
        for id in 1..=3 {
            assert_eq!(cache.get(id), Some(peer(id, id)), "member {id} stays");
        }
        for id in 100..105 {
            assert_eq!(cache.get(id), None, "the oldest learned peer {id} went first");
        }
        assert!(cache.get(100 + LEARNED_PEERS_MAX as u64 + 4).is_some());
    }
}
