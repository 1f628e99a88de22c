//! The limits of a batch system. Every one of them bounds a queue or a batch, so none of
//! them may be zero.

use thiserror::Error;

/// The sizes of a batch system: how many pollers, how much work per round, how much may
/// queue for one FSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Number of poller threads. Each poller handles its own rounds, so this is the number
    /// of FSMs that can make progress at the same time; more pollers than cores only adds
    /// context switches.
    pub pool_size: usize,
    /// Most FSMs (control included) one poller takes into one round. The round ends with one
    /// hook call, where the store writes and syncs once for every peer of the round, so a
    /// bigger batch means fewer fsyncs under load; a smaller one means a lower latency for
    /// the first FSM of the round, which waits for all the others.
    pub batch_fsms_max: usize,
    /// Most messages one FSM handles in one round. It keeps a busy FSM from starving the
    /// other FSMs of its round; an FSM with messages left is queued again at the back.
    pub messages_per_fsm_max: usize,
    /// Capacity of each FSM's mailbox. When it is full a send fails with `Full` and the
    /// caller answers `ServerIsBusy`, so an overloaded region pushes back on its clients
    /// instead of growing memory.
    pub mailbox_len_max: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { pool_size: 2, batch_fsms_max: 256, messages_per_fsm_max: 256, mailbox_len_max: 4096 }
    }
}

/// A batch configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A limit is zero: no poller, no FSM per round, no message per round or no room in a
    /// mailbox would each stop the system from ever handling anything.
    #[error("batch config field `{field}` must be at least 1")]
    Zero { field: &'static str },
}

impl BatchConfig {
    /// Checks that every limit allows some progress.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("pool_size", self.pool_size),
            ("batch_fsms_max", self.batch_fsms_max),
            ("messages_per_fsm_max", self.messages_per_fsm_max),
            ("mailbox_len_max", self.mailbox_len_max),
        ];
        match fields.into_iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(ConfigError::Zero { field }),
            None => Ok(()),
        }
    }
}
