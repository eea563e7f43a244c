//! Real guests: the QEMU command line built from a VM's config (a PVE-like
//! subset), the process, and a small QMP client.
//!
//! Every VM's QEMU runs unprivileged as its own uid/gid (`qemu_uid_base + vmid`,
//! via `-runas` on QEMU < 9.1, `-run-with user=` after) under a seccomp sandbox
//! that forbids spawning processes (ISO-4). PVE itself runs QEMU as root; the
//! simulator follows the project's rule instead. QEMU starts paused (`-S`) and is
//! resumed only after its taps are bridge ports, so no frame leaves before that.
//! It is never daemonized; it runs in its own process group so that it outlives a
//! simulator restart, like VMs outlive a `pvedaemon` restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::storage::{Storage, VolumeKind};
use crate::config::AccelChoice;
use crate::schema::{Schema, formats};

/// What the installed QEMU supports.
#[derive(Debug, Clone)]
pub struct QemuCaps {
    pub run_with: bool,
    pub accel_kvm: bool,
}

pub async fn probe_caps(binary: &Path, choice: AccelChoice) -> Result<QemuCaps, String> {
    let out = tokio::process::Command::new(binary)
        .arg("-help")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    let run_with = help.contains("-run-with");
    if !run_with && !help.contains("-runas") {
        return Err(format!(
            "{} supports neither -run-with nor -runas: cannot run guests unprivileged",
            binary.display()
        ));
    }
    let accel_kvm = match choice {
        AccelChoice::Tcg => false,
        AccelChoice::Kvm => {
            probe_kvm(binary).await?;
            true
        }
        AccelChoice::Auto => match probe_kvm(binary).await {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(reason = %why, "KVM does not work here: guests use TCG");
                false
            }
        },
    };
    Ok(QemuCaps {
        run_with,
        accel_kvm,
    })
}

/// Boot an empty KVM machine briefly: opening /dev/kvm is not enough under nested
/// virtualisation, where the first vCPU run may fail.
async fn probe_kvm(binary: &Path) -> Result<(), String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Err("/dev/kvm cannot be opened".into());
    }
    let mut child = tokio::process::Command::new(binary)
        .args([
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host",
            "-m",
            "32",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n").await;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "KVM probe did not quit".to_string())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "probe exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ))
    }
}

/// Runtime paths of one VM (PVE: /var/run/qemu-server/{vmid}.*).
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub qmp: PathBuf,
    pub pid: PathBuf,
    pub stderr: PathBuf,
    pub dir: PathBuf,
    pub vmid: u32,
}

impl RunPaths {
    pub fn new(run_dir: &Path, vmid: u32) -> RunPaths {
        RunPaths {
            qmp: run_dir.join(format!("{vmid}.qmp")),
            pid: run_dir.join(format!("{vmid}.pid")),
            stderr: run_dir.join(format!("{vmid}.stderr")),
            dir: run_dir.to_path_buf(),
            vmid,
        }
    }

    pub fn serial(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}.serial{n}", self.vmid))
    }

    pub fn serial_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}.serial{n}.log", self.vmid))
    }

    pub fn qga(&self) -> PathBuf {
        self.dir.join(format!("{}.qga", self.vmid))
    }

    pub fn reboot_request(&self) -> PathBuf {
        self.dir.join(format!("{}.reboot", self.vmid))
    }
}

/// A network device QEMU will open and the simulator plugs after start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    pub idx: u32,
    pub bridge: Option<String>,
    pub firewall: bool,
    pub mac: String,
}

pub struct LaunchPlan {
    pub argv: Vec<String>,
    pub nics: Vec<NicPlan>,
}

fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

