//! The JSON a user writes for a job, as types: what is accepted, field by field, and how a
//! wrong shape is reported ([`FieldError`] with the exact path, e.g. `triggers[0].seconds`).
//!
//! The types mirror the model ([`super::model`]) with every field optional (`null` counts as
//! absent) and `deny_unknown_fields` (a private module: only `validate` sees them); they are
//! read through `serde_path_to_error`, and serde's messages are reworded in the words
//! [`super::validate`] uses for its own checks.
//! What a value means (ranges, cron, paths, URLs, ...) is checked there.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};
use serde_path_to_error::Segment;

use super::model::{Filesystem, Overlap, PromptVia};

/// A validation failure: `{"error": ..., "field": ...}` in the API, exit 2 in the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `limits.timeout_seconds` or `triggers[1].path`.
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub error: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.field, self.error)
        }
    }
}

impl std::error::Error for FieldError {}

pub type R<T> = Result<T, FieldError>;

pub fn err<T>(field: &str, error: impl Into<String>) -> R<T> {
    Err(FieldError {
        field: field.to_string(),
        error: error.into(),
    })
}

/// Fields the daemon computes; accepted on input (so a fetched job can be sent back) and
/// ignored.
pub const READ_ONLY: &[&str] = &["id", "created_at", "next_fire_at", "warnings", "budget_use"];

// ---- the shape, derived ----
//
// Every field is optional here (`null` counts as absent, as it always has); required fields
// and defaults are decided by `super::validate`. Numbers stay `Number` until their range is
// checked, so the message can quote the value given.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobIn {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub agent: Option<Obj<AgentIn>>,
    pub model: Option<String>,
    pub working_dir: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    /// Elements are read one by one ([`tagged`]), so each error names its index.
    pub triggers: Option<Vec<Value>>,
    pub outputs: Option<Vec<Value>>,
    pub limits: Option<Obj<LimitsIn>>,
    pub overlap: Option<Overlap>,
    pub max_retries: Option<Number>,
    pub retry_backoff_seconds: Option<Number>,
    pub catch_up: Option<bool>,
    pub history: Option<Number>,
    pub enabled: Option<bool>,
    pub expect: Option<Obj<ExpectIn>>,
    // READ_ONLY: accepted and ignored.
    #[serde(rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(rename = "next_fire_at")]
    _next_fire_at: Option<IgnoredAny>,
    #[serde(rename = "warnings")]
    _warnings: Option<IgnoredAny>,
    #[serde(rename = "budget_use")]
    _budget_use: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIn {
    pub command: Option<Vec<String>>,
    pub prompt_via: Option<PromptVia>,
    pub inherit_env: Option<bool>,
    pub env_allow: Option<Vec<String>>,
}

/// `expect`: exactly one of its fields (checked by `validate`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectIn {
    pub within_seconds: Option<Number>,
    pub after_slot: Option<Number>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    /// Absent: the default; `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    pub timeout_seconds: Option<Option<Number>>,
    pub cpu_seconds: Option<Number>,
    pub memory_mb: Option<Number>,
    pub max_processes: Option<Number>,
    pub max_output_kb: Option<Number>,
    pub filesystem: Option<Filesystem>,
    pub max_runs_per_hour: Option<Number>,
    pub max_runs_per_day: Option<Number>,
}

/// A trigger without its `type`, which names the variant (see [`tagged`]).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerIn {
    Cron {
        cron: Option<String>,
        timezone: Option<String>,
        dialect: Option<crate::schedule::Dialect>,
    },
    Interval {
        seconds: Option<Number>,
    },
    FileChange {
        patterns: Option<Vec<String>>,
        root: Option<String>,
        debounce_seconds: Option<Number>,
        node: Option<String>,
    },
    Webhook {
        path: Option<String>,
        secret_env: Option<String>,
        max_age_seconds: Option<Number>,
        scheme: Option<crate::triggers::scheme::Scheme>,
        /// Webhook filters: checked by `triggers::filter`.
        events: Option<Vec<String>>,
        #[serde(rename = "match")]
        rule: Option<Value>,
    },
    GitPush {
        repo: Option<String>,
        branch: Option<String>,
        checkout: Option<bool>,
        keep_checkout_on_failure: Option<bool>,
    },
}

/// An output without its `type` (the variant) and `on` (common to all).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetIn {
    Log {},
    Stdout {},
    File {
        path: Option<String>,
        append: Option<bool>,
    },
    Slack {
        channel: Option<String>,
        token_env: Option<String>,
        webhook_url_env: Option<String>,
        api_url: Option<String>,
    },
    Webhook {
        url: Option<String>,
        hmac_secret_env: Option<String>,
        headers: Option<BTreeMap<String, String>>,
    },
    Email {
        /// One address or a list of them.
        to: Option<Value>,
        from: Option<String>,
        smtp_env_prefix: Option<String>,
    },
    GithubComment {
        repo: Option<String>,
        /// A positive number, or a string holding one or a template.
        issue: Option<Value>,
        token_env: Option<String>,
        api_url: Option<String>,
    },
}

/// A struct that must be written as a JSON object: derived structs would also take an array
/// of their fields in order.
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(m))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Obj)
    }
}

/// For `Option<Option<T>>` fields: absent → `None`, `null` → `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

// ---- reading with paths ----

