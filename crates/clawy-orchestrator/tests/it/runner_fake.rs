//! The job runner against the fake agent: lifecycle, idempotence after a lost lease,
//! backoff while the host does not answer, give-up and retry.

use std::time::Duration;

use clawy_core::Actor;
use clawy_core::instances::InstanceState;
use clawy_core::jobs::{JobKind, JobState};
use clawy_orchestrator::runner::JobOutcome;
use clawy_proto::agent::VmState;

use crate::common::{Fixture, fake};

#[tokio::test]
async fn iso_4_provision_stop_start_reboot_delete_frees_allocations() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.90.1").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    assert_eq!(inst.state, InstanceState::Pending);
    let runner = f.runner("t");

    assert_eq!(f.drain(&runner).await, 1);
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running);
    assert_eq!(got.private_ip.as_deref(), Some("10.90.1.2"));
    assert_eq!(got.ssh_port, Some(22000));
    // The agent VM id IS the instance id; the spec carries the allocation.
    let vm = agent.vm(&inst.id).unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.spec.private_ip, "10.90.1.2");
    assert_eq!(vm.spec.hostname, "alpha");
    assert_eq!(vm.spec.port_forwards[0].host_port, 22000);
    assert_eq!(vm.spec.port_forwards[0].guest_port, 22);
    assert_eq!(agent.counters().creates[&inst.id], 1);
    // DATA-5: the undelivered secrets went with the provisioning ensure, beside the
    // spec (the fake, like the agent, keeps them out of it).
    assert_eq!(agent.counters().ensures_with_secrets[&inst.id], 1);
    assert!(
        f.core
            .guest_secrets()
            .pending(&inst.id)
            .await
            .unwrap()
            .is_some()
    );

    let caller = Actor::system();
    f.core
        .instances()
        .request(
            &caller,
            &user.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Stop,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    assert_eq!(agent.vm(&inst.id).unwrap().state, VmState::Stopped);
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Stopped
    );

    f.core
        .instances()
        .request(
            &caller,
            &user.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Start,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    assert_eq!(agent.vm(&inst.id).unwrap().state, VmState::Running);
    f.core
        .instances()
        .request(
            &caller,
            &user.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Reboot,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Running
    );

    f.core
        .instances()
        .request(
            &caller,
            &user.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Delete,
        )
        .await
        .unwrap();
    f.drain(&runner).await;
    let gone = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(gone.state, InstanceState::Deleted);
    assert!(gone.private_ip.is_none() && gone.ssh_port.is_none() && gone.mac.is_none());
    assert!(agent.vm(&inst.id).is_none());
    // The freed address and port are handed out again.
    let next = f.create(&user, "beta").await;
    assert_eq!(next.private_ip.as_deref(), Some("10.90.1.2"));
    assert_eq!(next.ssh_port, Some(22000));
    // Every transition is an event the owner can read (ACCESS-3).
    let events = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    let changes: Vec<&str> = events
        .iter()
        .filter(|e| e.action == "instance_state_changed")
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        changes.iter().any(|d| d.contains("provisioning → running")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|d| d.contains("deleting → deleted")),
        "{changes:?}"
    );
}

#[tokio::test]
async fn lease_expired_job_is_taken_over_without_a_second_vm() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.90.2").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    // A worker claims the job and dies (never renews, never completes).
    let dead = f
        .core
        .jobs()
        .claim("dead-worker", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let runner = f.runner("t");
    // While the lease holds, nobody else can take it.
    assert!(runner.run_one("w").await.unwrap().is_none());
    f.clock.advance(Duration::from_secs(61));
    let (job, outcome) = runner.run_one("w").await.unwrap().unwrap();
    assert_eq!(job.id, dead.id);
    assert_eq!(job.attempts, 2);
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert_eq!(agent.counters().creates[&inst.id], 1);
    let history = f.core.jobs().history(&inst.id).await.unwrap();
    let outcomes: Vec<Option<&str>> = history[0]
        .attempt_log
        .iter()
        .map(|a| a.outcome.as_deref())
        .collect();
    assert_eq!(outcomes, vec![Some("lease_expired"), Some("succeeded")]);
}

