//! The security promises, as data: the `/security` page renders them and the test
//! suite checks that each id is proven by a test (`tests/it/promises.rs`). Mirrors
//! `SECURITY-PROMISES.md` (the shared design folder); ids must never change meaning.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Promise {
    /// e.g. `AUTH-1`.
    pub id: &'static str,
    /// e.g. `AUTH`.
    pub category: &'static str,
    pub title: &'static str,
    /// The promise in the product's own words.
    pub text: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Category {
    pub id: &'static str,
    pub title: &'static str,
    pub summary: &'static str,
}

pub const CATEGORIES: &[Category] = &[
    Category {
        id: "ISO",
        title: "Isolation",
        summary: "Your instance is a virtual machine of its own, not a container next to strangers.",
    },
    Category {
        id: "DATA",
        title: "Data protection",
        summary: "Traffic is encrypted and the secrets we must keep are encrypted at rest.",
    },
    Category {
        id: "ACCESS",
        title: "What the operator can and cannot see",
        summary: "We collect what is needed to run your machine, and have no way to read what is in it.",
    },
    Category {
        id: "AUTH",
        title: "Authentication and access control",
        summary: "Strong passwords, careful sessions, least-privilege API keys, key-only SSH.",
    },
    Category {
        id: "NET",
        title: "Network security",
        summary: "Nothing reaches your machine except the ports you use.",
    },
    Category {
        id: "REPORT",
        title: "Reporting",
        summary: "Found a problem? Tell us; we answer.",
    },
];

