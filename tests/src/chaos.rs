//! What the replication suites (`tests/cluster.rs`, `tests/eos.rs`) share:
//! seeded randomness for their nemeses, a producer context that records
//! every delivery report, and small formatting helpers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;

use crate::kafka::Delivery;

/// xorshift64*: enough for choosing victims, and repeatable from the seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `SLUICE_NEMESIS_SEED` if set, else the clock; the seed is
    /// printed so a failing run can be repeated.
    pub fn from_env_or_clock() -> Rng {
        let seed = std::env::var("SLUICE_NEMESIS_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| crate::now_ms().unsigned_abs());
        println!("nemesis seed {seed} (SLUICE_NEMESIS_SEED={seed} repeats the choices)");
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// Producer context: every delivery report, counts of successes and
/// failures readable while the producer runs, librdkafka's recent warnings
/// for failure messages, and every fatal error it raised (an idempotent
/// producer that loses track of its sequences goes fatal instead of writing
/// duplicates).
#[derive(Clone, Default)]
pub struct DeliveryLog(Arc<Inner>);

#[derive(Default)]
struct Inner {
    acked: AtomicUsize,
    failed: AtomicUsize,
    reports: Mutex<Vec<Delivery>>,
    events: Mutex<VecDeque<String>>,
    fatal: Mutex<Vec<String>>,
}

impl DeliveryLog {
    pub fn acked(&self) -> usize {
        self.0.acked.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> usize {
        self.0.failed.load(Ordering::Relaxed)
    }

    pub fn reported(&self) -> usize {
        self.acked() + self.failed()
    }

    pub fn reports(&self) -> Vec<Delivery> {
        self.0.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn report_for(&self, id: usize) -> Option<Delivery> {
        self.0
            .reports
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|d| d.id == id).cloned())
    }

    pub fn fatal(&self) -> Vec<String> {
        self.0.fatal.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The last 30 warnings and errors librdkafka reported.
    pub fn recent_events(&self) -> String {
        match self.0.events.lock() {
            Ok(ev) if !ev.is_empty() => ev.iter().cloned().collect::<Vec<_>>().join("\n"),
            _ => "(no librdkafka warnings)".to_string(),
        }
    }

    fn push_event(&self, line: String) {
        if let Ok(mut ev) = self.0.events.lock() {
            if ev.len() == 30 {
                ev.pop_front();
            }
            ev.push_back(line);
        }
    }
}

impl ClientContext for DeliveryLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.push_event(format!("librdkafka {level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let line = format!("librdkafka error {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            if let Ok(mut f) = self.0.fatal.lock() {
                f.push(line.clone());
            }
        }
        self.push_event(line);
    }
}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let d = match result {
            Ok(m) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                Delivery {
                    id,
                    partition: m.partition(),
                    offset: m.offset(),
                    error: None,
                }
            }
            Err((e, m)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                Delivery {
                    id,
                    partition: m.partition(),
                    offset: -1,
                    error: Some(e.to_string()),
                }
            }
        };
        if let Ok(mut all) = self.0.reports.lock() {
            all.push(d);
        }
    }
}

/// `NAME (code)` for a Kafka error code.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE (0)".to_string(),
        Some(e) => format!("{e:?} ({code})"),
    }
}

/// A duration as `1.5 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
