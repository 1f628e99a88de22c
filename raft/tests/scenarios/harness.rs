//! The interaction environment behind the scenario files: nodes, their storage, their
//! local storage threads (async writes), and a network that is a queue the script drains.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use datadriven::TestCase;
use tessera_raft::describe::{
    describe_conf_state, describe_entry, describe_message, describe_ready, message_type_name,
};
use tessera_raft::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use tessera_raft::{
    conf_change_of, Config, MemStorage, RawNode, ReadOnlyOption, SnapshotStatus, StateRole,
    LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD,
};

/// A stabilize loop that runs this many rounds is livelocked: fail rather than spin.
const STABILIZE_ROUNDS_MAX: usize = 1000;

type CmdResult = Result<String, String>;

#[derive(Debug)]
struct Node {
    raw: RawNode<MemStorage>,
    /// The application's handle on the node's storage (shared with the node).
    storage: MemStorage,
    config: Config,
    /// What the application applied, one line per entry with data (or snapshot).
    applied: Vec<String>,
    /// The last index the application applied (or received in a snapshot).
    applied_index: u64,
    /// Async storage writes: work queued for the local append and apply threads.
    append_work: VecDeque<Message>,
    apply_work: VecDeque<Message>,
}

#[derive(Debug, Default)]
pub struct Env {
    nodes: BTreeMap<u64, Node>,
    /// Messages sent and not yet delivered or dropped, in send order.
    network: Vec<Message>,
    /// Every leader seen, by term: Election Safety allows one per term.
    leaders: BTreeMap<u64, u64>,
    /// The term of every entry seen committed, by index: State Machine Safety allows one.
    committed_terms: BTreeMap<u64, u64>,
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// Removes and returns the bare numeric arguments (node ids), sorted.
fn take_ids(tc: &mut TestCase) -> Result<Vec<u64>, String> {
    let keys: Vec<String> = tc
        .args
        .iter()
        .filter(|(k, v)| v.is_empty() && k.parse::<u64>().is_ok())
        .map(|(k, _)| k.clone())
        .collect();
    let mut ids = Vec::new();
    for k in keys {
        tc.args.remove(&k);
        ids.push(k.parse::<u64>().map_err(|e| e.to_string())?);
    }
    ids.sort_unstable();
    Ok(ids)
}

fn take_one_id(tc: &mut TestCase) -> Result<u64, String> {
    match take_ids(tc)?.as_slice() {
        [id] => Ok(*id),
        ids => Err(format!("{}: expected exactly one node id, got {ids:?}", tc.directive)),
    }
}

/// Removes and returns the bare non-numeric arguments (words), sorted.
fn take_words(tc: &mut TestCase) -> Vec<String> {
    let mut words: Vec<String> =
        tc.args.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| k.clone()).collect();
    for w in &words {
        tc.args.remove(w);
    }
    words.sort();
    words
}

fn arg<T: std::str::FromStr>(tc: &mut TestCase, name: &str) -> Result<Option<T>, String>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    tc.try_take_arg(name).map_err(|e| e.to_string())
}

fn args<T: std::str::FromStr>(tc: &mut TestCase, name: &str) -> Result<Option<Vec<T>>, String>
where
    T::Err: std::error::Error + Send + 'static,
{
    tc.try_take_args(name).map_err(|e| e.to_string())
}

fn message_type_by_name(name: &str) -> Result<MessageType, String> {
    (0..64)
        .filter_map(|i| MessageType::try_from(i).ok())
        .find(|t| message_type_name(*t) == name)
        .ok_or_else(|| format!("unknown message type {name}"))
}

fn sized_data(size: usize, seq: usize) -> Vec<u8> {
    // Readable payloads of an exact size: a letter per proposal, repeated.
    vec![b'a' + (seq % 26) as u8; size]
}