#[tokio::test]
async fn unreachable_host_backs_off_then_recovers() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.90.3").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    agent.set_down(true);
    let runner = f.runner("t");
    let (_, outcome) = runner.run_one("w").await.unwrap().unwrap();
    assert_eq!(outcome, JobOutcome::Retrying);
    let job = &f.core.jobs().history(&inst.id).await.unwrap()[0].job;
    assert_eq!(job.state, JobState::Queued);
    assert!(
        job.last_error.as_deref().unwrap().contains("503"),
        "{job:?}"
    );
    // Backoff: not runnable before 2 s (2^1) have passed, runnable after (+ ≤10 % jitter).
    let wait = job.run_after - f.core.now();
    assert!(
        wait >= chrono::Duration::seconds(2) && wait <= chrono::Duration::milliseconds(2200),
        "{wait}"
    );
    assert!(runner.run_one("w").await.unwrap().is_none());
    f.clock.advance(Duration::from_millis(2300));
    let (_, outcome) = runner.run_one("w").await.unwrap().unwrap();
    assert_eq!(outcome, JobOutcome::Retrying);
    let job = &f.core.jobs().history(&inst.id).await.unwrap()[0].job;
    let wait = job.run_after - f.core.now();
    assert!(
        wait >= chrono::Duration::seconds(4),
        "backoff doubles: {wait}"
    );
    // The host answers again: the next attempt succeeds.
    agent.set_down(false);
    f.clock.advance(Duration::from_secs(5));
    let (_, outcome) = runner.run_one("w").await.unwrap().unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Running
    );
    let history = f.core.jobs().history(&inst.id).await.unwrap();
    assert_eq!(history[0].attempt_log.len(), 3);
    let events = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "job_retry").count(), 2);
}

/// Busy is not failure: a host answering `busy` (a hypervisor lock) defers the
/// job without using up attempts, far more often than `max_attempts`, and the
/// instance never goes to `error`.
#[tokio::test]
async fn busy_host_defers_without_failing_the_instance() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.90.7").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    agent.set_busy(true);
    let runner = f.runner("t");
    let max = f.core.jobs().history(&inst.id).await.unwrap()[0]
        .job
        .max_attempts;
    for _ in 0..(max + 3) {
        let (_, outcome) = runner.run_one("w").await.unwrap().unwrap();
        assert_eq!(outcome, JobOutcome::Deferred);
        let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
        assert_ne!(got.state, InstanceState::Error);
        // Not runnable again before the busy pause has passed.
        assert!(runner.run_one("w").await.unwrap().is_none());
        f.clock.advance(Duration::from_secs(6));
    }
    let job = &f.core.jobs().history(&inst.id).await.unwrap()[0].job;
    assert_eq!(job.state, JobState::Queued);
    assert!(
        job.last_error.as_deref().unwrap().contains("locked"),
        "{job:?}"
    );
    agent.set_busy(false);
    let (_, outcome) = runner.run_one("w").await.unwrap().unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Running
    );
    // No retry events for a routine lock.
    let events = f
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&inst.id), 100, None)
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "job_retry").count(), 0);
}

#[tokio::test]
async fn gives_up_into_error_and_retry_requeues() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.90.4").await;
    f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    agent.set_down(true);
    let runner = f.runner("t");
    let mut last = None;
    for _ in 0..20 {
        match runner.run_one("w").await.unwrap() {
            Some((_, o)) => last = Some(o),
            None => f.clock.advance(Duration::from_secs(400)),
        }
        if last == Some(JobOutcome::GaveUp) {
            break;
        }
    }
    assert_eq!(last, Some(JobOutcome::GaveUp));
    let got = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Error);
    assert!(
        got.error_reason
            .as_deref()
            .unwrap()
            .contains("provision failed after"),
        "{got:?}"
    );
    agent.set_down(false);
    let accepted = f
        .core
        .instances()
        .request(
            &Actor::system(),
            &user.id,
            &inst.id,
            clawy_core::lifecycle::LifecycleAction::Retry,
        )
        .await
        .unwrap();
    assert!(accepted.job_id.is_some());
    f.drain(&runner).await;
    assert_eq!(
        f.core
            .instances()
            .get(&user.id, &inst.id)
            .await
            .unwrap()
            .state,
        InstanceState::Running
    );
    assert_eq!(agent.counters().creates[&inst.id], 1);
    let kinds: Vec<JobKind> = f
        .core
        .jobs()
        .history(&inst.id)
        .await
        .unwrap()
        .iter()
        .map(|h| h.job.kind)
        .collect();
    assert!(kinds.iter().all(|k| *k == JobKind::Provision), "{kinds:?}");
}
