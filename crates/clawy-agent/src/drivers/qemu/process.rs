//! The QEMU command line and process handling.
//!
//! ISO-4: QEMU starts as root only to open what the VM needs (`/dev/kvm`, the tap,
//! the disk and seed, the QMP socket), then `-runas` drops it to the VM's own
//! uid/gid before the guest runs a single instruction: it starts paused (`-S`)
//! and the driver resumes it only after seeing the drop. The disk and seed stay
//! root-owned, mode 0600, in a 0700 root directory, so no QEMU (its own VM's
//! included) can open them again, let alone another VM's.
//!
//! The seccomp sandbox denies spawning processes, obsolete calls and resource
//! control. `elevateprivileges=deny` is not possible with QEMU 7.2 (Debian 12):
//! `-runas` calls setgid/setuid after the filter is installed, so QEMU dies of
//! SIGSYS (tried). After the drop the process has no capabilities and all its
//! uids are the VM's, so set*id calls cannot raise it anyway, and with spawn
//! denied it cannot exec a set-uid program either. QEMU is not daemonized for the
//! same reason (its fork and setsid are denied too): the agent starts it in its
//! own process group, so it keeps running when the agent stops or restarts.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::{Pid, Signal};

use super::accel::Accel;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("QEMU failed to start ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("QEMU started but wrote no pid file {0}")]
    NoPid(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything one VM's QEMU process needs.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub vm_id: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub overlay: PathBuf,
    /// The NoCloud seed ISO; `None` once it was forgotten (`forget_seed`).
    pub seed: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    pub pidfile: PathBuf,
    /// Tap interface and MAC; `None` = no NIC at all.
    pub nic: Option<(String, String)>,
    /// Host CPUs to pin QEMU to (`taskset -c`), if pinning is on.
    pub cpus: Option<Vec<usize>>,
    /// ISO-4: the VM's own uid (= gid) QEMU drops to; `None` when the agent is not
    /// root (then QEMU is as unprivileged as the agent already).
    pub run_as: Option<u32>,
    /// QEMU's stdout and stderr (root-only, in the VM's directory).
    pub log: PathBuf,
}

fn drive(path: &Path, extra: &str) -> String {
    // QEMU option values use ',' as separator; a path with ',' must double it.
    let p = path.display().to_string().replace(',', ",,");
    format!("file={p},{extra}")
}

/// The full argv (without the binary).
///
/// ISO-1: one KVM/TCG machine per VM. ISO-2: fixed `-smp`/`-m`, no balloon device
/// (`-nodefaults` adds none and we add none). ACCESS-2: no guest-agent channel
/// (no `-chardev`/virtio-serial), no serial console, no monitor besides QMP on a
/// root-only unix socket in the VM's state dir.
pub fn build_argv(plan: &LaunchPlan) -> Vec<String> {
    let (machine, cpu) = match plan.accel {
        Accel::Kvm => ("q35,accel=kvm", "host"),
        Accel::Tcg => ("q35,accel=tcg", "max"),
    };
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("clawy-{},process=clawy-{}", plan.vm_id, plan.vm_id),
        "-machine".into(),
        machine.into(),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        plan.vcpus.to_string(),
        "-m".into(),
        plan.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-vga".into(),
        "none".into(),
        // A guest that powers itself off leaves QEMU running in status `shutdown`
        // instead of exiting, so the driver can tell that from a crash (a dead QEMU)
        // and report the VM as stopped; the driver then ends QEMU.
        "-no-shutdown".into(),
        // Defence in depth against a compromised QEMU (see the module doc for why
        // elevateprivileges stays allowed when -runas is used).
        "-sandbox".into(),
        if plan.run_as.is_some() {
            "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny".into()
        } else {
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into()
        },
        // Paused until the driver has seen the privilege drop (ISO-4).
        "-S".into(),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            plan.qmp_socket.display().to_string().replace(',', ",,")
        ),
        "-drive".into(),
        drive(
            &plan.overlay,
            "if=virtio,format=qcow2,cache=none,discard=unmap",
        ),
    ];
    if let Some(seed) = &plan.seed {
        a.push("-drive".into());
        a.push(drive(seed, "if=virtio,format=raw,readonly=on"));
    }
    match &plan.nic {
        Some((tap, mac)) => {
            a.push("-netdev".into());
            a.push(format!("tap,id=net0,ifname={tap},script=no,downscript=no"));
            a.push("-device".into());
            a.push(format!("virtio-net-pci,netdev=net0,mac={mac}"));
        }
        None => {
            a.push("-nic".into());
            a.push("none".into());
        }
    }
    if let Some(id) = plan.run_as {
        a.push("-runas".into());
        a.push(format!("{id}:{id}"));
    }
    a.extend(["-pidfile".into(), plan.pidfile.display().to_string()]);
    a
}

