//! One test body, two drivers: starts the real agent inside a test network
//! namespace on the `qemu` driver, or on the `proxmox` driver against `pve-sim`
//! (the Proxmox VE simulator, which boots a real TCG guest per VM in the same
//! namespace). Proxmox is tested against that simulator, never a real PVE node.

use std::path::Path;

use clawy_testkit::agent::{AgentOptions, TestAgent};
use clawy_testkit::netns::Netns;
use clawy_testkit::pve_sim::{PveSimOptions, TestPveSim};

const BIN: &str = env!("CARGO_BIN_EXE_clawy-agent");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    Qemu,
    Proxmox,
}

/// The agent under test and, on `proxmox`, the simulated node it drives. Field
/// order is drop order: the agent goes before the simulator.
pub(crate) struct DriverHost {
    pub agent: TestAgent,
    pub sim: Option<TestPveSim>,
    _secrets: Option<tempfile::TempDir>,
}

/// Start the agent in `ns` with `opts` (network, stop timeout, extra keys) on
/// `driver`, serving `image` as its one base image. On `proxmox` the image is
/// the simulator's template 9000, VMIDs come from `vmid_range`, and the
/// simulator's taps may join only the agent's bridge `clawybr0`.
pub(crate) async fn start_agent(
    driver: Driver,
    ns: &Netns,
    image: &Path,
    mut opts: AgentOptions,
    vmid_range: &str,
) -> DriverHost {
    let image_name = image.file_name().unwrap().to_str().unwrap().to_string();
    match driver {
        Driver::Qemu => {
            opts.images_dir = Some(image.parent().unwrap().to_path_buf());
            let agent = TestAgent::start(Path::new(BIN), opts, Some(ns))
                .await
                .unwrap();
            DriverHost {
                agent,
                sim: None,
                _secrets: None,
            }
        }
        Driver::Proxmox => {
            let sim = TestPveSim::start(
                &clawy_testkit::pve_sim::bin().unwrap(),
                PveSimOptions {
                    allowed_bridges: vec!["clawybr0".into()],
                    auth_failure_delay_ms: 100,
                    templates: vec![(9000, image.to_path_buf(), None)],
                    ..Default::default()
                },
                Some(ns),
            )
            .await
            .unwrap();
            let secrets = tempfile::tempdir().unwrap();
            let secret = sim.write_token_secret(secrets.path()).unwrap();
            opts.driver_toml = sim.agent_driver_toml(&secret, &image_name, vmid_range);
            let agent = TestAgent::start(Path::new(BIN), opts, Some(ns))
                .await
                .unwrap();
            DriverHost {
                agent,
                sim: Some(sim),
                _secrets: Some(secrets),
            }
        }
    }
}
