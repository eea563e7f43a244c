//! clawy-orchestrator: the control plane's background work for issue 4 — the durable
//! job runner, the reconciler, the metrics/health poller and host refresher, and the
//! crash-injection points the crash tests use.

pub mod crash;
pub mod fake_agent;
