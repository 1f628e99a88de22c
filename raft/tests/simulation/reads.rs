//! Linearizable reads: the requests the driver issued, their answers (`ReadState`s), and
//! the linearizability check.
//!
//! A read must return a state at least as new as every write acknowledged before it was
//! issued. A write is acknowledged once it is applied somewhere, so it is committed, so
//! its index is at most the highest commit index any node had when the read was issued:
//! the read's *floor*. The check is then: the read index a node is given is at least the
//! floor and no more than what was ever committed, and the state served (once the node has
//! applied up to the read index) is a prefix of the one applied history at or past the
//! floor.

use tessera_raft::ReadState;

/// Where a read was issued, by the issuing node's role at the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOrigin {
    Leader,
    Follower,
    Learner,
}

#[derive(Clone, Debug)]
struct ReadRequest {
    node: u64,
    /// The node's incarnation when it asked: a crash forgets the request.
    incarnation: u64,
    floor: u64,
    origin: ReadOrigin,
    /// Issued on a leader whose lease was valid, so it may be answered without a round.
    lease: bool,
    refused: bool,
    answers: u32,
    /// The network duplicated a message carrying this read, so two answers are legal.
    duplicated_by_network: bool,
    served: bool,
}

/// What to do with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Serve read `seq` once the node has applied up to the read index.
    Serve(u64),
    /// A second answer the network made possible, or one for a node that crashed since it
    /// asked: checked, then dropped.
    Ignore,
}

/// What a served read was.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    pub origin: ReadOrigin,
    pub lease: bool,
}

#[derive(Debug, Default)]
pub struct Reads {
    /// Request `seq` is at `seq - 1`.
    requests: Vec<ReadRequest>,
}

const CONTEXT_PREFIX: &[u8] = b"read:";

/// The request context of read `seq`: unique per request, so one answer names one read.
fn context(seq: u64) -> Vec<u8> {
    let mut ctx = CONTEXT_PREFIX.to_vec();
    ctx.extend_from_slice(&seq.to_be_bytes());
    ctx
}

/// The read a request context names, if it is one of ours.
pub fn seq_of(ctx: &[u8]) -> Option<u64> {
    let seq = ctx.strip_prefix(CONTEXT_PREFIX)?;
    Some(u64::from_be_bytes(seq.try_into().ok()?))
}

impl Reads {
    /// Records a read about to be issued; returns its number and context.
    pub fn issue(
        &mut self,
        node: u64,
        incarnation: u64,
        floor: u64,
        origin: ReadOrigin,
        lease: bool,
    ) -> (u64, Vec<u8>) {
        self.requests.push(ReadRequest {
            node,
            incarnation,
            floor,
            origin,
            lease,
            refused: false,
            answers: 0,
            duplicated_by_network: false,
            served: false,
        });
        let seq = self.requests.len() as u64;
        (seq, context(seq))
    }

    fn request(&mut self, seq: u64) -> &mut ReadRequest {
        let Some(r) = (seq as usize).checked_sub(1).and_then(|k| self.requests.get_mut(k)) else {
            panic!("invariant: read {seq} was issued")
        };
        r
    }

    /// `read_index` refused the read with a typed error.
    pub fn refuse(&mut self, seq: u64) {
        self.request(seq).refused = true;
    }

    /// The network put two copies of a message carrying `ctx` on the wire.
    pub fn note_duplicated(&mut self, ctx: &[u8]) {
        if let Some(seq) = seq_of(ctx) {
            self.request(seq).duplicated_by_network = true;
        }
    }

    /// Node `node` (in incarnation `incarnation`) got `rs` out of a Ready, when the highest
    /// commit index any node ever had was `commit_max`.
    pub fn on_answer(&mut self, node: u64, incarnation: u64, rs: &ReadState, commit_max: u64) -> Answer {
        let seq = seq_of(&rs.request_ctx).unwrap_or_else(|| {
            panic!("read safety violated: node {node} answers a read nobody issued: {:?}", rs.request_ctx)
        });
        let r = self.request(seq);
        assert_eq!(
            r.node, node,
            "read safety violated: node {node} gets the answer to read {seq} of node {}",
            r.node
        );
        assert!(!r.refused, "read safety violated: node {node} answers read {seq}, which it refused");
        assert!(
            rs.index >= r.floor,
            "linearizability violated: read {seq} ({:?} on node {node}) gets read index {}, below the commit \
             index {} that was known when it was issued",
            r.origin,
            rs.index,
            r.floor
        );
        assert!(
            rs.index <= commit_max,
            "read safety violated: read {seq} on node {node} gets read index {}, beyond every commit index so \
             far ({commit_max})",
            rs.index
        );
        r.answers += 1;
        if r.answers > 1 {
            assert!(
                r.duplicated_by_network,
                "read safety violated: read {seq} on node {node} is answered {} times, and the network never \
                 duplicated it",
                r.answers
            );
            return Answer::Ignore;
        }
        if r.incarnation != incarnation {
            return Answer::Ignore;
        }
        Answer::Serve(seq)
    }

    /// Read `seq` is served from a state machine at `applied`.
    pub fn on_served(&mut self, seq: u64, applied: u64) -> Served {
        let r = self.request(seq);
        assert!(
            applied >= r.floor,
            "linearizability violated: read {seq} on node {} returns the state at {applied}, older than the \
             commit index {} known when it was issued",
            r.node,
            r.floor
        );
        assert!(!r.served, "invariant: read {seq} is served once");
        r.served = true;
        Served { origin: r.origin, lease: r.lease }
    }

    /// Reads issued and never served: dropped on the way, as reads may be.
    pub fn unanswered(&self) -> u64 {
        self.requests.iter().filter(|r| !r.refused && !r.served).count() as u64
    }
}
