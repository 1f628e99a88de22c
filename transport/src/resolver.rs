//! Where other stores listen. The transport asks on every connection attempt, so a store
//! that moved is found again after its old connection fails.

use std::collections::HashMap;
use std::sync::RwLock;

/// Maps a store id to the address (`host:port`) of its transport server.
pub trait StoreResolver: Send + Sync + 'static {
    /// The address of `store_id`, or None when it is not known (the store is then
    /// unreachable until it is).
    fn resolve(&self, store_id: u64) -> Option<String>;
}

/// A fixed table of addresses that can be edited at run time: for tests and for clusters
/// configured by hand, until addresses come from PD.
#[derive(Debug, Default)]
pub struct StaticResolver {
    addresses: RwLock<HashMap<u64, String>>,
}

impl StaticResolver {
    pub fn new(addresses: impl IntoIterator<Item = (u64, String)>) -> StaticResolver {
        StaticResolver { addresses: RwLock::new(addresses.into_iter().collect()) }
    }

    /// Sets (or replaces) the address of `store_id`.
    pub fn insert(&self, store_id: u64, address: impl Into<String>) {
        self.addresses.write().unwrap_or_else(|e| e.into_inner()).insert(store_id, address.into());
    }

    /// Forgets the address of `store_id`.
    pub fn remove(&self, store_id: u64) {
        self.addresses.write().unwrap_or_else(|e| e.into_inner()).remove(&store_id);
    }
}

impl StoreResolver for StaticResolver {
    fn resolve(&self, store_id: u64) -> Option<String> {
        self.addresses.read().unwrap_or_else(|e| e.into_inner()).get(&store_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_can_be_set_replaced_and_forgotten() {
        let resolver = StaticResolver::new([(1, "127.0.0.1:1".to_string())]);
        assert_eq!(resolver.resolve(1).as_deref(), Some("127.0.0.1:1"));
        assert_eq!(resolver.resolve(2), None);
        resolver.insert(1, "127.0.0.1:2");
        assert_eq!(resolver.resolve(1).as_deref(), Some("127.0.0.1:2"));
        resolver.remove(1);
        assert_eq!(resolver.resolve(1), None);
    }
}
