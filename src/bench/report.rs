//! The figures a run ends with, as text for people and as one JSON object for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

use super::closed_loop::{ErrorTally, Outcome};

/// What was run, repeated in the report so that a saved JSON object explains itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDescription {
    pub target: String,
    pub endpoint_count: usize,
    pub concurrency: usize,
    pub key_space: u64,
    pub value_bytes: usize,
    pub read_ratio: f64,
}

/// Latency percentiles of one kind of request, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    /// `None` for an empty histogram: percentiles of nothing would read as zero latency.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        })
    }

    fn to_json(self) -> serde_json::Value {
        json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
        })
    }

    fn to_text(self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p999 {}  max {}",
            format_ms(self.p50_us),
            format_ms(self.p90_us),
            format_ms(self.p99_us),
            format_ms(self.p999_us),
            format_ms(self.max_us),
        )
    }
}

/// The end-of-run figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub run: RunDescription,
    pub elapsed_secs: f64,
    pub reads_ok: u64,
    pub writes_ok: u64,
    /// Successful requests per second; failed ones are not throughput.
    pub throughput_ops_per_sec: f64,
    /// All successful requests, reads and writes together.
    pub latency: Option<LatencySummary>,
    pub read_latency: Option<LatencySummary>,
    pub write_latency: Option<LatencySummary>,
    pub errors: BTreeMap<&'static str, ErrorTally>,
}

