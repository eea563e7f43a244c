//! Durable jobs: exclusive claims, per-instance order, leases, backoff, give-up and retry.

use crate::common::*;
use crate::instances_support::*;
use clawy_core::Clock;
use clawy_core::instances::InstanceState;
use clawy_core::jobs::{FailOutcome, JobError, JobKind, JobState, backoff};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn jobs_of_one_instance_run_in_order_and_others_in_parallel() {
    let tc = quota(10).await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let a = create(&tc, &alice, "a").await;
    let b = create(&tc, &alice, "b").await;
    tc.core
        .instances()
        .request(
            &caller_for(&alice),
            &alice.id,
            &a.id,
            clawy_core::lifecycle::LifecycleAction::Stop,
        )
        .await
        .unwrap();
    let j1 = claim(&tc, "w1").await;
    let j2 = claim(&tc, "w2").await;
    assert_eq!(
        (j1.instance_id.as_str(), j1.kind),
        (a.id.as_str(), JobKind::Provision)
    );
    assert_eq!(
        (j2.instance_id.as_str(), j2.kind),
        (b.id.as_str(), JobKind::Provision)
    );
    // a's stop waits for a's provision.
    assert!(tc.core.jobs().claim("w3", LEASE).await.unwrap().is_none());
    assert_eq!(tc.core.jobs().pending_count().await.unwrap(), 3);
    let busy = tc
        .core
        .jobs()
        .instances_with_unfinished_jobs()
        .await
        .unwrap();
    assert_eq!(busy, [a.id.clone(), b.id.clone()].into_iter().collect());
    tc.core
        .jobs()
        .progress(&j1, "w1", InstanceState::Provisioning)
        .await
        .unwrap();
    assert_eq!(
        tc.core.instances().get_any(&a.id).await.unwrap().state,
        InstanceState::Provisioning
    );
    tc.core.jobs().complete(&j1, "w1").await.unwrap();
    let j3 = claim(&tc, "w3").await;
    assert_eq!(
        (j3.instance_id.as_str(), j3.kind),
        (a.id.as_str(), JobKind::Stop)
    );
    tc.core.jobs().complete(&j3, "w3").await.unwrap();
    assert_eq!(
        tc.core.instances().get_any(&a.id).await.unwrap().state,
        InstanceState::Stopped
    );
    // Another worker cannot finish w2's job.
    assert!(matches!(
        tc.core.jobs().complete(&j2, "w1").await.unwrap_err(),
        JobError::LeaseLost
    ));
    tc.core.jobs().complete(&j2, "w2").await.unwrap();
    assert_eq!(tc.core.jobs().pending_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_get_the_same_job() {
    let tc = quota(100).await;
    add_host(
        &tc,
        "a",
        "DE",
        (64, 100_000, 1000),
        "10.8.1.0/24",
        [22000, 22999],
    )
    .await;
    let alice = tc.user("alice@example.com").await;
    let n = 40;
    for k in 0..n {
        create(&tc, &alice, &format!("i{k}")).await;
    }
    let mut tasks = Vec::new();
    for w in 0..12 {
        let core = tc.core.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut got = Vec::new();
            while let Some(job) = core.jobs().claim(&worker, LEASE).await.unwrap() {
                got.push(job.id.clone());
                tokio::task::yield_now().await;
                core.jobs().complete(&job, &worker).await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), n, "every job ran exactly once");
    assert_eq!(distinct.len(), n);
    // One attempt each.
    assert_eq!(
        tc.count("SELECT COUNT(*) FROM job_attempts").await,
        n as i64
    );
    assert_eq!(
        tc.count("SELECT COUNT(*) FROM instances WHERE state = 'running'")
            .await,
        n as i64
    );
}

#[tokio::test]
async fn expired_lease_makes_a_job_claimable_again_and_history_shows_it() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    let job = tc
        .core
        .jobs()
        .claim("dead-worker", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.attempts, 1);
    tc.clock.advance(Duration::from_secs(20));
    // Renewing pushes the lease out.
    tc.core
        .jobs()
        .renew(&job, "dead-worker", Duration::from_secs(30))
        .await
        .unwrap();
    tc.clock.advance(Duration::from_secs(20));
    assert!(
        tc.core.jobs().claim("w2", LEASE).await.unwrap().is_none(),
        "lease still valid"
    );
    // The worker dies (no more renewals): after expiry another worker takes over.
    tc.clock.advance(Duration::from_secs(11));
    let again = claim(&tc, "w2").await;
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.lease_owner.as_deref(), Some("w2"));
    // The old worker has lost it: it can neither renew nor finish.
    assert!(matches!(
        tc.core
            .jobs()
            .renew(&job, "dead-worker", LEASE)
            .await
            .unwrap_err(),
        JobError::LeaseLost
    ));
    assert!(matches!(
        tc.core
            .jobs()
            .complete(&job, "dead-worker")
            .await
            .unwrap_err(),
        JobError::LeaseLost
    ));
    assert!(matches!(
        tc.core
            .jobs()
            .fail(&job, "dead-worker", "x")
            .await
            .unwrap_err(),
        JobError::LeaseLost
    ));
    tc.core.jobs().complete(&again, "w2").await.unwrap();
    let hist = tc.core.jobs().history(&i.id).await.unwrap();
    let log = &hist[0].attempt_log;
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].worker.as_str(), log[0].outcome.as_deref()),
        ("dead-worker", Some("lease_expired"))
    );
    assert_eq!(
        (log[1].worker.as_str(), log[1].outcome.as_deref()),
        ("w2", Some("succeeded"))
    );
    assert_eq!(hist[0].job.state, JobState::Succeeded);
}