/// Start QEMU (paused, see `-S`) in its own process group, so it outlives the
/// agent. The caller waits for QMP, checks the privilege drop and resumes it.
pub fn spawn(binary: &Path, plan: &LaunchPlan) -> Result<tokio::process::Child, ProcessError> {
    let _ = std::fs::remove_file(&plan.pidfile);
    let _ = std::fs::remove_file(&plan.qmp_socket);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProcessError::Io { path, source }
    };
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&plan.log)
        .map_err(io(&plan.log))?;
    let log2 = log.try_clone().map_err(io(&plan.log))?;
    // Pinning: taskset sets the affinity and execs QEMU; QEMU and all its threads
    // inherit it.
    let mut cmd = match &plan.cpus {
        Some(cpus) => {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(list.join(",")).arg(binary);
            c
        }
        None => tokio::process::Command::new(binary),
    };
    cmd.args(build_argv(plan))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Its own process group: a signal to the agent's group (Ctrl-C on a
        // terminal) does not reach the VMs.
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| ProcessError::Spawn {
        binary: binary.display().to_string(),
        source,
    })
}

/// The end of QEMU's log, for an error message.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// `Uid:` of /proc/<pid>/status: real, effective, saved and filesystem uid.
pub fn uids(pid: Pid) -> Option<[u32; 4]> {
    let raw = pid.as_raw_nonzero().get();
    let status = std::fs::read_to_string(format!("/proc/{raw}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    ids.try_into().ok()
}

pub fn read_pid(pidfile: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(pidfile).ok()?;
    let n: i32 = text.trim().parse().ok()?;
    Pid::from_raw(n)
}

/// True when `pid` is a live (non-zombie) QEMU of this VM: its command line names
/// this VM's QMP socket. Guards against pid reuse after a host reboot.
pub fn is_our_qemu(pid: Pid, qmp_socket: &Path) -> bool {
    let raw = pid.as_raw_nonzero().get();
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{raw}/stat")) else {
        return false;
    };
    // Field 3 (after the parenthesised comm, which may contain spaces).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{raw}/cmdline")) else {
        return false;
    };
    let needle = format!(
        "unix:{}",
        qmp_socket.display().to_string().replace(',', ",,")
    );
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(needle.as_bytes()))
}

pub fn kill(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn plan() -> LaunchPlan {
        LaunchPlan {
            vm_id: "vm-1".into(),
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 512,
            overlay: "/s/vms/vm-1/overlay.qcow2".into(),
            seed: Some("/s/vms/vm-1/seed.iso".into()),
            qmp_socket: "/s/vms/vm-1/qmp.sock".into(),
            pidfile: "/s/vms/vm-1/qemu.pid".into(),
            nic: Some(("clawyt0123456789".into(), "52:54:00:aa:bb:cc".into())),
            cpus: None,
            run_as: Some(1_900_000_007),
            log: "/s/vms/vm-1/qemu.log".into(),
        }
    }

    /// ACCESS-2: no guest agent, no virtio-serial, no readable console; ISO-2: no
    /// balloon, fixed CPUs and memory.
    #[test]
    fn access_2_iso_2_argv_has_no_guest_channel_or_balloon() {
        let argv = build_argv(&plan());
        let joined = argv.join(" ");
        for banned in [
            "-chardev",
            "virtio-serial",
            "virtserialport",
            "qemu-ga",
            "guest-agent",
            "-serial",
            "-monitor",
            "-mon",
            "balloon",
            "-vnc",
            "-spice",
        ] {
            assert!(
                !joined.contains(banned),
                "argv contains `{banned}`: {joined}"
            );
        }
        assert!(argv.contains(&"-nodefaults".to_string()));
        let smp = argv.iter().position(|a| a == "-smp").unwrap();
        assert_eq!(argv[smp + 1], "2");
        let m = argv.iter().position(|a| a == "-m").unwrap();
        assert_eq!(argv[m + 1], "512");
        assert!(joined.contains("readonly=on"));
        assert!(joined.contains("accel=tcg"));
        assert!(argv.contains(&"-no-shutdown".to_string()));
    }

    /// ISO-4: QEMU drops to the VM's own ids, starts paused, and is sandboxed.
    #[test]
    fn iso_4_argv_runs_as_the_vm_user_sandboxed_and_paused() {
        let argv = build_argv(&plan());
        let runas = argv.iter().position(|a| a == "-runas").unwrap();
        assert_eq!(argv[runas + 1], "1900000007:1900000007");
        let sb = argv.iter().position(|a| a == "-sandbox").unwrap();
        for want in ["on", "obsolete=deny", "spawn=deny", "resourcecontrol=deny"] {
            assert!(
                argv[sb + 1].split(',').any(|o| o == want),
                "{}",
                argv[sb + 1]
            );
        }
        assert!(argv.contains(&"-S".to_string()));
        assert!(!argv.contains(&"-daemonize".to_string()));
        let mut p = plan();
        p.run_as = None;
        let argv = build_argv(&p);
        assert!(!argv.contains(&"-runas".to_string()));
        let sb = argv.iter().position(|a| a == "-sandbox").unwrap();
        assert!(argv[sb + 1].contains("elevateprivileges=deny"));
    }

    #[test]
    fn no_nic_without_network() {
        let mut p = plan();
        p.nic = None;
        let argv = build_argv(&p);
        assert!(argv.windows(2).any(|w| w[0] == "-nic" && w[1] == "none"));
        assert!(!argv.iter().any(|a| a.contains("netdev")));
    }
}
