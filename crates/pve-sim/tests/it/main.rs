//! pve-sim integration tests (real HTTPS, real QEMU, real qemu-img/genisoimage).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod faults;
mod guest;
mod protocol;

use std::time::Duration;

use pve_sim::{SimConfig, SimHandle, TemplateConfig, TokenConfig};
use serde_json::Value;

pub use client::{Raw, form_encode, pve_urlencode};

pub const TOKEN_ID: &str = "clawy@pve!agent";
pub const TOKEN_SECRET: &str = "0e1c5a43-5b55-4c8b-9f8e-5c3e8d2b7a11";
/// A token with only read privileges.
pub const RO_ID: &str = "viewer@pve!ro";
pub const RO_SECRET: &str = "9a7b4f6e-1d2c-4e3f-8a9b-0c1d2e3f4a5b";

pub struct Env {
    pub sim: SimHandle,
    pub _dir: tempfile::TempDir,
}

impl Env {
    pub fn auth(&self) -> String {
        format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}")
    }

    pub fn ro_auth(&self) -> String {
        format!("PVEAPIToken={RO_ID}={RO_SECRET}")
    }

    /// A call with the full token: form body for PUT/POST, query otherwise.
    pub async fn call(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Raw {
        self.call_as(&self.auth(), method, path, params).await
    }

    pub async fn call_as(
        &self,
        auth: &str,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Raw {
        let form = form_encode(params);
        let (path, body, ct) = if method == "PUT" || method == "POST" {
            (
                path.to_string(),
                form.into_bytes(),
                Some("application/x-www-form-urlencoded"),
            )
        } else if form.is_empty() {
            (path.to_string(), Vec::new(), None)
        } else {
            (format!("{path}?{form}"), Vec::new(), None)
        };
        client::request(
            self.sim.addr(),
            self.sim.ca_pem(),
            method,
            &format!("/api2/json{path}"),
            Some(auth),
            ct,
            &body,
        )
        .await
    }

    /// `data` of a successful call (panics with the response otherwise).
    pub async fn ok(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let r = self.call(method, path, params).await;
        assert_eq!(
            r.status,
            200,
            "{method} {path}: {} {} {}",
            r.status,
            r.reason,
            r.text()
        );
        r.json()["data"].clone()
    }

    /// Wait for a task and return its status object.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let path = format!("/nodes/pve/tasks/{}/status", client::path_escape(upid));
        for _ in 0..1200 {
            let st = self.ok("GET", &path, &[]).await;
            if st["status"] == "stopped" {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {upid} did not end");
    }

    pub async fn task_log(&self, upid: &str) -> String {
        let path = format!("/nodes/pve/tasks/{}/log", client::path_escape(upid));
        let v = self.ok("GET", &path, &[("limit", "0")]).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["t"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Run a call that returns a UPID and wait for it; returns (upid, exitstatus).
    pub async fn run_task(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> (String, String) {
        let upid = self
            .ok(method, path, params)
            .await
            .as_str()
            .unwrap()
            .to_string();
        let st = self.wait_task(&upid).await;
        (upid, st["exitstatus"].as_str().unwrap().to_string())
    }
}

/// A blank qcow2 to stand in for a template's OS disk where no guest has to boot.
pub fn blank_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("blank.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&p)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    p
}

/// An in-process simulator with a template 9000 (blank disk, no NIC) and two
/// tokens; `tweak` adjusts the config.
pub async fn start_sim(tweak: impl FnOnce(&mut SimConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::for_tests(&dir.path().join("state"));
    cfg.auth_failure_delay_ms = 300;
    cfg.tokens = vec![
        TokenConfig {
            id: TOKEN_ID.into(),
            secret: TOKEN_SECRET.into(),
            privileges: vec!["*".into()],
        },
        TokenConfig {
            id: RO_ID.into(),
            secret: RO_SECRET.into(),
            privileges: vec!["VM.Audit".into(), "Sys.Audit".into()],
        },
    ];
    cfg.templates = vec![TemplateConfig {
        vmid: 9000,
        image: blank_image(dir.path()),
        name: Some("tmpl".into()),
        bridge: None,
        memory: 128,
        cores: 1,
    }];
    tweak(&mut cfg);
    let sim = SimHandle::start(cfg).await.unwrap();
    Env { sim, _dir: dir }
}
