//! How a store's refusal reads to a KV client.

use tessera_proto::kvpb::{
    kv_error, EpochNotMatch, KeyNotInRegion, KvError, NotLeader, OtherError, OtherErrorKind, RegionNotFound,
    ServerIsBusy,
};
use tessera_store::StoreError;

/// The `KvError` a client gets for `error`. Every store error has a kind of its own, so a
/// client never has to parse a message to decide whether to retry, reroute or give up.
pub fn kv_error_of(error: StoreError) -> KvError {
    let kind = match error {
        StoreError::NotLeader { region_id, leader } => {
            kv_error::Kind::NotLeader(NotLeader { region_id, leader })
        }
        StoreError::RegionNotFound(region_id) => kv_error::Kind::RegionNotFound(RegionNotFound { region_id }),
        StoreError::KeyNotInRegion { key, region_id, start_key, end_key } => {
            kv_error::Kind::KeyNotInRegion(KeyNotInRegion { key, region_id, start_key, end_key })
        }
        StoreError::EpochNotMatch { current } => {
            kv_error::Kind::EpochNotMatch(EpochNotMatch { current: Some(*current) })
        }
        StoreError::ServerIsBusy(reason) => kv_error::Kind::ServerIsBusy(ServerIsBusy { reason }),
        StoreError::ProposalDropped(message) => other(OtherErrorKind::ProposalDropped, message),
        StoreError::InvalidCommand(message) => other(OtherErrorKind::InvalidCommand, message),
        StoreError::StoreStopped => other(OtherErrorKind::StoreStopped, "the store is stopped".into()),
    };
    KvError { kind: Some(kind) }
}

/// The error of a request the store did not answer within the service's timeout.
pub(crate) fn timeout_error(timeout_ms: u128) -> KvError {
    KvError {
        kind: Some(other(
            OtherErrorKind::Timeout,
            format!("no answer from the store within {timeout_ms} ms"),
        )),
    }
}

/// The error of a key that no region hosted here holds (routing by key found nothing).
pub(crate) fn no_region_for_key() -> KvError {
    KvError { kind: Some(kv_error::Kind::RegionNotFound(RegionNotFound { region_id: 0 })) }
}

fn other(kind: OtherErrorKind, message: String) -> kv_error::Kind {
    kv_error::Kind::Other(OtherError { kind: kind as i32, message })
}

#[cfg(test)]
mod tests {
    use tessera_proto::storepb::{Peer, Region};

    use super::*;

    #[test]
    fn every_store_error_keeps_its_kind_and_details() {
        let leader = Peer { id: 1002, store_id: 2, role: 0 };
        let not_leader = kv_error_of(StoreError::NotLeader { region_id: 1, leader: Some(leader) });
        assert_eq!(
            not_leader.kind,
            Some(kv_error::Kind::NotLeader(NotLeader { region_id: 1, leader: Some(leader) }))
        );

        let current = Region { id: 3, end_key: b"m".to_vec(), ..Default::default() };
        let stale = kv_error_of(StoreError::EpochNotMatch { current: Box::new(current.clone()) });
        assert_eq!(stale.kind, Some(kv_error::Kind::EpochNotMatch(EpochNotMatch { current: Some(current) })));

        let outside = kv_error_of(StoreError::KeyNotInRegion {
            key: b"z".to_vec(),
            region_id: 3,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
        });
        assert!(
            matches!(outside.kind, Some(kv_error::Kind::KeyNotInRegion(k)) if k.key == b"z" && k.end_key == b"m")
        );

        assert_eq!(
            kv_error_of(StoreError::RegionNotFound(9)).kind,
            Some(kv_error::Kind::RegionNotFound(RegionNotFound { region_id: 9 }))
        );
        assert!(matches!(
            kv_error_of(StoreError::ServerIsBusy("full".into())).kind,
            Some(kv_error::Kind::ServerIsBusy(_))
        ));
        for (error, kind) in [
            (StoreError::ProposalDropped("replaced".into()), OtherErrorKind::ProposalDropped),
            (StoreError::InvalidCommand("bad".into()), OtherErrorKind::InvalidCommand),
            (StoreError::StoreStopped, OtherErrorKind::StoreStopped),
        ] {
            let Some(kv_error::Kind::Other(other)) = kv_error_of(error).kind else {
                panic!("an other error")
            };
            assert_eq!(other.kind(), kind);
        }
    }
}