impl Env {
    pub fn handle(&mut self, tc: &mut TestCase) -> CmdResult {
        let out = match tc.directive.as_str() {
            "add-nodes" => self.add_nodes(tc)?,
            "campaign" => {
                let id = take_one_id(tc)?;
                let node = self.node_mut(id)?;
                error_line(node.raw.campaign())
            }
            "propose" => self.propose(tc)?,
            "propose-batch" => self.propose_batch(tc)?,
            "propose-conf-change" => self.propose_conf_change(tc)?,
            "transfer-leader" => {
                let id = take_one_id(tc)?;
                let target: u64 = arg(tc, "target")?.ok_or("transfer-leader: target= is required")?;
                error_line(self.node_mut(id)?.raw.transfer_leader(target))
            }
            "read-index" => {
                let id = take_one_id(tc)?;
                let ctx: String = arg(tc, "ctx")?.ok_or("read-index: ctx= is required")?;
                error_line(self.node_mut(id)?.raw.read_index(ctx.into_bytes()))
            }
            "tick-election" => {
                let id = take_one_id(tc)?;
                let node = self.node_mut(id)?;
                let raft = node.raw.raft();
                let timeout = if raft.role() == StateRole::Leader {
                    node.config.election_ticks
                } else {
                    raft.randomized_election_ticks()
                };
                let count = timeout.saturating_sub(raft.election_elapsed()).max(1);
                for _ in 0..count {
                    node.raw.tick();
                }
                String::new()
            }
            "tick-heartbeat" => {
                let id = take_one_id(tc)?;
                let node = self.node_mut(id)?;
                for _ in 0..node.config.heartbeat_ticks {
                    node.raw.tick();
                }
                String::new()
            }
            "tick" => {
                let id = take_one_id(tc)?;
                let count: usize = arg(tc, "count")?.ok_or("tick: count= is required")?;
                let node = self.node_mut(id)?;
                for _ in 0..count {
                    node.raw.tick();
                }
                String::new()
            }
            "process-ready" => {
                let mut out = String::new();
                for id in take_ids(tc)? {
                    out += &self.process_ready(id)?;
                }
                out
            }
            "process-append-thread" => {
                let count = arg(tc, "count")?.unwrap_or(usize::MAX);
                let mut out = String::new();
                for id in take_ids(tc)? {
                    out += &self.process_append_thread(id, count)?;
                }
                out
            }
            "process-apply-thread" => {
                let count = arg(tc, "count")?.unwrap_or(usize::MAX);
                let mut out = String::new();
                for id in take_ids(tc)? {
                    out += &self.process_apply_thread(id, count)?;
                }
                out
            }
            "deliver-msgs" => {
                let ids = take_ids(tc)?;
                let drop: Vec<u64> = args(tc, "drop")?.unwrap_or_default();
                let msg_type = arg::<String>(tc, "type")?.map(|t| message_type_by_name(&t)).transpose()?;
                let deliver = if ids.is_empty() && drop.is_empty() { self.ids() } else { ids };
                self.deliver_msgs(&deliver, &drop, msg_type)?
            }
            "stabilize" => {
                let ids = take_ids(tc)?;
                let quiet = tc.take_flag("quiet").map_err(|e| e.to_string())?;
                let ids = if ids.is_empty() { self.ids() } else { ids };
                let out = self.stabilize(&ids)?;
                if quiet {
                    String::new()
                } else {
                    out
                }
            }
            "compact" => {
                let id = take_one_id(tc)?;
                let index: u64 = arg(tc, "index")?.ok_or("compact: index= is required")?;
                self.compact(id, index)?
            }
            "report-unreachable" => {
                let id = take_one_id(tc)?;
                let peer: u64 = arg(tc, "peer")?.ok_or("report-unreachable: peer= is required")?;
                self.node_mut(id)?.raw.report_unreachable(peer);
                String::new()
            }
            "report-snapshot" => {
                let id = take_one_id(tc)?;
                let peer: u64 = arg(tc, "peer")?.ok_or("report-snapshot: peer= is required")?;
                let status = match arg::<String>(tc, "status")?.as_deref() {
                    Some("ok") => SnapshotStatus::Finish,
                    Some("fail") => SnapshotStatus::Failure,
                    other => return Err(format!("report-snapshot: status=ok|fail, got {other:?}")),
                };
                self.node_mut(id)?.raw.report_snapshot(peer, status);
                String::new()
            }
            "snapshot-unavailable" => {
                let id = take_one_id(tc)?;
                self.node_mut(id)?.storage.wl().trigger_snapshot_unavailable();
                String::new()
            }
            "restart" => {
                let id = take_one_id(tc)?;
                let vote_lease_at_start: Option<bool> = arg(tc, "vote-lease-at-start")?;
                self.restart(id, vote_lease_at_start)?
            }
            "raft-log" => {
                let id = take_one_id(tc)?;
                self.raft_log(id)?
            }
            "raft-state" => self.raft_state(),
            "status" => {
                let id = take_one_id(tc)?;
                self.status(id)?
            }
            "applied" => {
                let id = take_one_id(tc)?;
                let node = self.node_mut(id)?;
                let mut out = format!("applied through {}:\n", node.applied_index);
                for line in &node.applied {
                    let _ = writeln!(out, "  {line}");
                }
                out
            }
            other => return Err(format!("unknown command {other}")),
        };
        if !tc.args.is_empty() {
            let mut unused: Vec<&String> = tc.args.keys().collect();
            unused.sort();
            return Err(format!("{}: unused arguments {unused:?}", tc.directive));
        }
        self.check_safety();
        Ok(out)
    }