/// Deserializes `v` as `T`; an error names its path below `p` and says what is wrong in
/// [`reword`]'s words (`known`: field names to list first for an unknown field).
pub fn from_value<T: DeserializeOwned>(v: &Value, p: &str, known: &[&str]) -> R<T> {
    serde_path_to_error::deserialize(v).map_err(|e| FieldError {
        field: join(p, &render(e.path())),
        error: reword(&e.inner().to_string(), known),
    })
}

/// Reads one `triggers` or `outputs` element, `m` (common fields already taken out): its
/// `type` names the variant of `T`, an externally tagged enum whose struct variants hold
/// the other fields. `what` is "trigger" or "output"; `known` lists the fields every
/// variant takes.
pub fn tagged<T: DeserializeOwned>(
    mut m: Map<String, Value>,
    p: &str,
    what: &str,
    known: &[&str],
) -> R<T> {
    let kind = match m.remove("type") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return err(&format!("{p}.type"), "is required"),
        Some(other) => return err(&format!("{p}.type"), expected("a string", &other)),
    };
    let as_enum = Value::Object(Map::from_iter([(kind.clone(), Value::Object(m))]));
    match serde_path_to_error::deserialize(&as_enum) {
        Ok(t) => Ok(t),
        Err(e) => {
            let msg = e.inner().to_string();
            let rel = render(e.path());
            if rel.is_empty() && msg.starts_with("unknown variant") {
                return err(
                    &format!("{p}.type"),
                    format!(
                        "unknown {what} type {kind:?}: expected {}",
                        or_list(&expected_names(&msg))
                    ),
                );
            }
            err(&join(p, &rel), reword(&msg, known))
        }
    }
}

/// `triggers[0].cron` from the segments of a path (enum variants are not fields).
fn render(path: &serde_path_to_error::Path) -> String {
    let mut s = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    s
}

fn join(p: &str, rel: &str) -> String {
    if p.is_empty() || rel.is_empty() || rel.starts_with('[') {
        format!("{p}{rel}")
    } else {
        format!("{p}.{rel}")
    }
}

/// Serde's message for a failed field in this module's words: "unknown field; expected one
/// of: …", "unknown value \"x\": expected a or b", "expected a string, got a number". The
/// path names the field, so the message does not repeat it.
fn reword(msg: &str, known: &[&str]) -> String {
    if msg.starts_with("unknown field `") {
        let mut names = known.to_vec();
        if !msg.ends_with("there are no fields") {
            names.extend(
                expected_names(msg)
                    .into_iter()
                    .filter(|n| !READ_ONLY.contains(n)),
            );
        }
        return format!("unknown field; expected one of: {}", names.join(", "));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let value = rest.rsplit_once("`, expected ").map_or(rest, |(v, _)| v);
        return format!(
            "unknown value {value:?}: expected {}",
            or_list(&expected_names(msg))
        );
    }
    if let Some((got, want)) = msg
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        let want = match want {
            "a boolean" => "true or false",
            "a sequence" => "an array",
            "a map" => "an object",
            "a JSON number" => "a number",
            "string or map" => "a string",
            w => w,
        };
        let got = match got.split(' ').next().unwrap_or_default() {
            "string" => "a string",
            "integer" | "floating" => "a number",
            "boolean" => "a boolean",
            "null" | "unit" => "null",
            "sequence" => "an array",
            "map" => "an object",
            g => g,
        };
        return format!("expected {want}, got {got}");
    }
    msg.to_string()
}

/// The names serde lists after ", expected" (`a`, `b`, …).
fn expected_names(msg: &str) -> Vec<&str> {
    msg.rsplit_once(", expected ")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default()
}

/// "a, b or c".
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

// ---- wording ----

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {}", type_name(got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serde_messages_are_reworded() {
        let cases = [
            (
                "unknown field `x`, expected one of `a`, `id`, `b`",
                "unknown field; expected one of: type, a, b",
            ),
            (
                "unknown field `x`, there are no fields",
                "unknown field; expected one of: type",
            ),
            (
                "unknown variant `x`, expected `a` or `b`",
                "unknown value \"x\": expected a or b",
            ),
            (
                "invalid type: string \"a, expected b\", expected a JSON number",
                "expected a number, got a string",
            ),
            (
                "invalid type: floating point `1.5`, expected a boolean",
                "expected true or false, got a number",
            ),
            ("something else", "something else"),
        ];
        for (serde, ours) in cases {
            assert_eq!(reword(serde, &["type"]), ours);
        }
        assert_eq!(or_list(&[]), "");
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }

    #[test]
    fn paths_skip_enum_variants_and_join_below_a_prefix() {
        let e = from_value::<Obj<JobIn>>(&json!({"limits": {"cpu_seconds": "1"}}), "", &[])
            .err()
            .expect("a string is no number");
        assert_eq!(e.field, "limits.cpu_seconds");
        let e = tagged::<TriggerIn>(
            Map::from_iter([
                ("type".into(), json!("file_change")),
                ("patterns".into(), json!(["a", 1])),
            ]),
            "triggers[3]",
            "trigger",
            &["type"],
        )
        .err()
        .expect("1 is no pattern");
        assert_eq!(e.field, "triggers[3].patterns[1]");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("p", ""), "p");
        assert_eq!(join("p", "[0]"), "p[0]");
        assert_eq!(join("p", "a"), "p.a");
    }
}