impl Report {
    pub fn new(run: RunDescription, outcome: &Outcome) -> Self {
        let mut all_latency_us = outcome.read_latency_us.clone();
        all_latency_us.add(&outcome.write_latency_us).expect("histograms with equal bounds merge");
        let elapsed_secs = outcome.elapsed.as_secs_f64();
        let ops_ok = all_latency_us.len();
        Report {
            run,
            elapsed_secs,
            reads_ok: outcome.read_latency_us.len(),
            writes_ok: outcome.write_latency_us.len(),
            throughput_ops_per_sec: if elapsed_secs > 0.0 { ops_ok as f64 / elapsed_secs } else { 0.0 },
            latency: LatencySummary::from_histogram(&all_latency_us),
            read_latency: LatencySummary::from_histogram(&outcome.read_latency_us),
            write_latency: LatencySummary::from_histogram(&outcome.write_latency_us),
            errors: outcome.errors.clone(),
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().map(|tally| tally.count).sum()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let errors: serde_json::Map<String, serde_json::Value> = self
            .errors
            .iter()
            .map(|(kind, tally)| {
                let entry = json!({ "count": tally.count, "first_message": tally.first_message });
                (kind.to_string(), entry)
            })
            .collect();
        json!({
            "target": self.run.target,
            "endpoints": self.run.endpoint_count,
            "concurrency": self.run.concurrency,
            "key_space": self.run.key_space,
            "value_bytes": self.run.value_bytes,
            "read_ratio": self.run.read_ratio,
            "elapsed_secs": self.elapsed_secs,
            "ops_ok": self.reads_ok + self.writes_ok,
            "reads_ok": self.reads_ok,
            "writes_ok": self.writes_ok,
            "errors_total": self.errors_total(),
            "throughput_ops_per_sec": self.throughput_ops_per_sec,
            "latency": self.latency.map(LatencySummary::to_json),
            "read_latency": self.read_latency.map(LatencySummary::to_json),
            "write_latency": self.write_latency.map(LatencySummary::to_json),
            "errors": errors,
        })
    }

    pub fn to_text(&self) -> String {
        let run = &self.run;
        let mut text = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(
            text,
            "target      {} ({} endpoints), {} clients, {} keys, {} B values, {:.0}% reads",
            run.target,
            run.endpoint_count,
            run.concurrency,
            run.key_space,
            run.value_bytes,
            run.read_ratio * 100.0,
        );
        let _ = writeln!(
            text,
            "throughput  {:.0} ops/s ({} reads, {} writes in {:.2} s)",
            self.throughput_ops_per_sec, self.reads_ok, self.writes_ok, self.elapsed_secs,
        );
        for (label, summary) in
            [("latency", self.latency), ("  reads", self.read_latency), ("  writes", self.write_latency)]
        {
            if let Some(summary) = summary {
                let _ = writeln!(text, "{label:<11} {}", summary.to_text());
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(text, "errors      none");
        } else {
            let _ = writeln!(text, "errors      {}", self.errors_total());
            for (kind, tally) in &self.errors {
                let _ = writeln!(text, "  {kind:<9} {} (first: {})", tally.count, tally.first_message);
            }
        }
        text
    }
}

/// Microseconds as milliseconds, with three decimals so that sub-millisecond latencies keep
/// their digits.
fn format_ms(latency_us: u64) -> String {
    format!("{:.3} ms", latency_us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::closed_loop::new_latency_histogram;

    fn run_description() -> RunDescription {
        RunDescription {
            target: "etcd".to_string(),
            endpoint_count: 3,
            concurrency: 16,
            key_space: 1_000,
            value_bytes: 128,
            read_ratio: 0.5,
        }
    }

    /// Writes took 1, 2, ..., 1,000 µs (one each), reads 2,000 µs (100 of them), and 7 busy
    /// errors, in two seconds.
    fn synthetic_outcome() -> Outcome {
        let mut write_latency_us = new_latency_histogram();
        for latency_us in 1..=1_000 {
            write_latency_us.record(latency_us).unwrap();
        }
        let mut read_latency_us = new_latency_histogram();
        read_latency_us.record_n(2_000, 100).unwrap();
        let mut errors = BTreeMap::new();
        errors.insert("busy", ErrorTally { count: 7, first_message: "busy: too many requests".to_string() });
        Outcome { elapsed: Duration::from_secs(2), read_latency_us, write_latency_us, errors }
    }

    #[test]
    fn percentiles_and_throughput_of_synthetic_latencies() {
        let report = Report::new(run_description(), &synthetic_outcome());

        let writes = report.write_latency.unwrap();
        // Below 2,048 µs a three-digit HDR histogram is exact, so these are the true ranks.
        assert_eq!(
            (writes.count, writes.p50_us, writes.p90_us, writes.p99_us, writes.p999_us, writes.max_us),
            (1_000, 500, 900, 990, 999, 1_000)
        );
        assert!((writes.mean_us - 500.5).abs() < 0.01);
        let reads = report.read_latency.unwrap();
        assert_eq!((reads.count, reads.p50_us, reads.max_us), (100, 2_000, 2_000));
        // Together: 1,100 requests; the slowest 100 are the reads at 2 ms, so p90 is the last write
        // below them (rank 990) and p99 is a read.
        let all = report.latency.unwrap();
        assert_eq!((all.count, all.p90_us, all.p99_us), (1_100, 990, 2_000));

        assert_eq!((report.reads_ok, report.writes_ok, report.errors_total()), (100, 1_000, 7));
        assert!((report.throughput_ops_per_sec - 550.0).abs() < 1e-9, "errors are not throughput");
    }

    #[test]
    fn json_carries_the_same_figures() {
        let report = Report::new(run_description(), &synthetic_outcome());
        let text = report.to_json().to_string();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();

        assert_eq!(json["target"], "etcd");
        assert_eq!(json["concurrency"], 16);
        assert_eq!(json["value_bytes"], 128);
        assert_eq!(json["read_ratio"], 0.5);
        assert_eq!(json["ops_ok"], 1_100);
        assert_eq!(json["reads_ok"], 100);
        assert_eq!(json["writes_ok"], 1_000);
        assert_eq!(json["throughput_ops_per_sec"], 550.0);
        assert_eq!(json["elapsed_secs"], 2.0);
        assert_eq!(json["write_latency"]["p50_us"], 500);
        assert_eq!(json["write_latency"]["p90_us"], 900);
        assert_eq!(json["write_latency"]["p99_us"], 990);
        assert_eq!(json["write_latency"]["p999_us"], 999);
        assert_eq!(json["latency"]["p99_us"], 2_000);
        assert_eq!(json["errors_total"], 7);
        assert_eq!(json["errors"]["busy"]["count"], 7);
        assert_eq!(json["errors"]["busy"]["first_message"], "busy: too many requests");
    }

    #[test]
    fn an_empty_run_has_no_percentiles_rather_than_zeros() {
        let outcome = Outcome {
            elapsed: Duration::ZERO,
            read_latency_us: new_latency_histogram(),
            write_latency_us: new_latency_histogram(),
            errors: BTreeMap::new(),
        };
        let report = Report::new(run_description(), &outcome);
        assert_eq!(report.latency, None);
        assert_eq!(report.throughput_ops_per_sec, 0.0);
        assert!(report.to_json()["latency"].is_null());
        assert!(report.to_text().contains("errors      none"));
    }

    #[test]
    fn text_names_the_figures_and_each_error_kind() {
        let text = Report::new(run_description(), &synthetic_outcome()).to_text();
        assert!(text.contains("throughput  550 ops/s (100 reads, 1000 writes in 2.00 s)"), "{text}");
        assert!(text.contains("p99 0.990 ms"), "{text}");
        assert!(text.contains("busy      7 (first: busy: too many requests)"), "{text}");
    }
}