    /// Checks the Raft paper's safety properties after every command, whatever the scenario
    /// is about: at most one leader per term (Election Safety), and no two nodes ever
    /// committing different entries at one index (State Machine Safety, checked by term,
    /// which by Log Matching identifies the entry).
    fn check_safety(&mut self) {
        for (id, node) in &self.nodes {
            let raft = node.raw.raft();
            if raft.role() == StateRole::Leader {
                let leader = *self.leaders.entry(raft.term()).or_insert(*id);
                assert_eq!(
                    leader,
                    *id,
                    "Election Safety: nodes {leader} and {id} both led term {}",
                    raft.term()
                );
            }
            let log = raft.raft_log();
            for index in log.first_index()..=log.committed {
                let term = log.term(index).expect("committed entries in the log have a term");
                let seen = *self.committed_terms.entry(index).or_insert(term);
                assert_eq!(
                    seen, term,
                    "State Machine Safety: node {id} committed {term}/{index}, another node {seen}/{index}"
                );
            }
        }
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node, String> {
        self.nodes.get_mut(&id).ok_or_else(|| format!("no node {id}"))
    }

    // ---- setup ---------------------------------------------------------------------------

    fn add_nodes(&mut self, tc: &mut TestCase) -> CmdResult {
        let count = match take_ids(tc)?.as_slice() {
            [n] => *n,
            other => return Err(format!("add-nodes: expected one count, got {other:?}")),
        };
        let first_id = self.nodes.keys().last().copied().unwrap_or(0) + 1;
        let new_ids: Vec<u64> = (first_id..first_id + count).collect();
        let voters: Vec<u64> = args(tc, "voters")?.unwrap_or_else(|| new_ids.clone());
        let learners: Vec<u64> = args(tc, "learners")?.unwrap_or_default();
        let index: u64 = arg(tc, "index")?.unwrap_or(0);
        let content: String = arg(tc, "content")?.unwrap_or_default();
        let log_terms: Vec<u64> = args(tc, "log-terms")?.unwrap_or_default();
        let term: Option<u64> = arg(tc, "term")?;
        let commit: Option<u64> = arg(tc, "commit")?;

        let mut template = Config::default();
        macro_rules! option {
            ($name:literal, $field:ident) => {
                if let Some(v) = arg(tc, $name)? {
                    template.$field = v;
                }
            };
        }
        option!("pre-vote", pre_vote);
        option!("check-quorum", check_quorum);
        option!("async-storage-writes", async_storage_writes);
        option!("disable-forwarding", disable_proposal_forwarding);
        option!("election-ticks", election_ticks);
        option!("heartbeat-ticks", heartbeat_ticks);
        option!("inflight-msgs-max", inflight_msgs_max);
        option!("inflight-bytes-max", inflight_bytes_max);
        option!("msg-bytes-max", msg_bytes_max);
        option!("uncommitted-bytes-max", uncommitted_bytes_max);
        option!("committed-bytes-per-ready-max", committed_bytes_per_ready_max);
        option!("step-down-on-removal", step_down_on_removal);
        option!("lazy-commit-broadcast", lazy_commit_broadcast);
        option!("lease-margin-ticks", lease_margin_ticks);
        option!("vote-lease-at-start", vote_lease_at_start);
        option!("reads-pending-max", reads_pending_max);
        match arg::<String>(tc, "read-only")?.as_deref() {
            None => {}
            Some("safe") => template.read_only_option = ReadOnlyOption::Safe,
            Some("lease") => template.read_only_option = ReadOnlyOption::LeaseBased,
            Some(other) => return Err(format!("add-nodes: read-only=safe|lease, got {other}")),
        }

        let mut out = String::new();
        for id in new_ids {
            let storage = MemStorage::new();
            let conf_state =
                ConfState { voters: voters.clone(), learners: learners.clone(), ..Default::default() };
            {
                let mut core = storage.wl();
                if index > 0 {
                    core.apply_snapshot(Snapshot {
                        data: content.clone().into_bytes().into(),
                        metadata: Some(Box::new(SnapshotMetadata {
                            conf_state: Some(conf_state),
                            index,
                            term: 1,
                        })),
                    })
                    .map_err(|e| e.to_string())?;
                } else {
                    core.set_conf_state(conf_state);
                }
                let entries: Vec<Entry> = log_terms
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Entry { term: *t, index: index + 1 + i as u64, ..Default::default() })
                    .collect();
                core.append(&entries).map_err(|e| e.to_string())?;
                if !log_terms.is_empty() || term.is_some() || commit.is_some() {
                    let last_term = log_terms.last().copied().unwrap_or(0);
                    let stored = *core.hard_state();
                    core.set_hard_state(HardState {
                        term: term.unwrap_or(last_term.max(stored.term)),
                        vote: 0,
                        commit: commit.unwrap_or(index),
                    });
                }
            }
            let config = Config { id, random_seed: id, applied: index, ..template.clone() };
            let raw = RawNode::new(&config, storage.clone()).map_err(|e| e.to_string())?;
            let applied =
                if content.is_empty() { Vec::new() } else { vec![format!("snapshot {index}: {content}")] };
            let node = Node {
                raw,
                storage,
                config,
                applied,
                applied_index: index,
                append_work: VecDeque::new(),
                apply_work: VecDeque::new(),
            };
            out += &node_line(&node);
            self.nodes.insert(id, node);
        }
        Ok(out)
    }