pub const PROMISES: &[Promise] = &[
    Promise {
        id: "ISO-1",
        category: "ISO",
        title: "A whole virtual machine per instance",
        text: "Every instance is its own KVM virtual machine, run by QEMU/KVM directly or by Proxmox VE. There are no containers and no kernel shared with other customers.",
    },
    Promise {
        id: "ISO-2",
        category: "ISO",
        title: "Dedicated resources",
        text: "The vCPUs, memory and disk you pay for are reserved for your machine. We never place more machines on a host than it can hold, never balloon memory away, and every machine gets a disk volume of its own.",
    },
    Promise {
        id: "ISO-3",
        category: "ISO",
        title: "Machines cannot reach each other",
        text: "Machines sit on a private network (a 10.x subnet per host) behind firewall rules on the host. They cannot talk to each other, neither on layer 2 nor layer 3 — only to the internet, through NAT, and to the management layer on the ports it needs.",
    },
    Promise {
        id: "ISO-4",
        category: "ISO",
        title: "Your disk is yours alone",
        text: "No machine can read another machine's disk or files. Deleting an instance destroys its disk and frees its addresses. Where we run the hypervisor ourselves, each machine's emulator runs as a user of its own, without root.",
    },
    Promise {
        id: "ISO-5",
        category: "ISO",
        title: "Your machine reaches the internet, not our network",
        text: "Your machine's outgoing traffic goes to the internet only. Private and internal ranges (RFC 1918, carrier-grade NAT, link-local addresses such as cloud metadata services), our hosts' and control plane's management addresses and IPv6 are unreachable from it, unless the operator explicitly allows a destination (for example an internal DNS resolver).",
    },
    Promise {
        id: "DATA-1",
        category: "DATA",
        title: "TLS everywhere",
        text: "Every instance hostname and the control plane are served over HTTPS. Certificates are obtained and renewed automatically, and only for hostnames of instances that exist.",
    },
    Promise {
        id: "DATA-2",
        category: "DATA",
        title: "Hosting region is policy",
        text: "Every host has a location, and machines are only placed where the operator's policy allows (by default: Germany).",
    },
    Promise {
        id: "DATA-3",
        category: "DATA",
        title: "Authenticated, encrypted management traffic",
        text: "The control plane talks to host agents over TLS, pinned to each agent's certificate, with a bearer token. Tokens are stored hashed on the agent and encrypted on the control plane, compared in constant time, and can be rotated.",
    },
    Promise {
        id: "DATA-4",
        category: "DATA",
        title: "Encrypted, access-controlled database and secrets",
        text: "Database connections are encrypted and verified (PostgreSQL with sslmode=verify-full), and the embedded SQLite file is readable by the service only. Secrets the platform must keep — agent tokens, bot tokens, provider keys, DNS keys — are encrypted at rest with a key only the operator holds.",
    },
    Promise {
        id: "DATA-5",
        category: "DATA",
        title: "Your assistant's secrets are delivered once",
        text: "The secrets you hand over for your assistant (Telegram bot token, model-provider key, and the gateway token we generate and show you once) are checked, sealed for your machine alone, and written only into its first-boot configuration, a file on its host that only root can read. When your machine reports that it applied that configuration, the host overwrites and deletes that file (your machine keeps a copy without secrets for later boots) and the control plane deletes its sealed copy. No operator, log or API can read them afterwards. Changing them later happens inside your machine (OpenClaw's own settings or SSH): we have no way in.",
    },
    Promise {
        id: "ACCESS-1",
        category: "ACCESS",
        title: "What we collect",
        text: "We collect what it takes to run your machine: its CPU, memory and disk usage, uptime and state; its network configuration (addresses, port mappings, DNS records); and whether the gateway and system services are up.",
    },
    Promise {
        id: "ACCESS-2",
        category: "ACCESS",
        title: "What we never collect",
        text: "We never collect your files, conversations, chat history, Telegram messages, CLI sessions or prompts, and there is no code path that could. The host agent has no way to run commands, read files or open a console in your machine; the QEMU guest agent is not attached; health comes from probing listening ports and an allow-listed service heartbeat.",
    },
    Promise {
        id: "ACCESS-3",
        category: "ACCESS",
        title: "Operator actions are logged for you",
        text: "Every action an operator takes on your instance — viewing it in the admin pages, stopping or starting it, migrating it — is written to an audit log that you can read. Your account's security events are logged there too.",
    },
    Promise {
        id: "AUTH-1",
        category: "AUTH",
        title: "Passwords done right",
        text: "Passwords are hashed with bcrypt at cost 12 or more. We never store, log or send them in plain text, and we refuse weak and common passwords when you sign up or change yours.",
    },
    Promise {
        id: "AUTH-2",
        category: "AUTH",
        title: "Least-privilege API keys",
        text: "API keys come in three tiers — read, manage, admin — enforced on every endpoint. A key is shown once, stored only as a hash, can be regenerated or revoked at any time, records when it was last used, and has a recognisable format so secret scanners can find it if it leaks.",
    },
    Promise {
        id: "AUTH-3",
        category: "AUTH",
        title: "Careful web sessions",
        text: "Web sessions live on the server. The cookie is Secure, HttpOnly, SameSite and __Host- prefixed; a new session id is issued at every sign-in; sessions end at sign-out, at password change, when idle and after a fixed maximum; every form that changes something is protected against cross-site request forgery.",
    },
    Promise {
        id: "AUTH-4",
        category: "AUTH",
        title: "Key-only SSH",
        text: "You reach your machine over SSH with your own keys only. Keys are checked when you add them (weak types are refused) and installed by cloud-init; password login and root password login are disabled in sshd.",
    },
    Promise {
        id: "AUTH-5",
        category: "AUTH",
        title: "Brute force is slowed down",
        text: "Failed sign-ins and API-key attempts are limited per client address (an IPv6 network counts once per /64) and per account, and counted atomically, so parallel guesses cannot slip past the limit. A valid API key is never refused because others behind your address got theirs wrong. Account locks are short and escalate, but cannot keep you out: a browser you signed in from before skips the account lock (it has a small limit of its own), and your correct password ends the lock.",
    },
    Promise {
        id: "NET-1",
        category: "NET",
        title: "A firewall inside every machine",
        text: "Every machine runs UFW with inbound traffic denied by default, allowing only SSH and the gateway port (which also serves the dashboard), the gateway port only from the HTTPS edge's address.",
    },
    Promise {
        id: "NET-2",
        category: "NET",
        title: "fail2ban in every machine",
        text: "fail2ban runs in every machine, with at least the sshd jail: 5 failed SSH logins within 10 minutes ban the address for 10 minutes.",
    },
    Promise {
        id: "NET-3",
        category: "NET",
        title: "No public IPv4 on machines",
        text: "Machines have no public IPv4 address. They are reachable only through the NAT host (a port forward for SSH) and the HTTPS edge (for the gateway and dashboard).",
    },
    Promise {
        id: "NET-4",
        category: "NET",
        title: "TLS ends at the edge",
        text: "Caddy terminates TLS at the edge and forwards to your machine's private address.",
    },
    Promise {
        id: "NET-5",
        category: "NET",
        title: "Only the ports you use are open",
        text: "Only explicitly allowed ports are forwarded; every other inbound port is closed, and we check that by scanning from outside.",
    },
    Promise {
        id: "REPORT-1",
        category: "REPORT",
        title: "Tell us about problems",
        text: "This page states our promises in our own words, /.well-known/security.txt names our security contact, and the report form stores your report, gives you a tracking id, limits abuse, and notifies our security contact by email.",
    },
];

/// All promises, in document order.
pub fn all() -> &'static [Promise] {
    PROMISES
}

pub fn by_id(id: &str) -> Option<&'static Promise> {
    PROMISES.iter().find(|p| p.id == id)
}

/// The promises of one category, in order.
pub fn in_category(category: &str) -> impl Iterator<Item = &'static Promise> + '_ {
    PROMISES.iter().filter(move |p| p.category == category)
}

/// Promises this build does not yet keep: no automated test proves their mechanism
/// yet. The `/security` page marks each one "not yet kept" with the reason, and the
/// coverage test (`tests/it/promises.rs`) requires a named test for every other id
/// and refuses an id here once a test names it. Short by intent: an entry leaves
/// when its test lands, never by editing the reason.
pub const NOT_YET_KEPT: &[NotYetKept] = &[];

/// A promise that is published but not yet proven, and why.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct NotYetKept {
    pub id: &'static str,
    /// Shown on `/security` beside the promise.
    pub why: &'static str,
}

/// Why `id` is not yet kept, or `None` when a test proves it.
pub fn not_yet_kept(id: &str) -> Option<&'static str> {
    NOT_YET_KEPT.iter().find(|n| n.id == id).map(|n| n.why)
}
