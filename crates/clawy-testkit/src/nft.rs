//! Reads a live nftables table back (`nft -j`) as ordered rules per chain, each
//! rendered to one short canonical line such as
//! `iifname == clawybr0 · oifname == clawybr0 => drop`, so tests can assert the
//! order and verdicts the kernel actually holds (not the text the agent meant
//! to write).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::netns::Netns;

/// One rule as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The matches, joined by ` · ` (empty for an unconditional rule).
    pub matches: String,
    /// `accept`, `drop`, `jump from_vm`, `masquerade`, `dnat`, ... (empty when
    /// the rule has no verdict or statement the renderer knows).
    pub verdict: String,
    pub comment: Option<String>,
}

impl Rule {
    /// `matches => verdict`, the line tests compare against.
    pub fn line(&self) -> String {
        if self.matches.is_empty() {
            format!("=> {}", self.verdict)
        } else {
            format!("{} => {}", self.matches, self.verdict)
        }
    }

    /// True for a rule with no match at all: it applies to every packet.
    pub fn is_unconditional(&self) -> bool {
        self.matches.is_empty()
    }
}

/// The table's chains (by name), each with its rules in kernel order.
pub fn chains(
    ns: &Netns,
    family: &str,
    table: &str,
) -> anyhow::Result<BTreeMap<String, Vec<Rule>>> {
    let json = ns.exec(&["nft", "-j", "list", "table", family, table])?;
    parse_chains(&json)
}

/// Same as `chains`, from `nft -j list table …` output.
pub fn parse_chains(json: &str) -> anyhow::Result<BTreeMap<String, Vec<Rule>>> {
    let v: Value = serde_json::from_str(json).context("nft -j output is not JSON")?;
    let objects = v["nftables"].as_array().context("no `nftables` array")?;
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for o in objects {
        if let Some(chain) = o.get("chain") {
            let name = chain["name"].as_str().context("chain without name")?;
            out.entry(name.to_string()).or_default();
        }
        let Some(rule) = o.get("rule") else { continue };
        let chain = rule["chain"].as_str().context("rule without chain")?;
        let exprs = rule["expr"].as_array().context("rule without expr")?;
        let mut matches = Vec::new();
        let mut verdict = String::new();
        for e in exprs {
            if let Some(m) = e.get("match") {
                matches.push(format!(
                    "{} {} {}",
                    operand(&m["left"]),
                    m["op"].as_str().unwrap_or("?"),
                    operand(&m["right"])
                ));
            } else if let Some(obj) = e.as_object() {
                let Some((key, val)) = obj.iter().next() else {
                    bail!("empty expression in {rule}");
                };
                match key.as_str() {
                    "counter" => {}
                    "jump" | "goto" => {
                        verdict = format!("{key} {}", val["target"].as_str().unwrap_or("?"));
                    }
                    other => verdict = other.to_string(),
                }
            }
        }
        out.entry(chain.to_string()).or_default().push(Rule {
            matches: matches.join(" · "),
            verdict,
            comment: rule["comment"].as_str().map(str::to_string),
        });
    }
    Ok(out)
}

fn operand(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(operand).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => {
            if let Some(m) = o.get("meta") {
                m["key"].as_str().unwrap_or("?").to_string()
            } else if let Some(p) = o.get("payload") {
                format!(
                    "{} {}",
                    p["protocol"].as_str().unwrap_or("?"),
                    p["field"].as_str().unwrap_or("?")
                )
            } else if let Some(c) = o.get("ct") {
                format!("ct {}", c["key"].as_str().unwrap_or("?"))
            } else if let Some(items) = o.get("concat").and_then(Value::as_array) {
                items.iter().map(operand).collect::<Vec<_>>().join(" . ")
            } else if let Some(items) = o.get("set").and_then(Value::as_array) {
                format!(
                    "{{{}}}",
                    items.iter().map(operand).collect::<Vec<_>>().join(",")
                )
            } else if let Some(p) = o.get("prefix") {
                format!("{}/{}", operand(&p["addr"]), operand(&p["len"]))
            } else {
                Value::Object(o.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renders_matches_and_verdicts() {
        let json = r#"{"nftables": [{"chain": {"name": "fwd"}},
          {"rule": {"chain": "fwd", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}], "comment": "x"}},
          {"rule": {"chain": "fwd", "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
          {"rule": {"chain": "fwd", "expr": [{"jump": {"target": "other"}}]}}]}"#;
        let c = parse_chains(json).unwrap();
        let r = &c["fwd"];
        assert_eq!(
            r[0].line(),
            "iifname == br · ip saddr == 10.0.0.0/8 => drop"
        );
        assert_eq!(r[0].comment.as_deref(), Some("x"));
        assert_eq!(r[1].line(), "ct state in {established,related} => accept");
        assert!(r[2].is_unconditional());
        assert_eq!(r[2].verdict, "jump other");
    }
}