#[tokio::test]
async fn failures_back_off_exponentially_with_bounded_jitter() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    for attempt in 1..=5u32 {
        let job = claim(&tc, "w").await;
        assert_eq!(job.attempts, attempt);
        let before = tc.clock.now_ms();
        let out = tc
            .core
            .jobs()
            .fail(&job, "w", "agent unreachable")
            .await
            .unwrap();
        let FailOutcome::Retrying { run_after } = out else {
            panic!("gave up early")
        };
        let wait = run_after.timestamp_millis() - before;
        let base = backoff(attempt).as_millis() as i64;
        assert_eq!(base, 1000 << attempt);
        assert!(
            wait >= base && wait <= base + base / 10,
            "attempt {attempt}: waited {wait} ms, base {base}"
        );
        // Not claimable a moment before run_after, claimable at it.
        tc.clock.advance(Duration::from_millis((wait - 1) as u64));
        assert!(tc.core.jobs().claim("w", LEASE).await.unwrap().is_none());
        tc.clock.advance(Duration::from_millis(1));
    }
    let events = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 50, None)
        .await
        .unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "job_retry").count(), 5);
    // The owner's events say which attempt failed and when the next comes, not the
    // agent's words (those stay in the job for operators).
    assert!(events.iter().any(|e| e.detail.contains("attempt 1 of")));
    assert!(
        !events
            .iter()
            .any(|e| e.detail.contains("agent unreachable"))
    );
    // The cap: five minutes.
    assert_eq!(backoff(20), Duration::from_secs(300));
}

#[tokio::test]
async fn giving_up_puts_the_instance_in_error_and_retry_requeues() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let c = caller_for(&alice);
    let i = create(&tc, &alice, "web").await;
    // Retry is only for instances in error.
    assert_eq!(
        tc.core
            .instances()
            .request(
                &c,
                &alice.id,
                &i.id,
                clawy_core::lifecycle::LifecycleAction::Retry
            )
            .await
            .unwrap_err()
            .to_string(),
        "Cannot retry an instance that is pending."
    );
    let max = clawy_core::jobs::DEFAULT_MAX_ATTEMPTS;
    for n in 1..=max {
        tc.clock.advance(Duration::from_secs(400));
        let job = claim(&tc, "w").await;
        let out = tc
            .core
            .jobs()
            .fail_with_jitter(
                &job,
                "w",
                "agent https://10.9.8.7:8443 refused: vm 5d1c0b7e-other-tenant exists",
                Duration::ZERO,
            )
            .await
            .unwrap();
        if n < max {
            assert!(matches!(out, FailOutcome::Retrying { .. }));
        } else {
            assert_eq!(out, FailOutcome::GaveUp);
        }
    }
    tc.clock.advance(Duration::from_secs(400));
    assert!(tc.core.jobs().claim("w", LEASE).await.unwrap().is_none());
    let got = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Error);
    let reason = got.error_reason.unwrap();
    assert!(
        reason.starts_with("provision failed after 8 attempts."),
        "{reason}"
    );
    // The owner never sees the agent's words (another tenant's VM id, the agent's
    // URL): not in the reason, not in the instance's events. The job keeps them for
    // operators.
    let events = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 100, None)
        .await
        .unwrap();
    for text in std::iter::once(reason.clone()).chain(events.iter().map(|e| e.detail.clone())) {
        assert!(
            !text.contains("10.9.8.7") && !text.contains("other-tenant"),
            "{text}"
        );
    }
    let detail: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE instance_id = $1")
        .bind(&i.id)
        .fetch_one(tc.core.store().pool())
        .await
        .unwrap();
    assert!(detail.contains("other-tenant"), "{detail}");
    // Start/stop are refused in error; retry re-queues the same step with fresh attempts.
    assert!(
        tc.core
            .instances()
            .request(
                &c,
                &alice.id,
                &i.id,
                clawy_core::lifecycle::LifecycleAction::Start
            )
            .await
            .is_err()
    );
    let r = tc
        .core
        .instances()
        .request(
            &c,
            &alice.id,
            &i.id,
            clawy_core::lifecycle::LifecycleAction::Retry,
        )
        .await
        .unwrap();
    assert!(r.job_id.is_some());
    assert!(
        tc.core
            .instances()
            .request(
                &c,
                &alice.id,
                &i.id,
                clawy_core::lifecycle::LifecycleAction::Retry
            )
            .await
            .unwrap()
            .job_id
            .is_none(),
        "idempotent"
    );
    let job = claim(&tc, "w").await;
    assert_eq!((job.kind, job.attempts), (JobKind::Provision, 1));
    tc.core.jobs().complete(&job, "w").await.unwrap();
    let got = tc.core.instances().get(&alice.id, &i.id).await.unwrap();
    assert_eq!(got.state, InstanceState::Running);
    assert!(got.error_reason.is_none());
    let hist = tc.core.jobs().history(&i.id).await.unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].job.state, JobState::Failed);
    assert_eq!(hist[0].attempt_log.len(), max as usize);
    let actions: Vec<_> = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"job_failed".to_string()));
    assert!(actions.contains(&"instance_retry_requested".to_string()));
}

