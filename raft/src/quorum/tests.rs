//! Quorum arithmetic, checked by hand on small tables and against a deliberately naive
//! model on random inputs.

use std::collections::{BTreeMap, BTreeSet};

use super::{JointConfig, MajorityConfig, VoteResult};

/// (voters, acknowledged (id, index) pairs, expected committed index)
type CommitCase = (&'static [u64], &'static [(u64, u64)], u64);
/// (voters, cast (id, granted) pairs, expected result)
type VoteCase = (&'static [u64], &'static [(u64, bool)], VoteResult);

fn majority(ids: &[u64]) -> MajorityConfig {
    MajorityConfig::new(ids.iter().copied().collect())
}

fn joint(incoming: &[u64], outgoing: &[u64]) -> JointConfig {
    JointConfig { incoming: majority(incoming), outgoing: majority(outgoing) }
}

/// Acknowledged indexes by voter id; a voter absent from the map is unknown to the caller.
fn acks(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    pairs.iter().copied().collect()
}

fn committed(cfg: &MajorityConfig, acked: &BTreeMap<u64, u64>) -> u64 {
    cfg.committed_index(&|id: u64| acked.get(&id).copied())
}

fn joint_committed(cfg: &JointConfig, acked: &BTreeMap<u64, u64>) -> u64 {
    cfg.committed_index(&|id: u64| acked.get(&id).copied())
}

fn votes(pairs: &[(u64, bool)]) -> BTreeMap<u64, bool> {
    pairs.iter().copied().collect()
}

fn vote(cfg: &MajorityConfig, votes: &BTreeMap<u64, bool>) -> VoteResult {
    cfg.vote_result(|id| votes.get(&id).copied())
}

fn joint_vote(cfg: &JointConfig, votes: &BTreeMap<u64, bool>) -> VoteResult {
    cfg.vote_result(|id| votes.get(&id).copied())
}

// ---------------------------------------------------------------------------------------
// A naive model: say out loud what "a majority acknowledged" means and count.

/// The largest index `i` such that strictly more than half of the voters acknowledged an
/// index of at least `i`. Unknown voters count as having acknowledged nothing.
fn naive_committed(voters: &BTreeSet<u64>, acked: &BTreeMap<u64, u64>) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let ack_of = |id: &u64| acked.get(id).copied().unwrap_or(0);
    let mut candidates: Vec<u64> = voters.iter().map(ack_of).collect();
    candidates.push(0);
    candidates
        .into_iter()
        .filter(|&i| 2 * voters.iter().filter(|id| ack_of(id) >= i).count() > voters.len())
        .max()
        .expect("index 0 is always acknowledged by everyone")
}

