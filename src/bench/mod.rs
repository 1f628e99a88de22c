//! The load generator behind `tessera bench`.
//!
//! ```text
//! BenchArgs --validate--> Workload + endpoints
//!     etcd::connect / tessera::connect(endpoints, concurrency) -> one KvTarget per client
//!     closed_loop::run(clients, workload) -> Outcome (HDR histograms, errors by kind)
//!     Report::new(run, outcome) -> text or one JSON object
//! ```
//!
//! A new store plugs in by implementing [`KvTarget`] and adding a `--target` value; the
//! loop, the histograms and the report stay as they are.

pub mod closed_loop;
pub mod etcd;
pub mod report;
pub mod target;
pub mod tessera;

pub use target::KvTarget;
