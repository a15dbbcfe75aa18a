//! What an agent may see of the daemon's environment, and what must never come back out.
//!
//! The daemon holds the secrets its triggers and outputs need (webhook HMAC secrets, Slack
//! and GitHub tokens, SMTP passwords), named by jobs through `*_env` fields. An agent is an
//! LLM with a shell, possibly steered by a stranger's webhook payload: it gets the daemon's
//! environment minus every such variable (or, with `inherit_env: false`, only a few basics
//! and what the job allows), and whatever it prints passes through a [`Redactor`] that
//! replaces secret values by `[redacted]` before it is stored or delivered.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};

/// Kept from the daemon's environment even with `inherit_env: false`.
pub const ALWAYS_KEPT: &[&str] = &["PATH", "HOME", "LANG", "USER", "TERM"];

/// Name endings whose values are redacted from output even though the agent sees them.
pub const SECRET_SUFFIXES: &[&str] = &["_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: they would mangle ordinary text.
pub const MIN_SECRET_LEN: usize = 6;

/// Environment variables that jobs name as secrets: exact names and name prefixes
/// (`smtp_env_prefix`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretNames {
    pub names: BTreeSet<String>,
    pub prefixes: BTreeSet<String>,
}

impl SecretNames {
    /// Whether a variable of this name is a secret.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// Whether a name looks like it holds a credential (`…_KEY`, `…_TOKEN`, …).
pub fn looks_secret(name: &str) -> bool {
    SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// How the agent's environment is built from the daemon's.
pub struct EnvPolicy<'a> {
    pub secrets: &'a SecretNames,
    /// `agent.inherit_env`: start from the daemon's environment (minus secrets).
    pub inherit: bool,
    /// `agent.env_allow`: passed even when not inherited, and even when a job names them as
    /// secrets (the job's author asked for them).
    pub allow: &'a [String],
}

/// The agent's complete environment: the daemon's (filtered by `policy`), then `extra`
/// (the job's `env` and the `BOG_*` variables), which override.
pub fn agent_env(
    daemon: &[(OsString, OsString)],
    policy: &EnvPolicy<'_>,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = daemon
        .iter()
        .filter(|(k, _)| {
            let name = k.to_string_lossy();
            let allowed = policy.allow.iter().any(|a| a.as_str() == name);
            if allowed {
                return true;
            }
            if policy.secrets.contains(&name) {
                return false;
            }
            policy.inherit || ALWAYS_KEPT.contains(&name.as_ref())
        })
        .cloned()
        .collect();
    for (k, v) in extra {
        out.retain(|(n, _)| n.as_os_str() != OsStr::new(k));
        out.push((k.into(), v.into()));
    }
    out
}

/// An environment as it may be shown (`job test`): every name, with its value hidden
/// (`None`) for a variable a job names as a secret or one named like a credential, and every
/// other value passed through `redactor`.
pub fn shown(
    env: &[(OsString, OsString)],
    secrets: &SecretNames,
    redactor: &Redactor,
) -> Vec<(String, Option<String>)> {
    env.iter()
        .map(|(k, v)| {
            let name = k.to_string_lossy().into_owned();
            let hidden = secrets.contains(&name) || looks_secret(&name);
            let value = (!hidden).then(|| redactor.redact(&v.to_string_lossy(), false, false));
            (name, value)
        })
        .collect()
}

/// Replaces secret values with `[redacted]`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// Secrets: the values of `secrets` variables and of variables named like credentials,
    /// in the daemon's environment and in `job_env`.
    pub fn new(
        daemon: &[(OsString, OsString)],
        secrets: &SecretNames,
        job_env: &[(String, String)],
    ) -> Redactor {
        let mut set = BTreeSet::new();
        for (k, v) in daemon {
            let name = k.to_string_lossy();
            if secrets.contains(&name) || looks_secret(&name) {
                if let Some(v) = v.to_str() {
                    set.insert(v.to_string());
                }
            }
        }
        for (k, v) in job_env {
            if secrets.contains(k) || looks_secret(k) {
                set.insert(v.clone());
            }
        }
        let mut values: Vec<String> = set
            .into_iter()
            .filter(|v| v.trim().len() >= MIN_SECRET_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Redactor { values }
    }

    /// Replaces every secret value in `s`. `cut_start`/`cut_end`: the text was cut there
    /// (a tail, or output past `max_output_kb`), so a secret's end at the start, or its
    /// beginning at the end, is redacted too.
    pub fn redact(&self, s: &str, cut_start: bool, cut_end: bool) -> String {
        let mut out = s.to_string();
        if self.values.is_empty() {
            return out;
        }
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        if cut_end {
            if let Some(n) = self.partial_at_end(&out) {
                out.truncate(out.len() - n);
                out.push_str(REDACTED);
            }
        }
        if cut_start {
            if let Some(n) = self.partial_at_start(&out) {
                out = format!("{REDACTED}{}", &out[n..]);
            }
        }
        out
    }

    /// Length of the longest proper prefix (3+ bytes) of a secret that `s` ends with.
    fn partial_at_end(&self, s: &str) -> Option<usize> {
        self.values
            .iter()
            .filter_map(|v| {
                (3..v.len())
                    .rev()
                    .filter(|n| v.is_char_boundary(*n))
                    .find(|n| s.ends_with(&v[..*n]))
            })
            .max()
    }

    /// Length of the longest proper suffix (3+ bytes) of a secret that `s` starts with.
    fn partial_at_start(&self, s: &str) -> Option<usize> {
        self.values
            .iter()
            .filter_map(|v| {
                (1..v.len().saturating_sub(2))
                    .filter(|i| v.is_char_boundary(*i))
                    .find(|i| s.starts_with(&v[*i..]))
                    .map(|i| v.len() - i)
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(a, b)| (a.into(), b.into())).collect()
    }

    fn names(n: &[&str], p: &[&str]) -> SecretNames {
        SecretNames {
            names: n.iter().map(|s| s.to_string()).collect(),
            prefixes: p.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn secrets_are_removed_and_inherit_false_keeps_basics() {
        let daemon = os(&[
            ("PATH", "/bin"),
            ("HOOK_SECRET", "hook-secret-value"),
            ("SLACK_TOKEN", "xoxb-123456"),
            ("SMTP_PASSWORD", "smtp-pass-1"),
            ("OPENAI_API_KEY", "sk-abcdef"),
            ("OTHER", "o"),
        ]);
        let s = names(&["HOOK_SECRET", "SLACK_TOKEN"], &["SMTP_"]);
        let extra = vec![("BOG_RUN_ID".to_string(), "run_1".to_string())];
        let e = agent_env(
            &daemon,
            &EnvPolicy {
                secrets: &s,
                inherit: true,
                allow: &[],
            },
            &extra,
        );
        let keys: Vec<String> = e.iter().map(|(k, _)| k.to_string_lossy().into()).collect();
        assert_eq!(keys, ["PATH", "OPENAI_API_KEY", "OTHER", "BOG_RUN_ID"]);
        let allow = vec!["OPENAI_API_KEY".to_string(), "SLACK_TOKEN".to_string()];
        let e = agent_env(
            &daemon,
            &EnvPolicy {
                secrets: &s,
                inherit: false,
                allow: &allow,
            },
            &extra,
        );
        let keys: Vec<String> = e.iter().map(|(k, _)| k.to_string_lossy().into()).collect();
        assert_eq!(
            keys,
            ["PATH", "SLACK_TOKEN", "OPENAI_API_KEY", "BOG_RUN_ID"]
        );
    }

    #[test]
    fn redaction_covers_named_and_suffixed_values_and_cut_edges() {
        let daemon = os(&[
            ("HOOK_SECRET", "hook-secret-value"),
            ("OPENAI_API_KEY", "sk-abcdef123"),
            ("SHORT_TOKEN", "abc"),
            ("PLAIN", "not-a-secret"),
        ]);
        let r = Redactor::new(&daemon, &names(&["HOOK_SECRET"], &[]), &[]);
        assert_eq!(
            r.redact(
                "k=sk-abcdef123 h=hook-secret-value p=not-a-secret abc",
                false,
                false
            ),
            "k=[redacted] h=[redacted] p=not-a-secret abc"
        );
        assert_eq!(r.redact("out: sk-abc", false, true), "out: [redacted]");
        assert_eq!(
            r.redact("def123 and more", true, false),
            "[redacted] and more"
        );
        assert_eq!(r.redact("out: sk-abc", false, false), "out: sk-abc");
    }
}