fn naive_vote(voters: &BTreeSet<u64>, votes: &BTreeMap<u64, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let granted = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
    let missing = voters.iter().filter(|id| !votes.contains_key(id)).count();
    if 2 * granted > voters.len() {
        VoteResult::Won
    } else if 2 * (granted + missing) > voters.len() {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

fn naive_joint_vote(incoming: VoteResult, outgoing: VoteResult) -> VoteResult {
    use VoteResult::*;
    match (incoming, outgoing) {
        (Won, Won) => Won,
        (Lost, _) | (_, Lost) => Lost,
        _ => Pending,
    }
}

/// A tiny xorshift64* generator, so the property test needs no dependency and replays from
/// its seed.
struct TestRng(u64);

impl TestRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

// ---------------------------------------------------------------------------------------
// MajorityConfig::committed_index

#[test]
fn empty_majority_commits_everything_and_wins() {
    let cfg = majority(&[]);
    assert_eq!(committed(&cfg, &acks(&[])), u64::MAX);
    assert_eq!(committed(&cfg, &acks(&[(1, 5)])), u64::MAX);
    assert_eq!(vote(&cfg, &votes(&[])), VoteResult::Won);
    assert_eq!(vote(&cfg, &votes(&[(1, false)])), VoteResult::Won);
}

#[test]
fn majority_committed_index_table() {
    #[rustfmt::skip]
    let cases: &[CommitCase] = &[
        // One voter: its own acknowledgement decides.
        (&[1], &[], 0),
        (&[1], &[(1, 7)], 7),
        (&[1], &[(2, 9)], 0),
        // Two voters need both.
        (&[1, 2], &[(1, 5)], 0),
        (&[1, 2], &[(1, 5), (2, 3)], 3),
        (&[1, 2], &[(1, 5), (2, 8)], 5),
        // Three voters need two: the median.
        (&[1, 2, 3], &[(1, 12)], 0),
        (&[1, 2, 3], &[(1, 12), (2, 10)], 10),
        (&[1, 2, 3], &[(1, 12), (2, 10), (3, 11)], 11),
        (&[1, 2, 3], &[(1, 4), (2, 4), (3, 4)], 4),
        // Acknowledgements from non-voters do not count.
        (&[1, 2, 3], &[(1, 12), (4, 20), (5, 20)], 0),
        // Four voters need three.
        (&[1, 2, 3, 4], &[(1, 9), (2, 8), (3, 7)], 7),
        (&[1, 2, 3, 4], &[(1, 9), (2, 8), (3, 7), (4, 10)], 8),
        (&[1, 2, 3, 4], &[(1, 9), (2, 8)], 0),
        // Five voters need three.
        (&[1, 2, 3, 4, 5], &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)], 3),
        (&[1, 2, 3, 4, 5], &[(1, 100), (2, 100)], 0),
        (&[1, 2, 3, 4, 5], &[(1, 100), (2, 100), (5, 1)], 1),
        // Seven voters (the largest that sorts on the stack) need four.
        (&[1, 2, 3, 4, 5, 6, 7], &[(1, 7), (2, 6), (3, 5), (4, 4), (5, 3), (6, 2), (7, 1)], 4),
        (&[1, 2, 3, 4, 5, 6, 7], &[(1, 7), (2, 6), (3, 5)], 0),
        // Nine voters take the heap path and need five.
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9],
         &[(1, 9), (2, 8), (3, 7), (4, 6), (5, 5), (6, 4), (7, 3), (8, 2), (9, 1)], 5),
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[(1, 9), (2, 9), (3, 9), (4, 9)], 0),
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[(1, 9), (2, 9), (3, 9), (4, 9), (9, 2)], 2),
        // Sparse, large ids.
        (&[10, 200, 3000], &[(10, 4), (3000, 6)], 4),
    ];
    for (voters, acked, want) in cases {
        let cfg = majority(voters);
        let got = committed(&cfg, &acks(acked));
        assert_eq!(got, *want, "voters {voters:?} acked {acked:?}");
        assert_eq!(got, naive_committed(cfg.ids(), &acks(acked)), "model disagrees for {voters:?} {acked:?}");
    }
}

#[test]
fn majority_committed_index_on_the_heap_path_matches_the_stack_path() {
    // The same acknowledgements seen through 7 voters (stack) and 8 and 9 voters (heap,
    // where the extra voters are silent): only the quorum size changes the answer.
    let acked = acks(&[(1, 50), (2, 40), (3, 30), (4, 20), (5, 10), (6, 5), (7, 1)]);
    assert_eq!(committed(&majority(&[1, 2, 3, 4, 5, 6, 7]), &acked), 20);
    assert_eq!(committed(&majority(&[1, 2, 3, 4, 5, 6, 7, 8]), &acked), 10);
    assert_eq!(committed(&majority(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), &acked), 10);
    let many: Vec<u64> = (1..=25).collect();
    let acked: BTreeMap<u64, u64> = many.iter().map(|&id| (id, 100 + id)).collect();
    // 13 of 25 must acknowledge: the 13th highest is 100 + 13.
    assert_eq!(committed(&majority(&many), &acked), 113);
}

// ---------------------------------------------------------------------------------------
// MajorityConfig::vote_result

