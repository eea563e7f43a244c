//! clawy-agent: the host agent. `api` parses requests into `executor::VmAction`s;
//! only the `executor` acts, through a `drivers::Driver` (qemu or proxmox), the
//! host `network` and the driver-independent `cloudinit` seed. See
//! docs/ARCHITECTURE.md.
pub mod api;
pub mod cli;
pub mod cloudinit;
pub mod config;
pub mod drivers;
pub mod edge;
pub mod error;
pub mod executor;
pub mod heartbeat;
pub mod heartbeat_server;
pub mod network;
pub mod probe;
pub mod server;
pub mod spec;
pub mod tls;
pub mod tokens;
