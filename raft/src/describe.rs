//! One-line, human-readable renderings of messages, entries and Readys. The scenario tests
//! print them into golden files, so the format is stable and reviewed like code.

use std::fmt::Write as _;

use tessera_proto::raftpb::{
    ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    MessageType, Snapshot,
};

use crate::raw_node::Ready;
use crate::{LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD, NONE};

pub fn message_type_name(t: MessageType) -> &'static str {
    match t {
        MessageType::MsgHup => "MsgHup",
        MessageType::MsgBeat => "MsgBeat",
        MessageType::MsgPropose => "MsgProp",
        MessageType::MsgAppend => "MsgApp",
        MessageType::MsgAppendResponse => "MsgAppResp",
        MessageType::MsgRequestVote => "MsgVote",
        MessageType::MsgRequestVoteResponse => "MsgVoteResp",
        MessageType::MsgSnapshot => "MsgSnap",
        MessageType::MsgHeartbeat => "MsgHeartbeat",
        MessageType::MsgHeartbeatResponse => "MsgHeartbeatResp",
        MessageType::MsgUnreachable => "MsgUnreachable",
        MessageType::MsgSnapStatus => "MsgSnapStatus",
        MessageType::MsgCheckQuorum => "MsgCheckQuorum",
        MessageType::MsgTransferLeader => "MsgTransferLeader",
        MessageType::MsgTimeoutNow => "MsgTimeoutNow",
        MessageType::MsgReadIndex => "MsgReadIndex",
        MessageType::MsgReadIndexResponse => "MsgReadIndexResp",
        MessageType::MsgRequestPreVote => "MsgPreVote",
        MessageType::MsgRequestPreVoteResponse => "MsgPreVoteResp",
        MessageType::MsgStorageAppend => "MsgStorageAppend",
        MessageType::MsgStorageAppendResponse => "MsgStorageAppendResp",
        MessageType::MsgStorageApply => "MsgStorageApply",
        MessageType::MsgStorageApplyResponse => "MsgStorageApplyResp",
    }
}

pub fn node_name(id: u64) -> String {
    match id {
        NONE => "None".to_string(),
        LOCAL_APPEND_THREAD => "AppendThread".to_string(),
        LOCAL_APPLY_THREAD => "ApplyThread".to_string(),
        id => id.to_string(),
    }
}