#[test]
fn majority_vote_result_table() {
    use VoteResult::*;
    #[rustfmt::skip]
    let cases: &[VoteCase] = &[
        (&[1], &[], Pending),
        (&[1], &[(1, true)], Won),
        (&[1], &[(1, false)], Lost),
        (&[1, 2], &[(1, true)], Pending),
        (&[1, 2], &[(1, true), (2, false)], Lost),
        (&[1, 2], &[(1, true), (2, true)], Won),
        (&[1, 2, 3], &[(1, true)], Pending),
        (&[1, 2, 3], &[(1, true), (2, false)], Pending),
        (&[1, 2, 3], &[(1, true), (2, true)], Won),
        (&[1, 2, 3], &[(1, false), (2, false)], Lost),
        (&[1, 2, 3], &[(1, true), (2, false), (3, false)], Lost),
        // Votes of non-voters are ignored.
        (&[1, 2, 3], &[(1, true), (4, true), (5, true)], Pending),
        (&[1, 2, 3, 4], &[(1, true), (2, true)], Pending),
        (&[1, 2, 3, 4], &[(1, true), (2, true), (3, true)], Won),
        (&[1, 2, 3, 4], &[(1, false), (2, false)], Lost),
        (&[1, 2, 3, 4, 5], &[(1, true), (2, true), (3, false), (4, false)], Pending),
        (&[1, 2, 3, 4, 5], &[(1, true), (2, false), (3, false), (4, false)], Lost),
        (&[1, 2, 3, 4, 5, 6, 7], &[(1, true), (2, true), (3, true), (4, true)], Won),
        (&[1, 2, 3, 4, 5, 6, 7], &[(1, false), (2, false), (3, false), (4, false)], Lost),
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[(1, true), (2, true), (3, true), (4, true)], Pending),
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[(1, true), (2, true), (3, true), (4, true), (5, true)], Won),
    ];
    for (voters, cast, want) in cases {
        let cfg = majority(voters);
        let got = vote(&cfg, &votes(cast));
        assert_eq!(got, *want, "voters {voters:?} votes {cast:?}");
        assert_eq!(got, naive_vote(cfg.ids(), &votes(cast)));
    }
}

// ---------------------------------------------------------------------------------------
// JointConfig

#[test]
fn joint_with_empty_outgoing_behaves_like_incoming() {
    let cfg = joint(&[1, 2, 3], &[]);
    assert!(!cfg.is_joint());
    let acked = acks(&[(1, 8), (2, 6), (3, 2)]);
    assert_eq!(joint_committed(&cfg, &acked), 6);
    assert_eq!(joint_committed(&cfg, &acked), committed(&cfg.incoming, &acked));
    assert_eq!(joint_vote(&cfg, &votes(&[(1, true), (3, true)])), VoteResult::Won);
    assert_eq!(joint_vote(&cfg, &votes(&[(1, true)])), VoteResult::Pending);
    assert_eq!(joint_vote(&cfg, &votes(&[(1, false), (3, false)])), VoteResult::Lost);
}

#[test]
fn joint_committed_index_is_the_minimum_of_both_halves() {
    // Overlapping halves: (1 2 3) && (2 3 4).
    let cfg = joint(&[1, 2, 3], &[2, 3, 4]);
    assert!(cfg.is_joint());
    assert_eq!(cfg.ids(), [1, 2, 3, 4].into_iter().collect());
    // incoming: 1=10, 2=8, 3=2 -> 8; outgoing: 2=8, 3=2, 4=0 -> 2.
    assert_eq!(joint_committed(&cfg, &acks(&[(1, 10), (2, 8), (3, 2)])), 2);
    // outgoing catches up: 4=9 -> outgoing 8, incoming 8.
    assert_eq!(joint_committed(&cfg, &acks(&[(1, 10), (2, 8), (3, 2), (4, 9)])), 8);
    // The outgoing half leads: the incoming half holds the result back.
    assert_eq!(joint_committed(&cfg, &acks(&[(2, 3), (3, 9), (4, 9)])), 3);
    // Disjoint halves.
    let cfg = joint(&[1, 2, 3], &[4, 5, 6]);
    assert_eq!(joint_committed(&cfg, &acks(&[(1, 5), (2, 5), (3, 5)])), 0);
    assert_eq!(joint_committed(&cfg, &acks(&[(1, 5), (2, 5), (4, 7), (6, 3)])), 3);
    // Identical halves are the same as one.
    let cfg = joint(&[1, 2, 3], &[1, 2, 3]);
    assert_eq!(joint_committed(&cfg, &acks(&[(1, 5), (2, 4), (3, 1)])), 4);
}