fn indexed(key: &str, prefix: &str) -> Option<u32> {
    key.strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

fn pstr(schema: &Schema, key: &str, value: &str) -> Result<BTreeMap<String, String>, String> {
    let fmt = schema
        .config_key_format(key)
        .ok_or_else(|| format!("unable to parse value of '{key}'\n"))?;
    schema
        .parse_property_string(fmt, value, key, None)
        .map_err(|e| format!("unable to parse value of '{key}' - {e}"))
}

static NIC_MODELS: LazyLock<BTreeMap<&'static str, &'static str>> = LazyLock::new(|| {
    [
        ("virtio", "virtio-net-pci"),
        ("e1000", "e1000"),
        ("e1000-82540em", "e1000-82540em"),
        ("e1000-82544gc", "e1000-82544gc"),
        ("e1000-82545em", "e1000-82545em"),
        ("e1000e", "e1000e"),
        ("i82551", "i82551"),
        ("i82557b", "i82557b"),
        ("i82559er", "i82559er"),
        ("ne2k_isa", "ne2k_isa"),
        ("ne2k_pci", "ne2k_pci"),
        ("pcnet", "pcnet"),
        ("rtl8139", "rtl8139"),
        ("vmxnet3", "vmxnet3"),
    ]
    .into_iter()
    .collect()
});

pub struct ArgvInput<'a> {
    pub vmid: u32,
    pub conf: &'a BTreeMap<String, String>,
    pub paths: &'a RunPaths,
    pub caps: &'a QemuCaps,
    pub uid: u32,
    pub storage: &'a Storage,
    pub schema: &'a Schema,
    pub host_cpus: u64,
}