    fn restart(&mut self, id: u64, vote_lease_at_start: Option<bool>) -> CmdResult {
        let node = self.node_mut(id)?;
        if let Some(hold) = vote_lease_at_start {
            node.config.vote_lease_at_start = hold;
        }
        // Unpersisted state dies with the process: the Ready in hand, queued storage work.
        node.append_work.clear();
        node.apply_work.clear();
        node.config.applied = node.applied_index;
        node.raw = RawNode::new(&node.config, node.storage.clone()).map_err(|e| e.to_string())?;
        Ok(node_line(node))
    }

    // ---- proposals -----------------------------------------------------------------------

    fn propose(&mut self, tc: &mut TestCase) -> CmdResult {
        let id = take_one_id(tc)?;
        let data = match (take_words(tc).as_slice(), arg::<usize>(tc, "size")?) {
            ([word], None) => word.clone().into_bytes(),
            ([], Some(size)) => sized_data(size, 0),
            _ => return Err("propose: give one DATA word or size=N".to_string()),
        };
        Ok(error_line(self.node_mut(id)?.raw.propose(data)))
    }

    fn propose_batch(&mut self, tc: &mut TestCase) -> CmdResult {
        let id = take_one_id(tc)?;
        let payloads: Vec<Vec<u8>> = match (args::<String>(tc, "data")?, arg::<usize>(tc, "count")?) {
            (Some(data), None) => data.into_iter().map(String::into_bytes).collect(),
            (None, Some(count)) => {
                let size = arg::<usize>(tc, "size")?.unwrap_or(1);
                (0..count).map(|seq| sized_data(size, seq)).collect()
            }
            _ => return Err("propose-batch: give data=(..) or count=N [size=M]".to_string()),
        };
        let entries =
            payloads.into_iter().map(|data| Entry { data: data.into(), ..Default::default() }).collect();
        Ok(error_line(self.node_mut(id)?.raw.propose_entries(entries)))
    }

