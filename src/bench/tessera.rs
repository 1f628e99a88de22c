//! The Tessera target: puts and linearizable gets through [`tessera::Client`], which routes
//! each key to its region's leader and follows redirects.

use bytes::Bytes;
use tessera::{Client, ClientConfig, ClientError};

use super::target::{KvError, KvTarget};

/// One closed-loop client's handle on a Tessera cluster. Every handle shares one client:
/// its connections (one HTTP/2 connection per node) and its region cache.
#[derive(Debug, Clone)]
pub struct TesseraClient {
    client: Client,
}

/// Connects to the nodes (the KV address of every node of the cluster) and returns
/// `client_count` handles. Fails when no node answers.
pub async fn connect(endpoints: &[String], client_count: usize) -> Result<Vec<TesseraClient>, KvError> {
    let client = Client::connect(endpoints, ClientConfig::default()).await.map_err(error_from_client)?;
    Ok(vec![TesseraClient { client }; client_count])
}

impl KvTarget for TesseraClient {
    async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), KvError> {
        self.client.put(&key, &value).await.map_err(error_from_client)
    }

    async fn get(&mut self, key: Bytes) -> Result<Option<Bytes>, KvError> {
        let value = self.client.get(&key).await.map_err(error_from_client)?;
        Ok(value.map(Bytes::from))
    }
}

/// Sorts the client's errors into the report's kinds. The client already retried what a
/// retry could fix, so what reaches here is final.
fn error_from_client(error: ClientError) -> KvError {
    let message = error.to_string();
    match error {
        ClientError::Timeout { .. } => KvError::Timeout(message),
        ClientError::NoEndpoint(_) => KvError::Unavailable(message),
        ClientError::InvalidArgument(_) => KvError::Rejected(message),
        ClientError::Refused(_) => KvError::Server(message),
    }
}