/// The QEMU command line (without the binary) for a VM's current config.
pub fn build_argv(i: &ArgvInput<'_>) -> Result<LaunchPlan, String> {
    let conf = i.conf;
    let schema = i.schema;
    let mut a: Vec<String> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
    let name = conf
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("VM{}", i.vmid));
    push(&["-name", &format!("{},debug-threads=on", opt_escape(&name))]);
    push(&[
        "-qmp",
        &format!(
            "unix:{},server=on,wait=off",
            opt_escape(&i.paths.qmp.display().to_string())
        ),
    ]);
    push(&["-pidfile", &i.paths.pid.display().to_string()]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-S"]);
    if i.caps.run_with {
        push(&["-run-with", &format!("user={}:{}", i.uid, i.uid)]);
    } else {
        push(&["-runas", &format!("{}:{}", i.uid, i.uid)]);
    }
    // elevateprivileges stays allowed: QEMU changes uid after the filter is set.
    push(&[
        "-sandbox",
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
    ]);

    // Machine, CPU, memory.
    let mtype = match conf.get("machine") {
        Some(m) => pstr(schema, "machine", m)?
            .get("type")
            .cloned()
            .unwrap_or_default(),
        None => String::new(),
    };
    let q35 = mtype.starts_with("q35") || mtype.starts_with("pc-q35");
    let accel = if i.caps.accel_kvm { "kvm" } else { "tcg" };
    push(&[
        "-machine",
        &format!("{},accel={accel}", if q35 { "q35" } else { "pc" }),
    ]);
    let cputype = match conf.get("cpu") {
        Some(c) => pstr(schema, "cpu", c)?
            .get("cputype")
            .cloned()
            .unwrap_or_else(|| "kvm64".into()),
        None => "x86-64-v2-AES".into(),
    };
    let cpu = if !i.caps.accel_kvm {
        // TCG: the emulator's full model, whatever the config names.
        "max".to_string()
    } else if cputype == "host" || cputype == "max" {
        "host".to_string()
    } else {
        "qemu64".to_string()
    };
    push(&["-cpu", &cpu]);
    let num = |k: &str, d: u64| -> u64 { conf.get(k).and_then(|v| v.parse().ok()).unwrap_or(d) };
    let sockets = num("sockets", 1).max(1);
    let cores = num("cores", 1).max(1);
    let maxcpus = sockets.saturating_mul(cores);
    let vcpus = conf
        .get("vcpus")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(maxcpus)
        .min(maxcpus)
        .max(1);
    let _ = i.host_cpus;
    push(&[
        "-smp",
        &format!("{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}"),
    ]);
    let memory: u64 = match conf.get("memory") {
        Some(m) => pstr(schema, "memory", m)?
            .get("current")
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        None => 512,
    };
    push(&["-m", &memory.to_string()]);
    // ISO-2 on PVE: `balloon: 0` removes the balloon device; anything else adds it.
    if conf.get("balloon").map(String::as_str) != Some("0") {
        push(&["-device", "virtio-balloon-pci,id=balloon0"]);
    }
    if let Some(smbios) = conf.get("smbios1") {
        if let Some(uuid) = pstr(schema, "smbios1", smbios)?.get("uuid") {
            push(&["-smbios", &format!("type=1,uuid={uuid}")]);
        }
    }
    if let Some(agent) = conf.get("agent") {
        let a = pstr(schema, "agent", agent)?;
        if a.get("enabled").map(String::as_str) == Some("1") {
            // A guest-agent channel exactly where PVE puts one (ACCESS-2 tests look
            // for its absence).
            let qga = i.paths.qga().display().to_string();
            push(&[
                "-chardev",
                &format!(
                    "socket,path={},server=on,wait=off,id=qga0",
                    opt_escape(&qga)
                ),
                "-device",
                "virtio-serial,id=qga0",
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        }
    }
    let vga_type = match conf.get("vga") {
        Some(v) => pstr(schema, "vga", v)?
            .get("type")
            .cloned()
            .unwrap_or_else(|| "std".into()),
        None => "std".into(),
    };
    if vga_type == "none" || vga_type.starts_with("serial") {
        push(&["-vga", "none"]);
    } else {
        push(&["-vga", "std"]);
    }
    for n in 0..4u32 {
        let Some(s) = conf.get(&format!("serial{n}")) else {
            continue;
        };
        if s != "socket" {
            return Err(format!(
                "pve-sim: host serial device passthrough ('{s}') is not simulated\n"
            ));
        }
        let sock = opt_escape(&i.paths.serial(n).display().to_string());
        let log = opt_escape(&i.paths.serial_log(n).display().to_string());
        push(&[
            "-chardev",
            &format!("socket,id=serial{n},path={sock},server=on,wait=off,logfile={log}"),
            "-device",
            &format!("isa-serial,chardev=serial{n}"),
        ]);
    }

    // Boot order → bootindex.
    let mut bootindex: BTreeMap<String, u32> = BTreeMap::new();
    let boot = conf
        .get("boot")
        .map(|b| pstr(schema, "boot", b))
        .transpose()?
        .unwrap_or_default();
    if let Some(order) = boot.get("order") {
        for (n, dev) in formats::split_list(order).into_iter().enumerate() {
            bootindex.insert(dev, 100 + n as u32);
        }
    } else {
        let legacy = boot.get("legacy").cloned().unwrap_or_else(|| "cdn".into());
        let mut n = 100;
        let disks: Vec<&String> = conf
            .keys()
            .filter(|k| formats::is_valid_drivename(k))
            .collect();
        for c in legacy.chars() {
            match c {
                'c' => {
                    let bd = conf.get("bootdisk").cloned().or_else(|| {
                        ["scsi0", "virtio0", "sata0", "ide0"]
                            .iter()
                            .find(|d| conf.contains_key(**d))
                            .map(|d| d.to_string())
                    });
                    if let Some(d) = bd {
                        bootindex.insert(d, n);
                        n += 1;
                    }
                }
                'd' => {
                    for d in &disks {
                        if conf.get(*d).is_some_and(|v| v.contains("media=cdrom")) {
                            bootindex.insert((*d).clone(), n);
                            n += 1;
                        }
                    }
                }
                'n' => {
                    for k in conf.keys().filter(|k| indexed(k, "net").is_some()) {
                        bootindex.insert(k.clone(), n);
                        n += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let bi = |dev: &str| -> String {
        bootindex
            .get(dev)
            .map(|n| format!(",bootindex={n}"))
            .unwrap_or_default()
    };

    // Disks.
    let scsihw = conf.get("scsihw").map(String::as_str).unwrap_or("lsi");
    let mut scsi_ctrls: BTreeMap<String, String> = BTreeMap::new();
    let mut ahci = false;
    // Controllers must come before the devices on their buses.
    let mut disk_args: Vec<String> = Vec::new();
    for key in conf.keys().filter(|k| formats::is_valid_drivename(k)) {
        if key == "efidisk0" || key == "tpmstate0" {
            return Err(format!("pve-sim: {key} is not simulated\n"));
        }
        let d = pstr(schema, key, &conf[key])?;
        let file = d.get("file").cloned().unwrap_or_default();
        let cdrom = d.get("media").map(String::as_str) == Some("cdrom");
        let id = format!("drive-{key}");
        let mut drive = String::new();
        if file == "none" {
            drive = format!("if=none,id={id},media=cdrom");
        } else if file == "cdrom" || file.starts_with('/') {
            return Err(format!(
                "pve-sim: host device or path '{file}' ({key}) is not simulated\n"
            ));
        } else {
            let path = i.storage.path(&file)?;
            let fmt = match d.get("format") {
                Some(f) => f.clone(),
                None => match i.storage.kind(&file)?.0 {
                    VolumeKind::Images => i.storage.parse(&file)?.format,
                    _ => "raw".into(),
                },
            };
            drive.push_str(&format!(
                "file={},if=none,id={id},format={fmt}",
                opt_escape(&path.display().to_string())
            ));
            if cdrom {
                drive.push_str(",media=cdrom,readonly=on");
            } else {
                let cache = d.get("cache").map(String::as_str).unwrap_or("none");
                if matches!(
                    cache,
                    "none" | "writeback" | "writethrough" | "unsafe" | "directsync"
                ) {
                    drive.push_str(&format!(",cache={cache}"));
                }
                if d.get("discard").map(String::as_str) == Some("on") {
                    drive.push_str(",discard=unmap");
                }
            }
        }
        let dev = if let Some(n) = indexed(key, "ide") {
            let kind = if cdrom || file == "none" {
                "ide-cd"
            } else {
                "ide-hd"
            };
            let (bus, unit) = if q35 { (n, 0) } else { (n / 2, n % 2) };
            format!("{kind},bus=ide.{bus},unit={unit},drive={id},id={key}")
        } else if let Some(n) = indexed(key, "sata") {
            ahci = true;
            let kind = if cdrom || file == "none" {
                "ide-cd"
            } else {
                "ide-hd"
            };
            format!("{kind},bus=ahci0.{n},drive={id},id={key}")
        } else if let Some(n) = indexed(key, "scsi") {
            let kind = if cdrom || file == "none" {
                "scsi-cd"
            } else {
                "scsi-hd"
            };
            match scsihw {
                "virtio-scsi-single" => {
                    let ctrl = format!("virtioscsi{n}");
                    scsi_ctrls.insert(ctrl.clone(), format!("virtio-scsi-pci,id={ctrl}"));
                    format!("{kind},bus={ctrl}.0,channel=0,scsi-id=0,lun=0,drive={id},id={key}")
                }
                "virtio-scsi-pci" => {
                    scsi_ctrls.insert("scsihw0".into(), "virtio-scsi-pci,id=scsihw0".into());
                    format!("{kind},bus=scsihw0.0,channel=0,scsi-id=0,lun={n},drive={id},id={key}")
                }
                other => {
                    let model = match other {
                        "lsi53c810" => "lsi53c810",
                        "megasas" => "megasas",
                        "pvscsi" => "pvscsi",
                        _ => "lsi53c895a",
                    };
                    let ctrl = format!("scsihw{}", n / 7);
                    scsi_ctrls.insert(ctrl.clone(), format!("{model},id={ctrl}"));
                    format!("{kind},bus={ctrl}.0,scsi-id={},drive={id},id={key}", n % 7)
                }
            }
        } else if indexed(key, "virtio").is_some() {
            if cdrom {
                return Err(format!("unable to parse value of '{key}'\n"));
            }
            format!("virtio-blk-pci,drive={id},id={key}")
        } else {
            continue;
        };
        disk_args.push("-drive".into());
        disk_args.push(drive);
        disk_args.push("-device".into());
        disk_args.push(format!("{dev}{}", bi(key)));
    }
    if ahci {
        a.push("-device".into());
        a.push("ahci,id=ahci0".into());
    }
    for ctrl in scsi_ctrls.values() {
        a.push("-device".into());
        a.push(ctrl.clone());
    }
    a.extend(disk_args);

    // Network devices.
    let mut nics = Vec::new();
    for key in conf.keys() {
        let Some(idx) = indexed(key, "net") else {
            continue;
        };
        let n = pstr(schema, key, &conf[key])?;
        let model = n.get("model").cloned().unwrap_or_else(|| "virtio".into());
        let dev = NIC_MODELS
            .get(model.as_str())
            .ok_or_else(|| format!("unable to parse value of '{key}'\n"))?;
        let mac = n
            .get("macaddr")
            .cloned()
            .ok_or_else(|| format!("network interface '{key}' has no mac address\n"))?;
        if n.contains_key("tag") || n.contains_key("trunks") {
            return Err(format!(
                "pve-sim: VLAN tags and trunks ({key}) are not simulated\n"
            ));
        }
        let bridge = n.get("bridge").cloned();
        match &bridge {
            Some(_) => {
                a.push("-netdev".into());
                a.push(format!(
                    "type=tap,id={key},ifname={},script=no,downscript=no",
                    super::net::tap_name(i.vmid, idx)
                ));
            }
            None => {
                a.push("-netdev".into());
                a.push(format!("type=user,id={key}"));
            }
        }
        a.push("-device".into());
        a.push(format!("{dev},mac={mac},netdev={key},id={key}{}", bi(key)));
        nics.push(NicPlan {
            idx,
            bridge,
            firewall: n.get("firewall").map(String::as_str) == Some("1"),
            mac,
        });
    }
    Ok(LaunchPlan { argv: a, nics })
}

/// Spawn QEMU (paused) and wait until its QMP socket answers. Err carries the
/// log lines PVE would show and the task error.
pub async fn spawn(
    binary: &Path,
    argv: &[String],
    paths: &RunPaths,
) -> Result<i32, (Vec<String>, String)> {
    let _ = std::fs::remove_file(&paths.pid);
    let _ = std::fs::remove_file(&paths.qmp);
    let stderr = std::fs::File::create(&paths.stderr)
        .map_err(|e| (vec![], format!("start failed: {e}\n")))?;
    let mut child = tokio::process::Command::new(binary)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            (
                vec![],
                format!("start failed: cannot run {}: {e}\n", binary.display()),
            )
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&paths.stderr).unwrap_or_default();
            let lines = err.lines().map(|l| format!("kvm: {l}")).collect();
            let code = status.code().unwrap_or(-1);
            return Err((
                lines,
                format!("start failed: QEMU exited with code {code}\n"),
            ));
        }
        // Ready when QMP answers (a bare connect can win the race against a QEMU
        // that is about to exit on a bad device).
        if UnixStream::connect(&paths.qmp).await.is_ok()
            && qmp(&paths.qmp, "query-status", None).await.is_ok()
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            return Err((vec![], "start failed: command timed out\n".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    // Reap the process when it ends (never kill it from here).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// One QMP command on a fresh connection (QMP serves one client at a time).
pub async fn qmp(socket: &Path, cmd: &str, args: Option<Value>) -> Result<Value, String> {
    let fut = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("unable to connect to VM socket - {e}"))?;
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let _greeting = lines.next_line().await.map_err(|e| e.to_string())?;
        let send = |v: Value| format!("{v}\n");
        wr.write_all(send(json!({"execute": "qmp_capabilities"})).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_return(&mut lines).await?;
        let mut c = json!({ "execute": cmd });
        if let Some(a) = args {
            c["arguments"] = a;
        }
        wr.write_all(send(c).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_return(&mut lines).await
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("VM {cmd} qmp command failed - got timeout"))?
}

async fn read_return<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Result<Value, String> {
    loop {
        let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? else {
            return Err("QMP connection closed".into());
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(e
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("QMP error")
                .to_string());
        }
    }
}

/// The pid of the VM's QEMU if it is alive and really ours (its command line
/// names this VM's QMP socket: guards against pid reuse).
pub fn running_pid(paths: &RunPaths) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&paths.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = format!("unix:{}", opt_escape(&paths.qmp.display().to_string()));
    cmdline
        .split(|b| *b == 0)
        .any(|a| a.starts_with(needle.as_bytes()))
        .then_some(pid)
}

/// True when every uid and gid of the process (real, effective, saved, fs) is
/// `id`.
pub fn runs_as(pid: i32, id: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let all = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| {
                let ids: Vec<&str> = l[key.len()..].split_whitespace().collect();
                ids.len() == 4 && ids.iter().all(|x| x.parse::<u32>() == Ok(id))
            })
            .unwrap_or(false)
    };
    all("Uid:") && all("Gid:")
}

/// (utime+stime ticks, start ticks) of a process.
pub fn proc_times(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is f[0]; utime f[11], stime f[12], starttime f[19].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// Resident memory in bytes.
pub fn proc_rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn host_uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

pub fn kill(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}