    fn propose_conf_change(&mut self, tc: &mut TestCase) -> CmdResult {
        let id = take_one_id(tc)?;
        let v1 = tc.take_flag("v1").map_err(|e| e.to_string())?;
        let transition = match arg::<String>(tc, "transition")?.as_deref() {
            None | Some("auto") => ConfChangeTransition::Auto,
            Some("implicit") => ConfChangeTransition::JointImplicit,
            Some("explicit") => ConfChangeTransition::JointExplicit,
            Some(other) => {
                return Err(format!("propose-conf-change: transition=auto|implicit|explicit, got {other}"))
            }
        };
        let changes = parse_changes(&tc.input)?;
        let raw = &mut self.node_mut(id)?.raw;
        let result = if v1 {
            let [change] = changes.as_slice() else {
                return Err("propose-conf-change v1: exactly one change".to_string());
            };
            if transition != ConfChangeTransition::Auto {
                return Err("propose-conf-change v1: no transition".to_string());
            }
            let cc =
                ConfChange { change_type: change.change_type, node_id: change.node_id, ..Default::default() };
            raw.propose_conf_change_v1(Vec::new(), cc)
        } else {
            raw.propose_conf_change(
                Vec::new(),
                ConfChangeV2 { transition: transition as i32, changes, context: Vec::new() },
            )
        };
        // The typed error too: which refusal it is matters more than its wording.
        Ok(match result {
            Ok(()) => String::new(),
            Err(e) => format!("error: {e:?}: {e}\n"),
        })
    }

    // ---- readies and storage -------------------------------------------------------------

    fn process_ready(&mut self, id: u64) -> CmdResult {
        let Env { nodes, network, .. } = self;
        let node = nodes.get_mut(&id).ok_or_else(|| format!("no node {id}"))?;
        let mut out = format!("> {id} handling Ready\n");
        if !node.raw.has_ready() {
            out += "  <empty Ready>\n";
            return Ok(out);
        }
        let rd = node.raw.ready();
        out += &indent(&format!("Ready MustSync={}:\n{}", rd.must_sync, describe_ready(&rd)), 2);

        if node.config.async_storage_writes {
            // Only the soft state and messages may be set; storage work travels as messages.
            assert!(
                rd.hard_state.is_none()
                    && rd.entries.is_empty()
                    && rd.snapshot.is_none()
                    && rd.committed_entries.is_empty()
                    && rd.persisted_messages.is_empty(),
                "async Ready carries storage work outside messages: {rd:?}"
            );
            for m in rd.messages {
                match m.to {
                    LOCAL_APPEND_THREAD => node.append_work.push_back(m),
                    LOCAL_APPLY_THREAD => node.apply_work.push_back(m),
                    _ => network.push(m),
                }
            }
            return Ok(out);
        }

        // 1. Messages that need nothing durable.
        network.extend(rd.messages.iter().cloned());
        // 2. Persist snapshot, entries, hard state, as one write.
        {
            let mut core = node.storage.wl();
            if let Some(snapshot) = &rd.snapshot {
                core.apply_snapshot(snapshot.clone()).map_err(|e| e.to_string())?;
            }
            core.append(&rd.entries).map_err(|e| e.to_string())?;
            if let Some(hs) = &rd.hard_state {
                core.set_hard_state(*hs);
            }
        }
        if let Some(snapshot) = &rd.snapshot {
            node.apply_snapshot(snapshot);
        }
        // 3. Messages that promise durability.
        network.extend(rd.persisted_messages.iter().cloned());
        // 4. Apply.
        out += &indent(&node.apply_entries(&rd.committed_entries), 2);
        // 5. Advance.
        node.raw.advance(rd);
        Ok(out)
    }

