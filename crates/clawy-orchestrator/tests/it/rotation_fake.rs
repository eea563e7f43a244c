//! DATA-3: an operator rotates a host's agent token (and pinned fingerprint) while its
//! instances run: the old token stops working once revoked on the agent, the control
//! plane keeps managing the host with the new one, and no instance is touched.

use clawy_core::instances::InstanceState;
use clawy_core::{Actor, ExposeSecret, SecretString};
use clawy_orchestrator::registration::{RegisterHostError, rotate_host_credentials};
use clawy_proto::agent::VmState;

use crate::common::{Fixture, fake};

#[tokio::test]
async fn data3_rotating_the_agent_token_keeps_instances_running() {
    let f = Fixture::new().await;
    let agent = fake("DE-fra1", "10.92.1").await;
    let host = f.host("fra1", &agent, "DE").await;
    let user = f.user("owner@example.com").await;
    let inst = f.create(&user, "alpha").await;
    let runner = f.runner("t");
    f.drain(&runner).await;
    assert_eq!(agent.vm(&inst.id).unwrap().state, VmState::Running);
    let before = agent.counters();
    let operator = Actor::system();

    // A token the agent does not know is refused and nothing changes.
    let bogus = SecretString::from("not-a-token-of-this-agent".to_string());
    let err = rotate_host_credentials(&f.core, &operator, &host, Some(&bogus), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterHostError::TokenRefused), "{err:?}");
    let target = f.core.hosts().agent_target(&host).await.unwrap();
    assert_eq!(target.token.expose_secret(), agent.token);

    // The operator creates a new token on the agent, rotates, revokes the old one.
    let new = agent.add_token();
    rotate_host_credentials(
        &f.core,
        &operator,
        &host,
        Some(&SecretString::from(new.clone())),
        None,
    )
    .await
    .unwrap();
    agent.revoke_token(&agent.token);
    let target = f.core.hosts().agent_target(&host).await.unwrap();
    assert_eq!(target.token.expose_secret(), new);

    // The old token is dead on the agent.
    let old_client =
        clawy_agent_client::AgentClient::new(&agent.base_url, &agent.fingerprint, &agent.token)
            .unwrap();
    assert!(old_client.host().await.is_err());
    // The control plane keeps managing the host (reconcile, lifecycle) with the new one.
    let r = f.reconciler().reconcile_once().await.unwrap();
    assert_eq!((r.starts_enqueued, r.vanished), (0, 0), "{r:?}");
    let client = f.clients.for_host(&host).await.unwrap();
    assert_eq!(client.list_vms().await.unwrap().vms.len(), 1);
    // The instance kept running: no VM operation was made by the rotation.
    let after = agent.counters();
    assert_eq!(
        (after.starts, after.deletes),
        (before.starts, before.deletes)
    );
    assert_eq!(agent.vm(&inst.id).unwrap().state, VmState::Running);
    let inst = f.core.instances().get(&user.id, &inst.id).await.unwrap();
    assert_eq!(inst.state, InstanceState::Running);

    // A wrong new fingerprint (certificate "changed" to something else) is refused.
    let wrong = vec!["0F"; 32].join(":");
    let err = rotate_host_credentials(&f.core, &operator, &host, None, Some(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterHostError::PinMismatch(_)), "{err:?}");
    // The right one (same certificate here) is accepted and the token re-sealed to it.
    rotate_host_credentials(&f.core, &operator, &host, None, Some(&agent.fingerprint))
        .await
        .unwrap();
    assert_eq!(
        f.core
            .hosts()
            .agent_target(&host)
            .await
            .unwrap()
            .token
            .expose_secret(),
        new
    );
}
