//! The QEMU command line and process handling. QEMU runs daemonized (its own
//! session, a pidfile) so VMs keep running when the agent restarts.

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
}

/// Everything one VM's QEMU process needs.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub vm_id: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub overlay: PathBuf,
    pub seed: PathBuf,
    pub qmp_socket: PathBuf,
    pub pidfile: PathBuf,
    /// Tap interface and MAC; `None` = no NIC at all.
    pub nic: Option<(String, String)>,
    /// Host CPUs to pin QEMU to (`taskset -c`), if pinning is on.
    pub cpus: Option<Vec<usize>>,
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
        // Defence in depth against a compromised QEMU; spawn stays allowed because
        // -daemonize forks after the filter is installed.
        "-sandbox".into(),
        "on,obsolete=deny,resourcecontrol=deny".into(),
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
        "-drive".into(),
        drive(&plan.seed, "if=virtio,format=raw,readonly=on"),
    ];
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
    a.extend([
        "-daemonize".into(),
        "-pidfile".into(),
        plan.pidfile.display().to_string(),
    ]);
    a
}

/// Start QEMU and wait for the daemonizing parent to exit (it exits once the VM
/// is set up, with the error on stderr if it failed).
pub async fn spawn(binary: &Path, plan: &LaunchPlan) -> Result<Pid, ProcessError> {
    let _ = std::fs::remove_file(&plan.pidfile);
    let _ = std::fs::remove_file(&plan.qmp_socket);
    // Pinning: taskset sets the affinity and execs QEMU; the daemonized QEMU and
    // all its threads inherit it.
    let mut cmd = match &plan.cpus {
        Some(cpus) => {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(list.join(",")).arg(binary);
            c
        }
        None => tokio::process::Command::new(binary),
    };
    let out = cmd
        .args(build_argv(plan))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| ProcessError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProcessError::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    read_pid(&plan.pidfile).ok_or_else(|| ProcessError::NoPid(plan.pidfile.clone()))
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
            seed: "/s/vms/vm-1/seed.iso".into(),
            qmp_socket: "/s/vms/vm-1/qmp.sock".into(),
            pidfile: "/s/vms/vm-1/qemu.pid".into(),
            nic: Some(("clawyt0123456789".into(), "52:54:00:aa:bb:cc".into())),
            cpus: None,
        }
    }

    /// ACCESS-2: no guest agent, no virtio-serial, no readable console; ISO-2: no
    /// balloon, fixed CPUs and memory.
    #[test]
    fn access2_iso2_argv_has_no_guest_channel_or_balloon() {
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

    #[test]
    fn no_nic_without_network() {
        let mut p = plan();
        p.nic = None;
        let argv = build_argv(&p);
        assert!(argv.windows(2).any(|w| w[0] == "-nic" && w[1] == "none"));
        assert!(!argv.iter().any(|a| a.contains("netdev")));
    }
}