    fn process_append_thread(&mut self, id: u64, count: usize) -> CmdResult {
        let Env { nodes, network, .. } = self;
        let node = nodes.get_mut(&id).ok_or_else(|| format!("no node {id}"))?;
        let mut out = format!("> {id} processing append thread\n");
        if node.append_work.is_empty() {
            out += "  <nothing queued>\n";
        }
        for _ in 0..count {
            let Some(m) = node.append_work.pop_front() else { break };
            out += &indent(&format!("Processing:\n{}", describe_message(&m)), 2);
            {
                let mut core = node.storage.wl();
                if let Some(snapshot) = &m.snapshot {
                    core.apply_snapshot((**snapshot).clone()).map_err(|e| e.to_string())?;
                }
                core.append(&m.entries).map_err(|e| e.to_string())?;
                // A hard state is present exactly when its term is: terms start at one.
                if m.term != 0 {
                    core.set_hard_state(HardState { term: m.term, vote: m.vote, commit: m.commit });
                }
            }
            if let Some(snapshot) = &m.snapshot {
                node.apply_snapshot(snapshot);
            }
            out += &node.deliver_responses(m.responses, network);
        }
        Ok(out)
    }

    fn process_apply_thread(&mut self, id: u64, count: usize) -> CmdResult {
        let Env { nodes, network, .. } = self;
        let node = nodes.get_mut(&id).ok_or_else(|| format!("no node {id}"))?;
        let mut out = format!("> {id} processing apply thread\n");
        if node.apply_work.is_empty() {
            out += "  <nothing queued>\n";
        }
        for _ in 0..count {
            let Some(m) = node.apply_work.pop_front() else { break };
            out += &indent(&format!("Applying:\n{}", describe_message(&m)), 2);
            out += &indent(&node.apply_entries(&m.entries), 2);
            out += &node.deliver_responses(m.responses, network);
        }
        Ok(out)
    }

    // ---- network -------------------------------------------------------------------------

    fn deliver_msgs(&mut self, deliver: &[u64], drop: &[u64], msg_type: Option<MessageType>) -> CmdResult {
        let mut delivered: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        let mut dropped: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        let mut kept = Vec::new();
        for m in std::mem::take(&mut self.network) {
            if msg_type.is_some_and(|t| m.msg_type() != t) {
                kept.push(m);
            } else if drop.contains(&m.to) {
                dropped.entry(m.to).or_default().push(m);
            } else if deliver.contains(&m.to) {
                delivered.entry(m.to).or_default().push(m);
            } else {
                kept.push(m);
            }
        }
        self.network = kept;
        let mut out = String::new();
        for (to, msgs) in dropped {
            let _ = writeln!(out, "> {to} dropping messages");
            for m in msgs {
                out += &indent(&describe_message(&m), 2);
            }
        }
        for (to, msgs) in delivered {
            let _ = writeln!(out, "> {to} receiving messages");
            let Some(node) = self.nodes.get_mut(&to) else {
                let _ = writeln!(out, "  (no such node: {} messages lost)", msgs.len());
                continue;
            };
            for m in msgs {
                out += &indent(&describe_message(&m), 2);
                if let Err(e) = node.raw.step(m) {
                    let _ = writeln!(out, "    error: {e}");
                }
            }
        }
        Ok(out)
    }