#[test]
fn joint_vote_result_needs_both_halves() {
    use VoteResult::*;
    let cfg = joint(&[1, 2, 3], &[3, 4, 5]);
    #[rustfmt::skip]
    let cases: &[(&[(u64, bool)], VoteResult)] = &[
        (&[], Pending),
        // Incoming won, outgoing pending.
        (&[(1, true), (2, true)], Pending),
        // Both won through the shared voter 3.
        (&[(1, true), (3, true), (4, true)], Won),
        // Incoming won, outgoing lost.
        (&[(1, true), (2, true), (4, false), (5, false)], Lost),
        // Incoming lost, outgoing won.
        (&[(1, false), (2, false), (4, true), (5, true)], Lost),
        // The shared voter's refusal counts in both halves.
        (&[(3, false), (1, false), (4, true), (5, true)], Lost),
        (&[(3, false), (1, true), (2, true), (4, true), (5, true)], Won),
    ];
    for (cast, want) in cases {
        assert_eq!(joint_vote(&cfg, &votes(cast)), *want, "votes {cast:?}");
    }
}

#[test]
fn joint_is_singleton_and_contains() {
    assert!(joint(&[1], &[]).is_singleton());
    assert!(!joint(&[1], &[2]).is_singleton());
    assert!(!joint(&[1, 2], &[]).is_singleton());
    assert!(!joint(&[], &[]).is_singleton());
    let cfg = joint(&[1, 2], &[3]);
    assert!(cfg.contains(1) && cfg.contains(3) && !cfg.contains(4));
    assert_eq!(cfg.to_string(), "(1 2)&&(3)");
    assert_eq!(joint(&[1, 2], &[]).to_string(), "(1 2)");
}

// ---------------------------------------------------------------------------------------
// Random inputs against the naive model.

fn random_voters(rng: &mut TestRng, count_max: u64) -> BTreeSet<u64> {
    let count = rng.below(count_max + 1);
    // Ids from a small range, so the two halves of a joint config often overlap.
    (0..count).map(|_| 1 + rng.below(12)).collect()
}

#[test]
fn random_committed_index_and_votes_match_the_naive_model() {
    for seed in 1..=3000u64 {
        let mut rng = TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let incoming = random_voters(&mut rng, 11);
        let outgoing = if rng.below(2) == 0 { BTreeSet::new() } else { random_voters(&mut rng, 9) };
        let mut acked = BTreeMap::new();
        let mut cast = BTreeMap::new();
        for id in 1..=12u64 {
            // About one in four voters is unknown to the caller: no ack, no vote.
            if rng.below(4) != 0 {
                acked.insert(id, rng.below(20));
            }
            match rng.below(3) {
                0 => {}
                1 => {
                    cast.insert(id, true);
                }
                _ => {
                    cast.insert(id, false);
                }
            }
        }

        let inc = MajorityConfig::new(incoming.clone());
        let out = MajorityConfig::new(outgoing.clone());
        let context = format!("seed {seed}: incoming {inc} outgoing {out} acked {acked:?} votes {cast:?}");
        assert_eq!(committed(&inc, &acked), naive_committed(&incoming, &acked), "{context}");
        assert_eq!(vote(&inc, &cast), naive_vote(&incoming, &cast), "{context}");

        let cfg = JointConfig { incoming: inc, outgoing: out };
        let want_committed = naive_committed(&incoming, &acked).min(naive_committed(&outgoing, &acked));
        assert_eq!(joint_committed(&cfg, &acked), want_committed, "{context}");
        let want_vote = naive_joint_vote(naive_vote(&incoming, &cast), naive_vote(&outgoing, &cast));
        assert_eq!(joint_vote(&cfg, &cast), want_vote, "{context}");
    }
}

#[test]
fn committed_index_is_monotonic_in_acknowledgements() {
    // Acknowledging more never lowers the committed index: the leader relies on it to
    // never move its commit index backwards.
    let mut rng = TestRng(0xC0FF_EE00_1234_5678);
    for _ in 0..500 {
        let voters: BTreeSet<u64> = (1..=1 + rng.below(9)).collect();
        let cfg = MajorityConfig::new(voters.clone());
        let mut acked: BTreeMap<u64, u64> = voters.iter().map(|&id| (id, rng.below(50))).collect();
        let mut last = committed(&cfg, &acked);
        for _ in 0..10 {
            let id = 1 + rng.below(voters.len() as u64);
            *acked.get_mut(&id).expect("every voter acked") += rng.below(5);
            let now = committed(&cfg, &acked);
            assert!(now >= last, "committed went back from {last} to {now} with {acked:?}");
            last = now;
        }
    }
}
