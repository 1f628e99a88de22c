//! A receiver that can be bound after the server starts. A store needs its transport to
//! start and the server needs the store's receiver to deliver to; with a slot the server
//! starts first, the store next, and the store's receiver goes into the slot.

use std::sync::{Arc, RwLock};

use metrics::counter;
use tessera_proto::serverpb::RaftMessage;
use tessera_router::{RaftReceiver, SnapshotChunks};

/// Delivers to the receiver it holds; while empty, it drops messages (counted as
/// `tessera_transport_messages_unbound_total`) and refuses snapshots, as a store that is
/// not running would.
#[derive(Default)]
pub struct ReceiverSlot {
    receiver: RwLock<Option<Arc<dyn RaftReceiver>>>,
}

impl std::fmt::Debug for ReceiverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverSlot").field("bound", &self.current().is_some()).finish()
    }
}

impl ReceiverSlot {
    pub fn new() -> Arc<ReceiverSlot> {
        Arc::new(ReceiverSlot::default())
    }

    /// Binds `receiver`, replacing any other.
    pub fn set(&self, receiver: Arc<dyn RaftReceiver>) {
        *self.receiver.write().unwrap_or_else(|e| e.into_inner()) = Some(receiver);
    }

    /// Unbinds the receiver (its store stopped).
    pub fn clear(&self) {
        *self.receiver.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn current(&self) -> Option<Arc<dyn RaftReceiver>> {
        self.receiver.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl RaftReceiver for ReceiverSlot {
    fn receive(&self, msg: RaftMessage) {
        match self.current() {
            Some(receiver) => receiver.receive(msg),
            None => counter!("tessera_transport_messages_unbound_total").increment(1),
        }
    }

    fn receive_batch(&self, msgs: Vec<RaftMessage>) {
        match self.current() {
            Some(receiver) => receiver.receive_batch(msgs),
            None => counter!("tessera_transport_messages_unbound_total").increment(msgs.len() as u64),
        }
    }

    fn receive_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), String> {
        match self.current() {
            Some(receiver) => receiver.receive_snapshot(msg, chunks),
            None => Err("no store is bound to this transport server yet".into()),
        }
    }
}
