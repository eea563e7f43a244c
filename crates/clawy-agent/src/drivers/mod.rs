//! Hypervisor drivers behind one trait.
//!
//! The trait is shaped for two very different back ends:
//! - `qemu`: local processes. Every call finishes before it returns, so it answers
//!   [`Op::Done`].
//! - `proxmox`: PVE's REST API, where clone, start, stop, resize and delete
//!   are asynchronous tasks identified by a UPID, VMs are locked while a task runs
//!   (`lock: clone`), and new VMs are linked clones of a template. Such a driver
//!   answers [`Op::Task`] with the UPID, and the executor polls
//!   [`Driver::poll_task`] until the task ends. A driver whose step needs several
//!   tasks (clone → config → resize) returns the first task and continues the next
//!   time `ensure_vm` is called with the same spec: every method is idempotent, so
//!   "call again until `Op::Done`" converges.
//!
//! Drivers hold no desired state of their own beyond what the hypervisor stores
//! (QEMU: the state dir; PVE: the VM config), so an agent restart loses nothing.
//! Validation, capacity, locking, the host network (bridge, taps, nftables) and the
//! cloud-init seed's content belong to the executor, not here: a driver receives
//! the rendered [`SeedFiles`] and packs them the way its hypervisor needs (QEMU: a
//! NoCloud ISO; PVE: `cicustom` snippets).
//!
//! Every method may be called concurrently for different VMs (the executor holds
//! one lock per VM, never a host-wide one while a task runs).

pub mod proxmox;
pub mod qemu;

use async_trait::async_trait;
use clawy_proto::agent::{VmSpec, VmStatus};

use crate::cloudinit::SeedFiles;
use crate::error::AgentError;
use crate::spec::VmId;

/// Who puts the VM's port on the Clawy bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapOwner {
    /// The executor creates `Network::tap_name(id)` before start; the driver
    /// plugs the VM into it (qemu).
    Agent,
    /// The hypervisor creates its own tap at start and joins it to the bridge
    /// (PVE: `tap<vmid>i0`); the executor registers it after start
    /// ([`Driver::hypervisor_tap`]). Until then it can send nothing.
    Hypervisor,
}

/// Identifier of a hypervisor task still running (a PVE UPID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(pub String);

/// Result of a mutating driver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The change is complete.
    Done,
    /// The change continues as a task; poll it with [`Driver::poll_task`], then
    /// repeat the call (idempotent) until it answers `Done`.
    Task(TaskId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Succeeded,
    Failed(String),
}

/// Machine resources as a driver sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cpu_cores: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// `qemu` or `proxmox`.
    fn name(&self) -> &'static str;
    /// Accelerator in use (`kvm`/`tcg`), as probed at start-up.
    fn accelerator(&self) -> &str;
    /// Who creates the VM's port on the Clawy bridge.
    fn tap_owner(&self) -> TapOwner;
    /// What the machine has.
    async fn machine(&self) -> Result<Machine, AgentError>;
    /// Specs of every defined VM (cheap; used for capacity and conflicts).
    async fn specs(&self) -> Result<Vec<(VmId, VmSpec)>, AgentError>;
    /// Create the VM or bring its definition in line with `spec`, with `seed` as
    /// its cloud-init seed. Does not change the power state.
    async fn ensure_vm(&self, id: &VmId, spec: &VmSpec, seed: &SeedFiles)
    -> Result<Op, AgentError>;
    /// Start; a running VM is left alone.
    async fn start_vm(&self, id: &VmId) -> Result<Op, AgentError>;
    /// Graceful stop (ACPI), forced after the configured timeout; a stopped VM is
    /// left alone.
    async fn stop_vm(&self, id: &VmId) -> Result<Op, AgentError>;
    /// Reset a running VM; a stopped VM is an error (`conflict`).
    async fn reboot_vm(&self, id: &VmId) -> Result<Op, AgentError>;
    /// Stop and destroy everything of the VM the hypervisor holds (disk, seed).
    /// Absent is fine. The executor removes its network afterwards.
    async fn delete_vm(&self, id: &VmId) -> Result<Op, AgentError>;
    /// Status without the health probe (the executor adds it).
    async fn vm_status(&self, id: &VmId) -> Result<VmStatus, AgentError>;
    async fn list_vms(&self) -> Result<Vec<VmStatus>, AgentError>;
    /// State of a task returned in [`Op::Task`].
    async fn poll_task(&self, task: &TaskId) -> Result<TaskState, AgentError>;
    /// [`TapOwner::Hypervisor`]: the name of the VM's tap on the Clawy bridge while
    /// it runs (`None` when the VM does not exist).
    async fn hypervisor_tap(&self, _id: &VmId) -> Result<Option<String>, AgentError> {
        Ok(None)
    }
    /// Removes every copy of the VM's cloud-init seed the hypervisor keeps once
    /// the guest has read it (the seed will carry secrets): qemu deletes its seed
    /// ISO, proxmox its snippet files and the VM's cloud-init drive. The VM must
    /// be stopped or the guest must already have booted once; a later start then
    /// boots without a seed (cloud-init keeps what it applied). Idempotent.
    async fn forget_seed(&self, id: &VmId) -> Result<(), AgentError>;
    /// DATA-5: the guest applied its seed (it may be running): destroy every copy
    /// of the seed that held secrets, leaving `clean` (the same instance id, no
    /// secrets) for later boots where the driver can. Idempotent. By default the
    /// seed is simply forgotten (proxmox: a VM without a cloud-init drive boots
    /// with what cloud-init applied).
    async fn scrub_seed(&self, id: &VmId, clean: &SeedFiles) -> Result<(), AgentError> {
        let _ = clean;
        self.forget_seed(id).await
    }
}