fn data_text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("0x{}", data.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

pub fn describe_entry(e: &Entry) -> String {
    let kind = match e.entry_type() {
        EntryType::EntryNormal => "EntryNormal",
        EntryType::EntryConfChange => "EntryConfChange",
        EntryType::EntryConfChangeV2 => "EntryConfChangeV2",
    };
    let mut s = format!("{}/{} {kind}", e.term, e.index);
    match crate::raft::decode_conf_change(e) {
        // A membership change is protobuf bytes: show what it changes instead.
        Ok(Some(cc)) => {
            let _ = write!(s, " {}", describe_conf_change(&cc));
        }
        _ if !e.data.is_empty() => {
            let _ = write!(s, " {}", data_text(&e.data));
        }
        _ => {}
    }
    s
}

/// A membership change as words: `v4` adds voter 4, `l5` learner 5, `r2` removes 2, `u3`
/// updates 3; `leave-joint` leaves a joint configuration.
pub fn describe_conf_change(cc: &ConfChangeV2) -> String {
    if crate::raft::is_leave_joint(cc) {
        return "leave-joint".to_string();
    }
    let mut words: Vec<String> = match cc.transition() {
        ConfChangeTransition::Auto => Vec::new(),
        ConfChangeTransition::JointImplicit => vec!["transition=implicit".to_string()],
        ConfChangeTransition::JointExplicit => vec!["transition=explicit".to_string()],
    };
    for c in &cc.changes {
        let letter = match ConfChangeType::try_from(c.change_type) {
            Ok(ConfChangeType::AddNode) => "v",
            Ok(ConfChangeType::AddLearnerNode) => "l",
            Ok(ConfChangeType::RemoveNode) => "r",
            Ok(ConfChangeType::UpdateNode) => "u",
            Err(_) => "?",
        };
        words.push(format!("{letter}{}", c.node_id));
    }
    words.join(" ")
}

pub fn describe_entries(entries: &[Entry]) -> String {
    entries.iter().map(describe_entry).collect::<Vec<_>>().join(", ")
}

pub fn describe_hard_state(hs: &HardState) -> String {
    format!("Term:{} Vote:{} Commit:{}", hs.term, hs.vote, hs.commit)
}

pub fn describe_snapshot(s: &Snapshot) -> String {
    let meta = s.metadata.clone().unwrap_or_default();
    let cs = meta.conf_state.unwrap_or_default();
    format!("Index:{} Term:{} ConfState:{}", meta.index, meta.term, describe_conf_state(&cs))
}

/// A configuration as `Voters:[..]&&[outgoing] Learners:[..]`, with `LearnersNext` and
/// `AutoLeave` only when set.
pub fn describe_conf_state(cs: &ConfState) -> String {
    let mut out = format!("Voters:{:?}", cs.voters);
    if !cs.voters_outgoing.is_empty() {
        let _ = write!(out, "&&{:?}", cs.voters_outgoing);
    }
    let _ = write!(out, " Learners:{:?}", cs.learners);
    if !cs.learners_next.is_empty() {
        let _ = write!(out, " LearnersNext:{:?}", cs.learners_next);
    }
    if cs.auto_leave {
        out.push_str(" AutoLeave:true");
    }
    out
}

pub fn describe_message(m: &Message) -> String {
    let t = m.msg_type();
    let mut s =
        format!("{}->{} {} Term:{}", node_name(m.from), node_name(m.to), message_type_name(t), m.term);
    let _ = write!(s, " Log:{}/{}", m.log_term, m.index);
    if m.reject {
        let _ = write!(s, " Rejected (Hint: {})", m.reject_hint);
    }
    if m.commit != 0 {
        let _ = write!(s, " Commit:{}", m.commit);
    }
    if m.vote != 0 {
        let _ = write!(s, " Vote:{}", m.vote);
    }
    if !m.entries.is_empty() {
        let _ = write!(s, " Entries:[{}]", describe_entries(&m.entries));
    }
    if let Some(snapshot) = &m.snapshot {
        let _ = write!(s, " Snapshot: {}", describe_snapshot(snapshot));
    }
    let heartbeat = matches!(t, MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse);
    match crate::read_only::context_round(&m.context) {
        // Heartbeat contexts are read-confirmation round numbers; show them as such.
        Some(round) if heartbeat => {
            let _ = write!(s, " Round:{round}");
        }
        _ if !m.context.is_empty() => {
            let _ = write!(s, " Context:{}", data_text(&m.context));
        }
        _ => {}
    }
    for r in &m.responses {
        let _ = write!(s, "\n  Response: {}", describe_message(r));
    }
    s
}

/// A multi-line rendering of a Ready, empty sections left out.
pub fn describe_ready(rd: &Ready) -> String {
    let mut s = String::new();
    if let Some(ss) = &rd.soft_state {
        let _ = writeln!(s, "Lead:{} State:{:?}", ss.leader_id, ss.role);
    }
    if let Some(hs) = &rd.hard_state {
        let _ = writeln!(s, "HardState {}", describe_hard_state(hs));
    }
    if !rd.entries.is_empty() {
        let _ = writeln!(s, "Entries:");
        for e in &rd.entries {
            let _ = writeln!(s, "{}", describe_entry(e));
        }
    }
    if let Some(snapshot) = &rd.snapshot {
        let _ = writeln!(s, "Snapshot {}", describe_snapshot(snapshot));
    }
    if !rd.committed_entries.is_empty() {
        let _ = writeln!(s, "CommittedEntries:");
        for e in &rd.committed_entries {
            let _ = writeln!(s, "{}", describe_entry(e));
        }
    }
    if !rd.messages.is_empty() {
        let _ = writeln!(s, "Messages:");
        for m in &rd.messages {
            let _ = writeln!(s, "{}", describe_message(m));
        }
    }
    if !rd.read_states.is_empty() {
        let _ = writeln!(s, "ReadStates:");
        for rs in &rd.read_states {
            let _ = writeln!(s, "Index:{} Context:{}", rs.index, data_text(&rs.request_ctx));
        }
    }
    if !rd.persisted_messages.is_empty() {
        let _ = writeln!(s, "OnSync:");
        for m in &rd.persisted_messages {
            let _ = writeln!(s, "{}", describe_message(m));
        }
    }
    s
}
