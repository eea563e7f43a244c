//! The instance lifecycle as values and one pure decision: the states an instance
//! moves through, the job kinds that move it, and [`decide`], which says what a
//! lifecycle request (start, stop, reboot, delete, retry) does given the instance's
//! state, its desired power and its unfinished jobs. No database: `instances` reads
//! the inputs in a transaction and writes what the decision says; only the job runner
//! (through `jobs`) changes `state`.
//!
//! ```text
//! pending → provisioning → running ⇄ stopped → deleting → deleted
//!                 └──────────┴─────────┴──→ error (retry or delete)
//! ```

use serde::Serialize;

/// Lifecycle state, changed only by the job runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Provisioning,
    Running,
    Stopped,
    Deleting,
    Deleted,
    Error,
}

impl InstanceState {
    pub const ALL: &'static [InstanceState] = &[
        InstanceState::Pending,
        InstanceState::Provisioning,
        InstanceState::Running,
        InstanceState::Stopped,
        InstanceState::Deleting,
        InstanceState::Deleted,
        InstanceState::Error,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Provisioning => "provisioning",
            InstanceState::Running => "running",
            InstanceState::Stopped => "stopped",
            InstanceState::Deleting => "deleting",
            InstanceState::Deleted => "deleted",
            InstanceState::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<InstanceState> {
        Self::ALL.iter().copied().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the owner asked the VM's power to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredPower {
    Running,
    Stopped,
}

impl DesiredPower {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredPower::Running => "running",
            DesiredPower::Stopped => "stopped",
        }
    }
    pub fn parse(s: &str) -> Option<DesiredPower> {
        match s {
            "running" => Some(DesiredPower::Running),
            "stopped" => Some(DesiredPower::Stopped),
            _ => None,
        }
    }
}

/// The durable steps that change an instance (one job each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Provision,
    Start,
    Stop,
    Reboot,
    Delete,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Reboot => "reboot",
            JobKind::Delete => "delete",
        }
    }
    pub fn parse(s: &str) -> Option<JobKind> {
        [
            JobKind::Provision,
            JobKind::Start,
            JobKind::Stop,
            JobKind::Reboot,
            JobKind::Delete,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
    /// The instance state a successful job leaves behind.
    pub fn final_state(self) -> InstanceState {
        match self {
            JobKind::Provision | JobKind::Start | JobKind::Reboot => InstanceState::Running,
            JobKind::Stop => InstanceState::Stopped,
            JobKind::Delete => InstanceState::Deleted,
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// A queued job made pointless by a delete request.
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What an owner (or operator) asks of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    Start,
    Stop,
    Reboot,
    Delete,
    Retry,
}

impl LifecycleAction {
    pub const ALL: [LifecycleAction; 5] = [
        LifecycleAction::Start,
        LifecycleAction::Stop,
        LifecycleAction::Reboot,
        LifecycleAction::Delete,
        LifecycleAction::Retry,
    ];
    pub fn verb(self) -> &'static str {
        match self {
            LifecycleAction::Start => "start",
            LifecycleAction::Stop => "stop",
            LifecycleAction::Reboot => "reboot",
            LifecycleAction::Delete => "delete",
            LifecycleAction::Retry => "retry",
        }
    }
}

/// What a request does: the job to insert (`None`: already satisfied or already
/// queued — the request is idempotent) and the desired power afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub job: Option<JobKind>,
    pub desired: DesiredPower,
}

/// Why a request is refused: "Cannot {action} an instance that is {state}."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub action: &'static str,
    /// The state as the message names it (`being deleted` while a delete runs).
    pub state: String,
}

