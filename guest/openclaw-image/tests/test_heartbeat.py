"""Tests of the guest's heartbeat reporter (ACCESS-1, ACCESS-2) against real local
HTTP servers: what it sends (exactly the allow-listed shape), how it authenticates,
which configs it refuses, and that it reads no proxy and follows no redirect.

Run: python3 -m unittest discover -s guest/openclaw-image/tests -v
"""

import http.server
import importlib.machinery
import importlib.util
import json
import os
import re
import socket
import tempfile
import threading
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "rootfs/usr/local/lib/clawy/clawy-heartbeat"


def load_module():
    loader = importlib.machinery.SourceFileLoader("clawy_heartbeat", str(SCRIPT))
    spec = importlib.util.spec_from_loader("clawy_heartbeat", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


hb = load_module()

TOKEN = "hb_" + "A1b2C3d4E5f6G7h8" * 2

# The contract (CONTRACT.md): every key, every allowed value.
STATE = {"active", "activating", "inactive", "failed", "unknown"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def assert_contract_shape(tc, body):
    tc.assertEqual(set(body), {"v", "image", "boot_id", "booted_at", "sent_at", "config_applied",
                               "cloud_init", "services"})
    tc.assertEqual(body["v"], 1)
    tc.assertIsInstance(body["image"], str)
    tc.assertRegex(body["booted_at"], RFC3339)
    tc.assertRegex(body["sent_at"], RFC3339)
    tc.assertIsInstance(body["config_applied"], bool)
    tc.assertIn(body["cloud_init"], {"done", "running", "error"})
    s = body["services"]
    tc.assertEqual(set(s), {"openclaw_gateway", "sshd", "ufw", "fail2ban"})
    tc.assertEqual(set(s["openclaw_gateway"]), {"state", "ready"})
    tc.assertIn(s["openclaw_gateway"]["state"], STATE)
    tc.assertIsInstance(s["openclaw_gateway"]["ready"], bool)
    tc.assertEqual(set(s["sshd"]), {"state"})
    tc.assertIn(s["sshd"]["state"], STATE)
    tc.assertEqual(set(s["ufw"]), {"state", "default_incoming"})
    tc.assertIn(s["ufw"]["state"], STATE)
    tc.assertIn(s["ufw"]["default_incoming"], {"deny", "allow", "reject", "unknown"})
    tc.assertEqual(set(s["fail2ban"]), {"state", "jails"})
    tc.assertIn(s["fail2ban"]["state"], STATE)
    tc.assertIsInstance(s["fail2ban"]["jails"], list)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request; answers with the server's configured status."""

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({
            "method": self.command, "path": self.path, "headers": dict(self.headers), "body": body,
        })
        status = self.server.status_for(self.path)
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", self.server.redirect_to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = _handle
    do_POST = _handle

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, status=204, redirect_to="http://127.0.0.1:9/"):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.httpd.requests = []
        self.httpd.status_for = status if callable(status) else (lambda _p: status)
        self.httpd.redirect_to = redirect_to
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SYSTEMCTL_ALL_ACTIVE = (
    "Id=openclaw-gateway.service\nLoadState=loaded\nActiveState=active\n\n"
    "Id=ssh.service\nLoadState=loaded\nActiveState=active\n\n"
    "Id=ufw.service\nLoadState=loaded\nActiveState=active\n\n"
    "Id=fail2ban.service\nLoadState=loaded\nActiveState=active\n"
)
IPTABLES_UFW_DENY = (
    "-P INPUT DROP\n-A INPUT -j ufw-before-logging-input\n-A INPUT -j ufw-before-input\n"
    "-A INPUT -j ufw-after-input\n-A INPUT -j ufw-reject-input\n"
)
F2B_STATUS = "Status\n|- Number of jail:\t1\n`- Jail list:\tsshd\n"


class FakeCommands:
    """Stands in for systemctl/iptables/fail2ban-client output (fixed commands only)."""

    def __init__(self, systemctl=SYSTEMCTL_ALL_ACTIVE, iptables=IPTABLES_UFW_DENY, reject="",
                 f2b=F2B_STATUS):
        self.out = {"systemctl": systemctl, "iptables": iptables, "fail2ban-client": f2b}
        self.reject = reject
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "iptables" and argv[-1] == "ufw-reject-input":
            return self.reject
        return self.out.get(argv[0])


class Fixture(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        (self.dir / "image").write_text("clawy-openclaw-2026.9.6-1\n")
        (self.dir / "boot_id").write_text("0f6b0c4e-5a4b-4f7d-9d3e-1f2a3b4c5d6e\n")
        (self.dir / "stat").write_text("cpu  1 2 3\nbtime 1764500000\nprocesses 9\n")
        self.ready = Server(status=lambda p: 200 if p == "/readyz" else 404)
        self.addCleanup(self.ready.close)
        self.cmds = FakeCommands()
        self.probes = hb.Probes(
            runner=self.cmds, marker=str(self.dir / "config-applied"), image=str(self.dir / "image"),
            boot_id_path=str(self.dir / "boot_id"), stat_path=str(self.dir / "stat"),
            cloud_init_result=str(self.dir / "result.json"),
            ready_url=f"http://127.0.0.1:{self.ready.port}/readyz")

    def tearDown(self):
        self.tmp.cleanup()

    def write_config(self, data, mode=0o600):
        path = self.dir / "heartbeat.json"
        path.write_text(json.dumps(data) if not isinstance(data, str) else data)
        os.chmod(path, mode)
        return str(path)


class CollectTests(Fixture):
    def test_access2_body_is_exactly_the_allow_listed_shape(self):
        body = hb.collect(self.probes, now=1764500100)
        assert_contract_shape(self, body)
        self.assertEqual(body, {
            "v": 1,
            "image": "clawy-openclaw-2026.9.6-1",
            "boot_id": "0f6b0c4e-5a4b-4f7d-9d3e-1f2a3b4c5d6e",
            "booted_at": "2025-11-30T10:53:20Z",
            "sent_at": "2025-11-30T10:55:00Z",
            "config_applied": False,
            "cloud_init": "running",
            "services": {
                "openclaw_gateway": {"state": "active", "ready": True},
                "sshd": {"state": "active"},
                "ufw": {"state": "active", "default_incoming": "deny"},
                "fail2ban": {"state": "active", "jails": ["sshd"]},
            },
        })

    def test_access2_only_fixed_commands_run(self):
        hb.collect(self.probes)
        for argv in self.cmds.calls:
            self.assertIn(argv[0], {"systemctl", "iptables", "fail2ban-client"})
        self.assertIn(["fail2ban-client", "status"], self.cmds.calls)

    def test_marker_and_cloud_init_result(self):
        (self.dir / "config-applied").write_text("")
        (self.dir / "result.json").write_text(json.dumps({"v1": {"datasource": "NoCloud", "errors": []}}))
        body = hb.collect(self.probes)
        self.assertTrue(body["config_applied"])
        self.assertEqual(body["cloud_init"], "done")
        (self.dir / "result.json").write_text(json.dumps({"v1": {"errors": ["('ssh', KeyError())"]}}))
        self.assertEqual(hb.collect(self.probes)["cloud_init"], "error")
        (self.dir / "result.json").write_text("{not json")
        self.assertEqual(hb.collect(self.probes)["cloud_init"], "error")

    def test_gateway_ready_needs_a_2xx_from_readyz(self):
        self.ready.httpd.status_for = lambda p: 503
        self.assertFalse(hb.collect(self.probes)["services"]["openclaw_gateway"]["ready"])
        # A redirect is not readiness, and is not followed (even to a 200).
        ok = Server(status=200)
        self.addCleanup(ok.close)
        self.ready.httpd.status_for = lambda p: 302
        self.ready.httpd.redirect_to = f"http://127.0.0.1:{ok.port}/readyz"
        self.assertFalse(hb.collect(self.probes)["services"]["openclaw_gateway"]["ready"])
        self.probes.ready_url = f"http://127.0.0.1:{free_port()}/readyz"
        self.assertFalse(hb.collect(self.probes)["services"]["openclaw_gateway"]["ready"])

    def test_gateway_not_active_is_never_ready(self):
        self.cmds.out["systemctl"] = SYSTEMCTL_ALL_ACTIVE.replace(
            "Id=openclaw-gateway.service\nLoadState=loaded\nActiveState=active",
            "Id=openclaw-gateway.service\nLoadState=loaded\nActiveState=activating")
        gw = hb.collect(self.probes)["services"]["openclaw_gateway"]
        self.assertEqual(gw, {"state": "activating", "ready": False})

    def test_states_are_mapped_and_unknown_is_unknown(self):
        self.cmds.out["systemctl"] = (
            "Id=openclaw-gateway.service\nLoadState=loaded\nActiveState=failed\n\n"
            "Id=ssh.service\nLoadState=loaded\nActiveState=deactivating\n\n"
            "Id=ufw.service\nLoadState=not-found\nActiveState=inactive\n\n"
            "Id=fail2ban.service\nLoadState=loaded\nActiveState=<script>alert(1)</script>\n")
        s = hb.collect(self.probes)["services"]
        self.assertEqual(s["openclaw_gateway"]["state"], "failed")
        self.assertEqual(s["sshd"]["state"], "inactive")
        self.assertEqual(s["ufw"]["state"], "unknown")
        self.assertEqual(s["fail2ban"], {"state": "unknown", "jails": []})

    def test_systemctl_failure_reports_unknown(self):
        self.cmds.out["systemctl"] = None
        s = hb.collect(self.probes)["services"]
        for name in ("openclaw_gateway", "sshd", "ufw", "fail2ban"):
            self.assertEqual(s[name]["state"], "unknown")

    def test_net1_ufw_state_comes_from_the_live_rules(self):
        # Unit active but no ufw chains in the kernel: the firewall is not up.
        self.cmds.out["iptables"] = "-P INPUT ACCEPT\n"
        self.assertEqual(hb.collect(self.probes)["services"]["ufw"],
                         {"state": "inactive", "default_incoming": "allow"})
        self.cmds.out["iptables"] = IPTABLES_UFW_DENY
        self.cmds.reject = "-N ufw-reject-input\n-A ufw-reject-input -j REJECT\n"
        self.assertEqual(hb.collect(self.probes)["services"]["ufw"],
                         {"state": "active", "default_incoming": "reject"})
        self.cmds.out["iptables"] = None
        self.assertEqual(hb.collect(self.probes)["services"]["ufw"],
                         {"state": "unknown", "default_incoming": "unknown"})

    def test_net2_jail_names_are_shape_checked(self):
        self.cmds.out["fail2ban-client"] = ("Status\n|- Number of jail:\t3\n"
                                             "`- Jail list:\tsshd, recidive, $(reboot), " + "x" * 200 + "\n")
        self.assertEqual(hb.collect(self.probes)["services"]["fail2ban"]["jails"], ["recidive", "sshd"])

    def test_hostile_image_and_boot_id_are_not_echoed(self):
        (self.dir / "image").write_text('clawy-openclaw-1"},"leak":"x\n')
        (self.dir / "boot_id").write_text("../../etc/shadow\n")
        body = hb.collect(self.probes)
        self.assertEqual(body["image"], "unknown")
        self.assertEqual(body["boot_id"], "unknown")


class ConfigTests(Fixture):
    def good(self, **over):
        data = {"agent_address": "10.42.0.1", "agent_port": 9180, "token": TOKEN}
        data.update(over)
        return data

    def test_valid_config(self):
        cfg = hb.load_config(self.write_config(self.good()), require_root_owner=False)
        self.assertEqual(cfg.url, "http://10.42.0.1:9180/v1/heartbeat")
        self.assertNotIn(TOKEN, repr(cfg))
        cfg = hb.load_config(self.write_config(self.good(agent_address="fd00::1")), require_root_owner=False)
        self.assertEqual(cfg.url, "http://[fd00::1]:9180/v1/heartbeat")

    def test_refuses_unsafe_or_malformed_configs(self):
        cases = {
            "mode": (self.good(), 0o644, "readable by others"),
            "unknown key": (self.good(extra="x"), 0o600, "unknown keys"),
            "missing key": ({"agent_address": "10.0.0.1", "token": TOKEN}, 0o600, "missing keys"),
            "host name": (self.good(agent_address="agent.example"), 0o600, "IP address literal"),
            "url injection": (self.good(agent_address="10.0.0.1/evil?"), 0o600, "IP address literal"),
            "port": (self.good(agent_port=70000), 0o600, "agent_port"),
            "port bool": (self.good(agent_port=True), 0o600, "agent_port"),
            "token newline": (self.good(token=TOKEN + "\r\nX-Evil: 1"), 0o600, "token"),
            "token short": (self.good(token="short"), 0o600, "token"),
            "not json": ("{", 0o600, "not valid JSON"),
            "array": ("[]", 0o600, "JSON object"),
        }
        for name, (data, mode, message) in cases.items():
            with self.subTest(name):
                path = self.write_config(data, mode)
                with self.assertRaises(hb.ConfigError) as e:
                    hb.load_config(path, require_root_owner=False)
                self.assertIn(message, str(e.exception))
                self.assertNotIn(TOKEN, str(e.exception))

    def test_refuses_a_config_not_owned_by_root(self):
        if os.geteuid() == 0:
            path = self.write_config(self.good())
            os.chown(path, 65534, 65534)
        else:
            path = self.write_config(self.good())
        with self.assertRaises(hb.ConfigError):
            hb.load_config(path, require_root_owner=True)

    def test_refuses_a_symlink(self):
        target = self.write_config(self.good())
        link = self.dir / "link.json"
        link.symlink_to(target)
        with self.assertRaises(hb.ConfigError):
            hb.load_config(str(link), require_root_owner=False)


class SendTests(Fixture):
    def setUp(self):
        super().setUp()
        self.agent = Server(status=204)
        self.addCleanup(self.agent.close)

    def config(self):
        return hb.Config("127.0.0.1", self.agent.port, TOKEN)

    def test_access1_post_with_bearer_token_and_json(self):
        status = hb.send(self.config(), hb.collect(self.probes))
        self.assertEqual(status, 204)
        [req] = self.agent.requests
        self.assertEqual(req["method"], "POST")
        self.assertEqual(req["path"], "/v1/heartbeat")
        self.assertEqual(req["headers"]["Authorization"], f"Bearer {TOKEN}")
        self.assertEqual(req["headers"]["Content-Type"], "application/json")
        assert_contract_shape(self, json.loads(req["body"]))

    def test_ignores_proxy_environment(self):
        old = {k: os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")}
        os.environ["http_proxy"] = os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{free_port()}"
        os.environ.pop("no_proxy", None)
        os.environ.pop("NO_PROXY", None)
        try:
            # The opener is built at import: import it again under the proxy variables.
            fresh = load_module()
            self.assertEqual(fresh.send(fresh.Config("127.0.0.1", self.agent.port, TOKEN), {"v": 1}), 204)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_does_not_follow_redirects(self):
        elsewhere = Server(status=204)
        self.addCleanup(elsewhere.close)
        for code in (301, 302, 303, 307, 308):
            self.agent.httpd.status_for = lambda p, code=code: code
            self.agent.httpd.redirect_to = f"http://127.0.0.1:{elsewhere.port}/steal"
            self.assertEqual(hb.send(self.config(), {"v": 1}), code)
        self.assertEqual(elsewhere.requests, [])

    def test_unreachable_agent_is_status_0(self):
        self.assertEqual(hb.send(hb.Config("127.0.0.1", free_port(), TOKEN), {"v": 1}), 0)


class LoopTests(Fixture):
    def setUp(self):
        super().setUp()
        self.agent = Server(status=204)
        self.addCleanup(self.agent.close)
        self.cfg = self.write_config({"agent_address": "127.0.0.1", "agent_port": self.agent.port,
                                      "token": TOKEN})
        self.now = [1000.0]

    def run_loop(self, steps, on_step=None):
        count = [0]

        def sleep(secs):
            self.now[0] += secs
            count[0] += 1
            if on_step:
                on_step(count[0])
            if count[0] >= steps:
                raise StopIteration

        with self.assertRaises(StopIteration):
            hb.main_loop(self.cfg, self.probes, sleep=sleep, clock=lambda: self.now[0],
                         require_root_owner=False)

    def test_sends_at_start_then_every_30s(self):
        self.run_loop(13)  # 13 checks of 5 s = 65 s
        self.assertEqual(len(self.agent.requests), 3)  # t=0, 30, 60

    def test_sends_early_when_a_fact_changes(self):
        # The marker appears after the second check: sent at the next check, not 30 s later.
        self.run_loop(4, on_step=lambda n: n == 2 and (self.dir / "config-applied").write_text(""))
        bodies = [json.loads(r["body"]) for r in self.agent.requests]
        self.assertEqual([b["config_applied"] for b in bodies], [False, True])

    def test_waits_for_the_config_then_sends(self):
        os.unlink(self.cfg)
        cfg_data = {"agent_address": "127.0.0.1", "agent_port": self.agent.port, "token": TOKEN}
        self.run_loop(3, on_step=lambda n: n == 1 and self.write_config(cfg_data))
        self.assertEqual(len(self.agent.requests), 1)

    def test_retries_sooner_after_a_refusal(self):
        self.agent.httpd.status_for = lambda p: 401
        self.run_loop(5)  # 25 s: sends at 0, 10, 20
        self.assertEqual(len(self.agent.requests), 3)


if __name__ == "__main__":
    unittest.main()