#[tokio::test]
async fn a_dead_worker_on_the_last_attempt_gives_up_instead_of_running_again() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    let max = clawy_core::jobs::DEFAULT_MAX_ATTEMPTS;
    for _ in 1..max {
        tc.clock.advance(Duration::from_secs(400));
        let job = claim(&tc, "w").await;
        tc.core
            .jobs()
            .fail_with_jitter(&job, "w", "boom", Duration::ZERO)
            .await
            .unwrap();
    }
    tc.clock.advance(Duration::from_secs(400));
    let last = claim(&tc, "dies").await;
    assert_eq!(last.attempts, max);
    tc.clock.advance(LEASE + Duration::from_secs(1));
    assert!(tc.core.jobs().claim("w", LEASE).await.unwrap().is_none());
    assert_eq!(
        tc.core.instances().get_any(&i.id).await.unwrap().state,
        InstanceState::Error
    );
}

#[tokio::test]
async fn access_3_reconciler_repair_is_an_instance_event() {
    let tc = TestCore::new().await;
    de_host(&tc, "a", 1).await;
    let alice = tc.user("alice@example.com").await;
    let i = create(&tc, &alice, "web").await;
    drain_jobs(&tc).await;
    tc.core
        .jobs()
        .enqueue(
            &clawy_core::Actor::reconciler(),
            &i.id,
            JobKind::Start,
            "VM was stopped but should run: restarting",
        )
        .await
        .unwrap();
    let ev = tc
        .core
        .audit()
        .list(clawy_core::audit::Scope::Instance(&i.id), 10, None)
        .await
        .unwrap();
    assert_eq!(ev[0].action, "instance_repaired");
    assert_eq!(ev[0].actor, "reconciler");
    let job = claim(&tc, "w").await;
    assert_eq!(job.created_by, "reconciler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_processes_on_one_database_never_run_a_job_twice() {
    // A second Core with its own connection pool on the same database is what a second
    // server process is to the job table (on PostgreSQL: row locks + SKIP LOCKED).
    let tc = quota(100).await;
    add_host(
        &tc,
        "a",
        "DE",
        (64, 100_000, 1000),
        "10.8.2.0/24",
        [22000, 22999],
    )
    .await;
    let other = std::sync::Arc::new(
        clawy_core::Core::open_with_clock(
            tc.core.config().clone(),
            std::sync::Arc::new(tc.clock.clone()),
        )
        .await
        .unwrap(),
    );
    let alice = tc.user("alice@example.com").await;
    let n = 30;
    for k in 0..n {
        create(&tc, &alice, &format!("i{k}")).await;
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let core = if w % 2 == 0 {
            tc.core.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let worker = format!("proc{}-w{w}", w % 2);
            let mut got = Vec::new();
            while let Some(job) = core.jobs().claim(&worker, LEASE).await.unwrap() {
                got.push(job.id.clone());
                // Hold the job as a real step would, so claims overlap between the
                // two processes instead of one draining the queue alone.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                core.jobs().complete(&job, &worker).await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (n, n));
    assert_eq!(
        tc.count("SELECT COUNT(*) FROM job_attempts").await,
        n as i64
    );
    assert!(
        tc.count("SELECT COUNT(*) FROM job_attempts WHERE worker LIKE 'proc1-%'")
            .await
            > 0,
        "both processes worked"
    );
}