/// The decision for `action` on an instance in `state` with `desired` power, whose
/// jobs (in queue order, any state) are `jobs`.
///
/// - Delete always wins: it is accepted in every state and cancels queued jobs
///   (the caller does that when the decision carries a delete job); a second delete
///   is a no-op. While deleting, everything else is refused.
/// - Start/stop are idempotent: when the instance is already (heading) where the
///   request wants it, no job is added.
/// - Start/stop/reboot on an instance in `error` are refused: retry or delete it.
/// - Reboot needs a running instance that should run; one queued reboot is enough.
/// - Retry needs `error`; it re-queues the kind that failed last (provision if none).
pub fn decide(
    action: LifecycleAction,
    state: InstanceState,
    desired: DesiredPower,
    jobs: &[(JobKind, JobState)],
) -> Result<Decision, Refused> {
    let unfinished: Vec<JobKind> = jobs
        .iter()
        .filter(|(_, s)| matches!(s, JobState::Queued | JobState::Running))
        .map(|(k, _)| *k)
        .collect();
    let queued = |kind: JobKind| jobs.contains(&(kind, JobState::Queued));
    let last_failed = jobs
        .iter()
        .rev()
        .find(|(_, s)| *s == JobState::Failed)
        .map(|(k, _)| *k);
    let deleting = matches!(state, InstanceState::Deleting | InstanceState::Deleted)
        || unfinished.contains(&JobKind::Delete);
    let refuse = |action: LifecycleAction| Refused {
        action: action.verb(),
        state: if deleting && state != InstanceState::Deleted {
            "being deleted".to_string()
        } else {
            state.to_string()
        },
    };
    let nothing = Decision { job: None, desired };
    let queue = |kind: JobKind, desired: DesiredPower| Decision {
        job: Some(kind),
        desired,
    };
    match action {
        LifecycleAction::Delete if deleting => Ok(nothing),
        LifecycleAction::Delete => Ok(queue(JobKind::Delete, DesiredPower::Stopped)),
        _ if deleting => Err(refuse(action)),
        _ if state == InstanceState::Error && action != LifecycleAction::Retry => {
            Err(refuse(action))
        }
        LifecycleAction::Start => {
            let heading_up = desired == DesiredPower::Running
                && (matches!(
                    state,
                    InstanceState::Running | InstanceState::Pending | InstanceState::Provisioning
                ) || unfinished
                    .iter()
                    .any(|k| matches!(k, JobKind::Start | JobKind::Provision | JobKind::Reboot)));
            if heading_up {
                Ok(nothing)
            } else {
                Ok(queue(JobKind::Start, DesiredPower::Running))
            }
        }
        LifecycleAction::Stop => {
            let heading_down = desired == DesiredPower::Stopped
                && (state == InstanceState::Stopped || unfinished.contains(&JobKind::Stop));
            if heading_down {
                Ok(nothing)
            } else {
                Ok(queue(JobKind::Stop, DesiredPower::Stopped))
            }
        }
        LifecycleAction::Reboot => {
            if state != InstanceState::Running || desired != DesiredPower::Running {
                Err(refuse(action))
            } else if queued(JobKind::Reboot) {
                Ok(nothing)
            } else {
                Ok(queue(JobKind::Reboot, desired))
            }
        }
        LifecycleAction::Retry => {
            if state != InstanceState::Error {
                Err(refuse(action))
            } else if !unfinished.is_empty() {
                // Already re-queued: idempotent.
                Ok(nothing)
            } else {
                Ok(queue(last_failed.unwrap_or(JobKind::Provision), desired))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DesiredPower::{Running as Up, Stopped as Down};
    use LifecycleAction as A;

    fn job(kind: JobKind) -> Option<JobKind> {
        Some(kind)
    }

    fn ok(d: Result<Decision, Refused>) -> (Option<JobKind>, DesiredPower) {
        let d = d.unwrap_or_else(|r| panic!("refused: {r:?}"));
        (d.job, d.desired)
    }

    fn refused(d: Result<Decision, Refused>) -> String {
        match d {
            Err(r) => format!("{} while {}", r.action, r.state),
            Ok(d) => panic!("accepted: {d:?}"),
        }
    }

    #[test]
    fn states_round_trip() {
        for s in InstanceState::ALL {
            assert_eq!(InstanceState::parse(s.as_str()), Some(*s));
        }
        for k in [JobKind::Provision, JobKind::Delete] {
            assert_eq!(JobKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn start_and_stop_are_idempotent() {
        use InstanceState::*;
        // Already running, or on its way up: nothing to queue.
        for s in [Running, Pending, Provisioning] {
            assert_eq!(ok(decide(A::Start, s, Up, &[])), (None, Up));
        }
        assert_eq!(
            ok(decide(
                A::Start,
                Stopped,
                Up,
                &[(JobKind::Start, JobState::Queued)]
            )),
            (None, Up)
        );
        // Stopped: a start job, and the desired power flips.
        assert_eq!(
            ok(decide(A::Start, Stopped, Down, &[])),
            (job(JobKind::Start), Up)
        );
        // A running instance that was asked to stop (stop queued): start queues again.
        assert_eq!(
            ok(decide(
                A::Start,
                Running,
                Down,
                &[(JobKind::Stop, JobState::Queued)]
            )),
            (job(JobKind::Start), Up)
        );
        assert_eq!(
            ok(decide(A::Stop, Running, Up, &[])),
            (job(JobKind::Stop), Down)
        );
        assert_eq!(ok(decide(A::Stop, Stopped, Down, &[])), (None, Down));
        assert_eq!(
            ok(decide(
                A::Stop,
                Running,
                Down,
                &[(JobKind::Stop, JobState::Running)]
            )),
            (None, Down)
        );
    }

    #[test]
    fn delete_always_wins_and_blocks_the_rest() {
        use InstanceState::*;
        for s in [Pending, Provisioning, Running, Stopped, Error] {
            assert_eq!(
                ok(decide(A::Delete, s, Up, &[])),
                (job(JobKind::Delete), Down)
            );
        }
        // A second delete is a no-op, whether the job is still queued or done.
        let queued_delete = [(JobKind::Delete, JobState::Queued)];
        assert_eq!(
            ok(decide(A::Delete, Running, Down, &queued_delete)),
            (None, Down)
        );
        assert_eq!(ok(decide(A::Delete, Deleted, Down, &[])), (None, Down));
        for a in [A::Start, A::Stop, A::Reboot, A::Retry] {
            assert_eq!(
                refused(decide(a, Running, Down, &queued_delete)),
                format!("{} while being deleted", a.verb())
            );
            assert_eq!(
                refused(decide(a, Deleted, Down, &[])),
                format!("{} while deleted", a.verb())
            );
        }
    }

    #[test]
    fn error_needs_retry_or_delete() {
        use InstanceState::*;
        for a in [A::Start, A::Stop, A::Reboot] {
            assert_eq!(
                refused(decide(a, Error, Up, &[])),
                format!("{} while error", a.verb())
            );
        }
        // Retry re-queues what failed last, or provision when nothing did.
        let failed = [
            (JobKind::Provision, JobState::Failed),
            (JobKind::Start, JobState::Failed),
        ];
        assert_eq!(
            ok(decide(A::Retry, Error, Up, &failed)),
            (job(JobKind::Start), Up)
        );
        assert_eq!(
            ok(decide(A::Retry, Error, Up, &[])),
            (job(JobKind::Provision), Up)
        );
        // A second retry while the first is queued adds nothing.
        assert_eq!(
            ok(decide(
                A::Retry,
                Error,
                Up,
                &[(JobKind::Start, JobState::Queued)]
            )),
            (None, Up)
        );
        assert_eq!(
            refused(decide(A::Retry, Running, Up, &[])),
            "retry while running"
        );
    }

    #[test]
    fn reboot_needs_a_running_instance_and_queues_once() {
        use InstanceState::*;
        assert_eq!(
            ok(decide(A::Reboot, Running, Up, &[])),
            (job(JobKind::Reboot), Up)
        );
        assert_eq!(
            ok(decide(
                A::Reboot,
                Running,
                Up,
                &[(JobKind::Reboot, JobState::Queued)]
            )),
            (None, Up)
        );
        // A reboot that is already running does not block another one.
        assert_eq!(
            ok(decide(
                A::Reboot,
                Running,
                Up,
                &[(JobKind::Reboot, JobState::Running)]
            )),
            (job(JobKind::Reboot), Up)
        );
        for s in [Pending, Provisioning, Stopped] {
            assert_eq!(
                refused(decide(A::Reboot, s, Up, &[])),
                format!("reboot while {s}")
            );
        }
        assert_eq!(
            refused(decide(A::Reboot, Running, Down, &[])),
            "reboot while running"
        );
    }
}