    fn stabilize(&mut self, ids: &[u64]) -> CmdResult {
        let mut out = String::new();
        for _ in 0..STABILIZE_ROUNDS_MAX {
            let mut busy = false;
            for &id in ids {
                if self.node_mut(id)?.raw.has_ready() {
                    busy = true;
                    out += &self.process_ready(id)?;
                }
            }
            for &id in ids {
                if !self.node_mut(id)?.append_work.is_empty() {
                    busy = true;
                    out += &self.process_append_thread(id, usize::MAX)?;
                }
                if !self.node_mut(id)?.apply_work.is_empty() {
                    busy = true;
                    out += &self.process_apply_thread(id, usize::MAX)?;
                }
            }
            if self.network.iter().any(|m| ids.contains(&m.to)) {
                busy = true;
                out += &self.deliver_msgs(ids, &[], None)?;
            }
            if !busy {
                return Ok(out);
            }
        }
        Err(format!("stabilize: still busy after {STABILIZE_ROUNDS_MAX} rounds:\n{out}"))
    }

    // ---- storage maintenance -------------------------------------------------------------

    fn compact(&mut self, id: u64, index: u64) -> CmdResult {
        let node = self.node_mut(id)?;
        if index > node.applied_index {
            return Err(format!("compact: index {index} beyond applied {}", node.applied_index));
        }
        let conf_state = node.raw.raft().tracker().conf_state();
        let data = format!("snapshot of {id} at {index}").into_bytes();
        {
            let mut core = node.storage.wl();
            core.create_snapshot(index, Some(conf_state), data).map_err(|e| e.to_string())?;
            core.compact(index + 1).map_err(|e| e.to_string())?;
        }
        self.raft_log(id)
    }

    // ---- printing ------------------------------------------------------------------------

    fn raft_log(&mut self, id: u64) -> CmdResult {
        let node = self.node_mut(id)?;
        let log = node.raw.raft().raft_log();
        let first = log.first_index();
        let mut out = format!(
            "committed={} applied={} persisted={}\n",
            log.committed,
            log.applied,
            log.persisted_index()
        );
        if first > 1 {
            let _ = writeln!(out, "compacted through {}/{}", log.term(first - 1).unwrap_or(0), first - 1);
        }
        let unstable_from = log.unstable.offset;
        for e in log.all_entries() {
            let mark = if e.index >= unstable_from { " (unstable)" } else { "" };
            let _ = writeln!(out, "{}{mark}", describe_entry(&e));
        }
        Ok(out)
    }

    fn raft_state(&self) -> String {
        self.nodes.values().map(node_line).collect()
    }

    fn status(&mut self, id: u64) -> CmdResult {
        let node = self.node_mut(id)?;
        let status = node.raw.status();
        let Some(progress) = status.progress else {
            return Ok(format!("{id} is not the leader ({:?})\n", status.basic.soft_state.role));
        };
        let mut out: String = progress.iter().map(|(peer, pr)| format!("{peer}: {pr}\n")).collect();
        // Only where it matters, so that plain status lines stay as they were.
        let raft = node.raw.raft();
        if raft.lead_transferee() != 0 {
            let _ = writeln!(out, "transferring leadership to {}", raft.lead_transferee());
        }
        if node.config.read_only_option == ReadOnlyOption::LeaseBased {
            let _ = writeln!(out, "lease {}", if raft.lease_valid() { "valid" } else { "invalid" });
        }
        Ok(out)
    }
}

