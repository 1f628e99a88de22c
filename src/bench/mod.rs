//! The load generator behind `tessera bench`.
//!
//! ```text
//! BenchArgs --validate--> Workload + endpoints
//!     target::connect(endpoints) -> one KvTarget per client (etcd today, Tessera later)
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

pub use target::KvTarget;
