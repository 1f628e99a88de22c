//! The client's region cache: which region holds a key, and which store leads it.

use std::collections::BTreeMap;

use tessera_proto::storepb::Region;

/// A region as the client last heard of it, and the store of its leader if known.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CachedRegion {
    pub region: Region,
    pub leader_store_id: Option<u64>,
}

/// Cached regions by start key. The ranges never overlap: caching a region drops the
/// entries it overlaps.
#[derive(Debug, Default)]
pub(crate) struct RegionCache {
    by_start_key: BTreeMap<Vec<u8>, CachedRegion>,
}

impl RegionCache {
    /// The cached region whose range holds `key`.
    pub fn find(&self, key: &[u8]) -> Option<CachedRegion> {
        let (_, cached) = self
            .by_start_key
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()?;
        let end_key = &cached.region.end_key;
        (end_key.is_empty() || key < end_key.as_slice()).then(|| cached.clone())
    }

    /// Caches `region`, replacing the entries it overlaps, unless one of them is newer (a
    /// higher epoch version: a later split or merge), in which case the answer that brought
    /// `region` was stale and is ignored. A region of the same version keeps the leader
    /// already known unless a leader comes with it.
    pub fn insert(&mut self, region: Region, leader_store_id: Option<u64>) {
        let version = epoch_version(&region);
        let overlapping: Vec<Vec<u8>> = self
            .by_start_key
            .iter()
            .filter(|(_, cached)| overlaps(&cached.region, &region))
            .map(|(start_key, _)| start_key.clone())
            .collect();
        let mut known_leader = None;
        for start_key in &overlapping {
            let cached = &self.by_start_key[start_key];
            if epoch_version(&cached.region) > version {
                return;
            }
            if cached.region.id == region.id && cached.region.epoch == region.epoch {
                known_leader = cached.leader_store_id;
            }
        }
        for start_key in overlapping {
            self.by_start_key.remove(&start_key);
        }
        let leader_store_id = leader_store_id.or(known_leader);
        self.by_start_key.insert(region.start_key.clone(), CachedRegion { region, leader_store_id });
    }

    pub fn set_leader(&mut self, region_id: u64, leader_store_id: Option<u64>) {
        if let Some(cached) = self.by_start_key.values_mut().find(|cached| cached.region.id == region_id) {
            cached.leader_store_id = leader_store_id;
        }
    }

    pub fn remove(&mut self, region_id: u64) {
        self.by_start_key.retain(|_, cached| cached.region.id != region_id);
    }
}

/// `(version, conf_ver)`: a region's range changes bump `version`, its membership
/// `conf_ver`; either makes an older answer stale.
fn epoch_version(region: &Region) -> (u64, u64) {
    region.epoch.as_ref().map_or((0, 0), |epoch| (epoch.version, epoch.conf_ver))
}

fn overlaps(a: &Region, b: &Region) -> bool {
    let starts_before_end = |start: &[u8], end: &[u8]| end.is_empty() || start < end;
    starts_before_end(&a.start_key, &b.end_key) && starts_before_end(&b.start_key, &a.end_key)
}

#[cfg(test)]
mod tests {
    use tessera_proto::storepb::RegionEpoch;

    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Some(RegionEpoch { conf_ver: 1, version }),
            peers: Vec::new(),
        }
    }

    #[test]
    fn finds_the_region_holding_a_key_including_open_ends() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, b"", b"m", 1), Some(1));
        cache.insert(region(2, b"m", b"", 1), None);
        assert_eq!(cache.find(b"").map(|c| c.region.id), Some(1));
        assert_eq!(cache.find(b"l").map(|c| (c.region.id, c.leader_store_id)), Some((1, Some(1))));
        assert_eq!(cache.find(b"m").map(|c| c.region.id), Some(2), "the end key belongs to the next region");
        assert_eq!(cache.find(b"\xff\xff").map(|c| c.region.id), Some(2));
        cache.remove(1);
        assert_eq!(cache.find(b"a"), None);
    }

    #[test]
    fn a_split_replaces_the_old_range_and_a_stale_answer_does_not_undo_it() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, b"", b"", 1), Some(3));
        // Region 1 split at "k": the new shapes replace the old one.
        cache.insert(region(1, b"", b"k", 2), None);
        assert_eq!(cache.find(b"z"), None, "the old whole-range entry is gone");
        cache.insert(region(2, b"k", b"", 2), Some(2));
        assert_eq!(cache.find(b"z").map(|c| c.region.id), Some(2));
        // A late answer with the pre-split region is older than what is cached: ignored.
        cache.insert(region(1, b"", b"", 1), Some(1));
        assert_eq!(cache.find(b"z").map(|c| c.region.id), Some(2));
        assert_eq!(cache.find(b"a").map(|c| c.region.epoch.unwrap().version), Some(2));
    }

    #[test]
    fn the_same_region_again_keeps_its_known_leader_unless_told_another() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, b"", b"", 1), Some(2));
        cache.insert(region(1, b"", b"", 1), None);
        assert_eq!(cache.find(b"a").unwrap().leader_store_id, Some(2));
        cache.set_leader(1, Some(3));
        assert_eq!(cache.find(b"a").unwrap().leader_store_id, Some(3));
        cache.set_leader(1, None);
        assert_eq!(cache.find(b"a").unwrap().leader_store_id, None);
    }
}
