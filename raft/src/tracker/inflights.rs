use std::collections::VecDeque;

/// The largest buffer an emptied window keeps (16 bytes a message).
const MESSAGES_CAPACITY_KEPT_MAX: usize = 16;

/// The append messages sent to one follower and not yet acknowledged, as (last index of the
/// message, payload bytes). This is the leader's flow control: when the window is full by
/// count or by bytes, no more appends go to that follower until acknowledgements free it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    messages: VecDeque<(u64, u64)>,
    bytes: u64,
    count_max: usize,
    /// Zero means no byte limit.
    bytes_max: u64,
}

impl Inflights {
    pub fn new(count_max: usize, bytes_max: u64) -> Self {
        assert!(count_max > 0, "invariant: an in-flight window holds at least one message");
        Inflights { messages: VecDeque::new(), bytes: 0, count_max, bytes_max }
    }

    /// Records an append whose last entry is `last_index`. Indexes must grow.
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(!self.full(), "invariant: no append is sent through a full in-flight window");
        if let Some(&(prev, _)) = self.messages.back() {
            assert!(prev < last_index, "invariant: in-flight indexes grow ({prev} then {last_index})");
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at most `index`: the follower acknowledged it.
    pub fn free_le(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.messages.front() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
        if self.messages.is_empty() && self.messages.capacity() > MESSAGES_CAPACITY_KEPT_MAX {
            // Release the buffer of a follower that caught up; thousands of idle groups
            // should not each hold a full window of memory. A small buffer is kept, so
            // that steady traffic of a message at a time does not allocate.
            self.messages = VecDeque::new();
        }
    }

    pub fn full(&self) -> bool {
        self.messages.len() >= self.count_max || (self.bytes_max != 0 && self.bytes >= self.bytes_max)
    }

    pub fn count(&self) -> usize {
        self.messages.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn reset(&mut self) {
        self.messages = VecDeque::new();
        self.bytes = 0;
    }
}
