//! Prometheus metrics (opt-in with `--metrics-addr`): what the timeline counts, and what the
//! kernel side lost or cut, served as text exposition on `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hooks::KernelCounters;
use crate::correlate::invocation::{Invocation, Op, Step};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvLabels {
    command: String,
    verdict: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CmdLabels {
    command: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    command: String,
    plugin: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailLabels {
    plugin: String,
    command: String,
    reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    object: String,
    verb: String,
    outcome: String,
    errno: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

fn buckets() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    invocations: Family<InvLabels, Counter>,
    invocation_seconds: Family<CmdLabels, Histogram, fn() -> Histogram>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    step_failures: Family<FailLabels, Counter>,
    netlink_ops: Family<OpLabels, Counter>,
    lost: Family<KindLabels, Counter>,
    cut_bytes: Counter,
    retained: Gauge,
    /// Last kernel totals, to turn them into counter increments.
    last_lost: [AtomicU64; 5],
    last_cut: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("cniscope");
        let invocations = Family::<InvLabels, Counter>::default();
        let invocation_seconds =
            Family::<CmdLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                buckets as fn() -> Histogram,
            );
        let step_seconds = Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            buckets as fn() -> Histogram,
        );
        let step_failures = Family::<FailLabels, Counter>::default();
        let netlink_ops = Family::<OpLabels, Counter>::default();
        let lost = Family::<KindLabels, Counter>::default();
        let cut_bytes = Counter::default();
        let retained = Gauge::default();
        registry.register(
            "invocations",
            "Finished CNI invocations by command and verdict",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Invocation duration, first exec to last exit",
            invocation_seconds.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Plugin run duration, exec to exit",
            step_seconds.clone(),
        );
        registry.register(
            "step_failures",
            "Failed plugin runs by plugin and reason",
            step_failures.clone(),
        );
        registry.register(
            "netlink_ops",
            "rtnetlink changes by object, verb and outcome",
            netlink_ops.clone(),
        );
        registry.register(
            "lost_records",
            "Ring-buffer records lost, by kind",
            lost.clone(),
        );
        registry.register(
            "cut_bytes",
            "Stdio bytes seen but not copied (caps)",
            cut_bytes.clone(),
        );
        registry.register(
            "retained_items",
            "Invocations and netns changes kept for clients",
            retained.clone(),
        );
        Arc::new(Self {
            registry,
            invocations,
            invocation_seconds,
            step_seconds,
            step_failures,
            netlink_ops,
            lost,
            cut_bytes,
            retained,
            last_lost: Default::default(),
            last_cut: AtomicU64::new(0),
        })
    }

    fn op(&self, o: &Op) {
        let oc = &o.change.outcome;
        self.netlink_ops
            .get_or_create(&OpLabels {
                object: o.change.object.to_string(),
                verb: o.change.verb.to_string(),
                outcome: serde_json::to_value(oc.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                errno: oc.errno.map(|e| e.to_string()).unwrap_or_default(),
            })
            .inc();
    }

    fn step(&self, command: &str, s: &Step) {
        if let Some(d) = s.duration_ns {
            self.step_seconds
                .get_or_create(&StepLabels {
                    command: command.into(),
                    plugin: s.plugin.clone(),
                })
                .observe(d as f64 / 1e9);
        }
        if !s.ok {
            let reason = match (&s.error, s.exit.as_ref().and_then(|x| x.signal)) {
                (Some(e), _) => format!(
                    "cni-error-{}",
                    e.get("code").unwrap_or(&serde_json::Value::Null)
                ),
                (None, Some(sig)) => format!("signal-{sig}"),
                _ => "exit".into(),
            };
            self.step_failures
                .get_or_create(&FailLabels {
                    plugin: s.plugin.clone(),
                    command: command.into(),
                    reason,
                })
                .inc();
        }
        for o in &s.netlink {
            self.op(o);
        }
        for d in &s.delegates {
            self.step(command, d);
        }
        for i in &s.invocations {
            self.invocation(i);
        }
    }

    pub fn invocation(&self, inv: &Invocation) {
        let verdict = if inv.verdict.ok { "ok" } else { "failed" };
        self.invocations
            .get_or_create(&InvLabels {
                command: inv.command.clone(),
                verdict: verdict.into(),
            })
            .inc();
        if let Some(d) = inv.duration_ns {
            self.invocation_seconds
                .get_or_create(&CmdLabels {
                    command: inv.command.clone(),
                })
                .observe(d as f64 / 1e9);
        }
        for s in &inv.steps {
            self.step(&inv.command, s);
        }
    }

    pub fn netns_op(&self, o: &Op) {
        self.op(o);
    }

    pub fn kernel(&self, k: &KernelCounters, retained: usize) {
        let kinds = [
            ("exec", k.lost_exec),
            ("fork", k.lost_fork),
            ("exit", k.lost_exit),
            ("stdio", k.lost_stdio),
            ("netlink", k.lost_netlink),
        ];
        for (i, (kind, v)) in kinds.into_iter().enumerate() {
            let prev = self.last_lost[i].swap(v, Ordering::Relaxed);
            let c = self.lost.get_or_create(&KindLabels { kind: kind.into() });
            c.inc_by(v.saturating_sub(prev));
        }
        let prev = self.last_cut.swap(k.cut_bytes, Ordering::Relaxed);
        self.cut_bytes.inc_by(k.cut_bytes.saturating_sub(prev));
        self.retained.set(retained as i64);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Serves `GET /metrics` (anything else gets 404) on `listener`.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics listener: {e}");
            return;
        }
    };
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body, ctype) =
                if req.starts_with("GET /metrics ") || req.starts_with("GET /metrics?") {
                    (
                        "200 OK",
                        m.render(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                } else {
                    ("404 Not Found", "try /metrics\n".to_string(), "text/plain")
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}