impl Node {
    /// Applies committed entries in order. A membership change takes effect here, as in a
    /// real application: the node switches configuration and the storage records the
    /// configuration now in force. Returns a line per membership change.
    fn apply_entries(&mut self, entries: &[Entry]) -> String {
        let mut out = String::new();
        for e in entries {
            assert_eq!(e.index, self.applied_index + 1, "entries are applied in order, without gaps");
            self.applied_index = e.index;
            if !e.data.is_empty() || e.entry_type() != EntryType::EntryNormal {
                self.applied.push(describe_entry(e));
            }
            let cc = match conf_change_of(e) {
                Ok(Some(cc)) => cc,
                Ok(None) => continue,
                Err(err) => {
                    let _ = writeln!(out, "conf change {}/{} does not decode: {err}", e.term, e.index);
                    continue;
                }
            };
            match self.raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    let _ = writeln!(
                        out,
                        "conf change {}/{} applied: {}",
                        e.term,
                        e.index,
                        describe_conf_state(&cs)
                    );
                    self.storage.wl().set_conf_state(cs);
                }
                Err(err) => {
                    let _ = writeln!(out, "conf change {}/{} refused at apply: {err}", e.term, e.index);
                }
            }
        }
        out
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        self.applied_index = index;
        self.applied.push(format!("snapshot {index}: {}", String::from_utf8_lossy(&snapshot.data)));
    }

    /// Delivers the responses of completed storage work: to the node itself if addressed
    /// to it, else to the network.
    fn deliver_responses(&mut self, responses: Vec<Message>, network: &mut Vec<Message>) -> String {
        let id = self.config.id;
        let mut out = String::new();
        for r in responses {
            if r.to == id {
                if let Err(e) = self.raw.step(r) {
                    let _ = writeln!(out, "  error stepping response: {e}");
                }
            } else {
                network.push(r);
            }
        }
        out
    }
}

fn node_line(node: &Node) -> String {
    let raft = node.raw.raft();
    let kind = match raft.tracker().progress.get(&raft.id()) {
        Some(pr) if pr.is_learner => "Learner",
        Some(_) => "Voter",
        // Not (or no longer) in the configuration it knows.
        None => "Non-member",
    };
    let mut extra = String::new();
    if raft.role() == StateRole::Leader {
        if raft.lead_transferee() != 0 {
            let _ = write!(extra, " Transferee:{}", raft.lead_transferee());
        }
        if node.config.read_only_option == ReadOnlyOption::LeaseBased {
            extra += if raft.lease_valid() { " Lease:valid" } else { " Lease:invalid" };
        }
    }
    format!(
        "{}: {:?} ({kind}) Term:{} Vote:{} Lead:{} Commit:{} LastIndex:{}{extra} {}\n",
        raft.id(),
        raft.role(),
        raft.term(),
        raft.vote(),
        raft.leader_id(),
        raft.raft_log().committed,
        raft.raft_log().last_index(),
        raft.tracker().config,
    )
}

/// Parses membership changes written as words: `v4` (add voter 4), `l5` (add learner 5),
/// `r2` (remove 2), `u3` (update 3).
fn parse_changes(text: &str) -> Result<Vec<ConfChangeSingle>, String> {
    text.split_whitespace()
        .map(|word| {
            let (kind, id) = word.split_at(1);
            let change_type = match kind {
                "v" => ConfChangeType::AddNode,
                "l" => ConfChangeType::AddLearnerNode,
                "r" => ConfChangeType::RemoveNode,
                "u" => ConfChangeType::UpdateNode,
                _ => return Err(format!("unknown change {word}: use vN, lN, rN or uN")),
            };
            let node_id = id.parse::<u64>().map_err(|e| format!("change {word}: {e}"))?;
            Ok(ConfChangeSingle { change_type: change_type as i32, node_id })
        })
        .collect()
}

fn error_line(result: tessera_raft::Result<()>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(e) => format!("error: {e}\n"),
    }
}
