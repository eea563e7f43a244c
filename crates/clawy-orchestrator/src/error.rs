//! Errors of the orchestrator's tasks. A job step that fails with one of these is
//! recorded as a failed attempt (and retried with backoff); the text is what the
//! owner reads in the job history, so it names the step and never a secret.

use clawy_agent_client::ClientError;
use clawy_core::error::CoreError;
use clawy_core::hosts::HostError;
use clawy_core::instances::InstanceError;
use clawy_core::jobs::JobError;
use clawy_core::metrics::MetricsError;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("host agent: {0}")]
    Agent(#[from] ClientError),
    #[error("host: {0}")]
    Host(#[from] HostError),
    #[error("instance: {0}")]
    Instance(#[from] InstanceError),
    #[error("job: {0}")]
    Job(#[from] JobError),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    /// A read through a core handle that answers with the generic domain error (a
    /// page of instances).
    #[error("{0}")]
    Core(#[from] CoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Step(String),
}

impl OrchestratorError {
    /// The agent answered `busy` (a hypervisor lock, or a task that outlived the
    /// request): the job is deferred, never failed.
    pub fn is_busy(&self) -> bool {
        matches!(self, OrchestratorError::Agent(e) if e.is_busy())
    }

    /// True when the agent could not be reached at all (the host is unreachable).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OrchestratorError::Agent(ClientError::Transport(_)))
    }
}
