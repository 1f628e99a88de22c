//! Helpers shared by the integration tests that drive groups over `MemStorage`.

use tessera_raft::{MemStorage, Ready};

/// Step 2 of the Ready contract over `MemStorage`: the snapshot, then the entries, then the
/// hard state, in one write.
pub fn persist_ready(storage: &MemStorage, rd: &Ready) {
    let mut store = storage.wl();
    if let Some(snapshot) = &rd.snapshot {
        store.apply_snapshot(snapshot.clone()).unwrap();
    }
    store.append(&rd.entries).unwrap();
    if let Some(hard_state) = &rd.hard_state {
        store.set_hard_state(*hard_state);
    }
}
