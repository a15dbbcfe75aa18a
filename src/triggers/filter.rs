//! Webhook filters: which signed deliveries a webhook trigger runs its job for.
//!
//! A sender such as GitHub posts dozens of event kinds to one URL; a job meant for "a pull
//! request was opened against main" must not run (and spend money) on every push, star and
//! comment. A webhook trigger may therefore carry
//!
//! - `events`: `EVENT` or `EVENT.ACTION` strings matched against the sender's event name (the
//!   `X-GitHub-Event` header; `X-Gitlab-Event` normalised the way GitLab names its events in
//!   payloads, `Merge Request Hook` → `merge_request`) and the payload's action (`action`;
//!   GitLab: `object_attributes.action`);
//! - `match`: a rule tree (`all`, `any`, `not`; leaves `equals`, `in`, `regex`, `exists`)
//!   over payload paths written as in prompt templates ([`crate::template::lookup`]) and
//!   `header.X-Name` for request headers (case-insensitive).
//!
//! Rules are parsed, bounded ([`MAX_DEPTH`], [`MAX_RULES`], [`MAX_REGEX_LEN`],
//! [`REGEX_SIZE_LIMIT`]) and their regexes compiled once, when the job is validated; [`check`]
//! only evaluates. It runs on an authenticated body only (intake verifies the signature
//! first) and says which rule did not match. This module knows nothing of jobs or HTTP, so
//! the webhook intake and `job test` share it.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::scheme::Scheme;

/// Deepest nesting of `all`/`any`/`not` (a leaf at depth 8 is fine, at 9 refused).
pub const MAX_DEPTH: usize = 8;
/// Most rules (nodes) in one `match` tree.
pub const MAX_RULES: usize = 128;
/// Longest regex source, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Largest compiled regex program, in bytes (`RegexBuilder::size_limit`); a pattern that
/// expands past it (`a{1000}{1000}`) is refused at job creation. Kept small: the time a
/// pattern takes per input byte grows with its program.
pub const REGEX_SIZE_LIMIT: usize = 32 * 1024;
/// Most entries in `events`, and in one `in` list.
pub const MAX_EVENTS: usize = 64;
pub const MAX_IN: usize = 256;
/// Longest value a `regex` leaf reads (bytes); a longer one fails the leaf, so one
/// delivery's matching stays bounded.
pub const MAX_REGEX_INPUT: usize = 64 * 1024;
/// Most bytes the `regex` leaves of one filter read for one delivery, all leaves together
/// (up to [`MAX_RULES`] leaves could otherwise each read [`MAX_REGEX_INPUT`]). A delivery
/// that would need more is filtered out (never let through: a `not` does not invert it).
pub const MAX_REGEX_TOTAL: usize = 256 * 1024;
/// Longest path or event name.
pub const MAX_NAME: usize = 256;
/// Payload values quoted in a reason are cut to this many characters.
const QUOTE_MAX: usize = 80;

/// The filter of one webhook trigger; empty when the trigger has none (every delivery runs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Filter {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
}

/// A node of a `match` tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Leaf { path: String, test: Test },
}

/// What a leaf checks at its path.
#[derive(Clone, Debug)]
pub enum Test {
    /// Equal JSON values; a string also equals a number or boolean written the same way.
    Equals(Value),
    /// Equal to one of these.
    In(Vec<Value>),
    /// A string (or number, boolean) the regex finds a match in (unanchored).
    Regex(Regex),
    /// The path is present (`true`) or absent (`false`).
    Exists(bool),
}

impl PartialEq for Test {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Test::Equals(a), Test::Equals(b)) => a == b,
            (Test::In(a), Test::In(b)) => a == b,
            (Test::Regex(a), Test::Regex(b)) => a.as_str() == b.as_str(),
            (Test::Exists(a), Test::Exists(b)) => a == b,
            _ => false,
        }
    }
}

/// A filter that cannot be used. `field` is relative to the trigger (`match.all[1].regex`,
/// `events[2]`); job validation puts the trigger's path in front.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleError {
    pub field: String,
    pub error: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for RuleError {}

fn rule_err<T>(field: &str, error: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError {
        field: field.to_string(),
        error: error.into(),
    })
}

/// Why a delivery was filtered out: the rule that did not match, in words
/// (`match.all[1]: pull_request.base.ref is "dev", not "main"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filtered(pub String);

impl fmt::Display for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Filtered {}

impl Filter {
    /// Parses a trigger's `events` and `match` as given in the job JSON.
    pub fn parse(events: Option<Vec<String>>, rule: Option<&Value>) -> Result<Filter, RuleError> {
        let events = events.unwrap_or_default();
        if events.len() > MAX_EVENTS {
            return rule_err(
                "events",
                format!("at most {MAX_EVENTS} entries (got {})", events.len()),
            );
        }
        for (i, e) in events.iter().enumerate() {
            let ok = !e.is_empty()
                && e.len() <= MAX_NAME
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
            if !ok {
                return rule_err(
                    &format!("events[{i}]"),
                    format!("{e:?} is not an event name: give EVENT or EVENT.ACTION (letters, digits, '_', '-', '.', ':'), e.g. pull_request.opened"),
                );
            }
        }
        let rule = match rule {
            None | Some(Value::Null) => None,
            Some(v) => {
                let mut count = 0;
                Some(parse_rule(v, "match", 1, &mut count)?)
            }
        };
        Ok(Filter { events, rule })
    }

    /// Whether the trigger has no filter at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rule.is_none()
    }
}

fn parse_rule(v: &Value, field: &str, depth: usize, count: &mut usize) -> Result<Rule, RuleError> {
    *count += 1;
    if *count > MAX_RULES {
        return rule_err(field, format!("a match tree has at most {MAX_RULES} rules"));
    }
    if depth > MAX_DEPTH {
        return rule_err(field, format!("rules nest at most {MAX_DEPTH} levels deep"));
    }
    let Value::Object(m) = v else {
        return rule_err(
            field,
            "expected a rule object: {\"all\": [...]}, {\"any\": [...]}, {\"not\": rule} or {\"path\": P, \"equals\"|\"in\"|\"regex\"|\"exists\": ...}",
        );
    };
    if let Some(p) = m.get("path") {
        return parse_leaf(m, p, field);
    }
    let [(key, inner)] = m.iter().collect::<Vec<_>>()[..] else {
        return rule_err(field, "a rule has exactly one of all, any, not or path");
    };
    let f = format!("{field}.{key}");
    match key.as_str() {
        "all" | "any" => {
            let Value::Array(list) = inner else {
                return rule_err(&f, "expected an array of rules");
            };
            if list.is_empty() {
                return rule_err(&f, "must hold at least one rule");
            }
            let rules = list
                .iter()
                .enumerate()
                .map(|(i, r)| parse_rule(r, &format!("{f}[{i}]"), depth + 1, count))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "all" {
                Rule::All(rules)
            } else {
                Rule::Any(rules)
            })
        }
        "not" => Ok(Rule::Not(Box::new(parse_rule(
            inner,
            &f,
            depth + 1,
            count,
        )?))),
        _ => rule_err(&f, "unknown rule; expected all, any, not or path"),
    }
}

fn parse_leaf(m: &Map<String, Value>, path: &Value, field: &str) -> Result<Rule, RuleError> {
    let pf = format!("{field}.path");
    let Value::String(path) = path else {
        return rule_err(
            &pf,
            "expected a string: a dot path such as pull_request.base.ref, or header.X-Name",
        );
    };
    check_path(path).or_else(|e| rule_err(&pf, e))?;
    let tests: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != "path").collect();
    let [(key, val)] = tests[..] else {
        return rule_err(
            field,
            "a path rule has exactly one of equals, in, regex or exists",
        );
    };
    let f = format!("{field}.{key}");
    let test = match key.as_str() {
        "equals" => Test::Equals(val.clone()),
        "in" => match val {
            Value::Array(a) if a.is_empty() => return rule_err(&f, "must not be empty"),
            Value::Array(a) if a.len() > MAX_IN => {
                return rule_err(&f, format!("at most {MAX_IN} values (got {})", a.len()))
            }
            Value::Array(a) => Test::In(a.clone()),
            _ => return rule_err(&f, "expected an array of values"),
        },
        "regex" => {
            let Value::String(src) = val else {
                return rule_err(&f, "expected a string holding a regular expression");
            };
            Test::Regex(compile(src).or_else(|e| rule_err(&f, e))?)
        }
        "exists" => match val {
            Value::Bool(b) => Test::Exists(*b),
            _ => return rule_err(&f, "expected true or false"),
        },
        _ => return rule_err(&f, "unknown test; expected equals, in, regex or exists"),
    };
    Ok(Rule::Leaf {
        path: path.clone(),
        test,
    })
}

/// A path: dot-separated, no empty segment; `header.NAME` needs an HTTP header name.
fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters long"));
    }
    if let Some(name) = p.strip_prefix("header.") {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        return if ok {
            Ok(())
        } else {
            Err(format!("{name:?} is not an HTTP header name"))
        };
    }
    if p.split('.').any(str::is_empty) {
        return Err(format!(
            "{p:?} has an empty segment: write a dot path such as pull_request.base.ref"
        ));
    }
    Ok(())
}

/// Compiles a regex under the size bounds; the error is one line.
fn compile(src: &str) -> Result<Regex, String> {
    if src.len() > MAX_REGEX_LEN {
        return Err(format!("at most {MAX_REGEX_LEN} bytes (got {})", src.len()));
    }
    RegexBuilder::new(src)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(n) => format!(
                "the regular expression is too large once compiled (limit {n} bytes): simplify it"
            ),
            other => {
                let text = other.to_string();
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == '~'))
                    .collect();
                format!("invalid regular expression: {}", lines.join("; "))
            }
        })
}

impl Rule {
    /// The rule as written in job JSON.
    pub fn to_json(&self) -> Value {
        let one = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_string(), v)]));
        match self {
            Rule::All(r) => one("all", Value::Array(r.iter().map(Rule::to_json).collect())),
            Rule::Any(r) => one("any", Value::Array(r.iter().map(Rule::to_json).collect())),
            Rule::Not(r) => one("not", r.to_json()),
            Rule::Leaf { path, test } => {
                let (k, v) = match test {
                    Test::Equals(v) => ("equals", v.clone()),
                    Test::In(v) => ("in", Value::Array(v.clone())),
                    Test::Regex(r) => ("regex", Value::String(r.as_str().to_string())),
                    Test::Exists(b) => ("exists", Value::Bool(*b)),
                };
                Value::Object(Map::from_iter([
                    ("path".to_string(), Value::String(path.clone())),
                    (k.to_string(), v),
                ]))
            }
        }
    }

    /// Whether any leaf reads the payload (not a header).
    fn reads_payload(&self) -> bool {
        match self {
            Rule::All(r) | Rule::Any(r) => r.iter().any(Rule::reads_payload),
            Rule::Not(r) => r.reads_payload(),
            Rule::Leaf { path, .. } => !path.starts_with("header."),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

// ---- evaluation ----

/// The event a delivery names and its action, as [`check`] matches `events` against them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub action: Option<String>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// GitLab's `X-Gitlab-Event` header as GitLab names the event in payloads (`object_kind`):
/// `Merge Request Hook` → `merge_request`, `Job Hook` → `build`, `Confidential Issue Hook`
/// → `issue`.
pub fn gitlab_event(header: &str) -> String {
    let base = header.trim();
    let base = base.strip_suffix(" Hook").unwrap_or(base);
    let name = base.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    match name.as_str() {
        "job" => "build".into(),
        "confidential_issue" => "issue".into(),
        "confidential_note" => "note".into(),
        "resource_access_token" => "access_token".into(),
        _ => name,
    }
}

/// The event and action of a delivery, as its sender names them: GitHub's `X-GitHub-Event`
/// with the payload's `action`; GitLab's `X-Gitlab-Event` (normalised, [`gitlab_event`]) with
/// `object_attributes.action` (or a top-level `action`); the payload's `type` for Standard
/// Webhooks and Stripe; Slack's `event.type` (Events API), else its `type`. Without a
/// scheme, GitHub's header, else GitLab's.
pub fn event_of(
    scheme: Option<Scheme>,
    headers: &[(String, String)],
    payload: Option<&Value>,
) -> Event {
    let str_at = |p: &str| {
        payload
            .and_then(|v| crate::template::lookup(v, p))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let github = || {
        header(headers, "x-github-event").map(|e| Event {
            name: Some(e.trim().to_string()),
            action: str_at("action"),
        })
    };
    let gitlab = || {
        header(headers, "x-gitlab-event").map(|e| Event {
            name: Some(gitlab_event(e)),
            action: str_at("object_attributes.action").or_else(|| str_at("action")),
        })
    };
    let typed = |path: &str| Event {
        name: str_at(path),
        action: None,
    };
    match scheme {
        None => github().or_else(gitlab).unwrap_or_default(),
        Some(Scheme::Github) => github().unwrap_or_default(),
        Some(Scheme::Gitlab) => gitlab().unwrap_or_default(),
        Some(Scheme::Standard | Scheme::Stripe) => typed("type"),
        Some(Scheme::Slack) => match str_at("event.type") {
            Some(name) => Event {
                name: Some(name),
                action: None,
            },
            None => typed("type"),
        },
    }
}

/// The headers a sender of `scheme` sends to name `event` (for checking a filter against a
/// payload from a file, `job test --event NAME`): `X-GitHub-Event`, or `X-Gitlab-Event` for
/// `gitlab`. Standard Webhooks, Slack and Stripe name the event in the payload: none.
pub fn event_headers(scheme: Option<Scheme>, event: &str) -> Vec<(String, String)> {
    let name = match scheme {
        None | Some(Scheme::Github) => "x-github-event",
        Some(Scheme::Gitlab) => "x-gitlab-event",
        Some(Scheme::Standard | Scheme::Slack | Scheme::Stripe) => return Vec::new(),
    };
    vec![(name.to_string(), event.to_string())]
}

/// Decides whether a delivery passes `filter`: its `events` first, then its `match` tree.
/// `scheme` is the trigger's: it says where the event's name is ([`event_of`]).
/// `headers` are the request's (any case); `payload` the parsed body, `None` when it is not
/// JSON (then every payload rule fails, and so does an `EVENT.ACTION` entry). Returns which
/// rule did not match.
pub fn check(
    filter: &Filter,
    scheme: Option<Scheme>,
    headers: &[(String, String)],
    payload: Option<&Value>,
) -> Result<(), Filtered> {
    if !filter.events.is_empty() {
        let ev = event_of(scheme, headers, payload);
        check_events(&filter.events, &ev)?;
    }
    if let Some(rule) = &filter.rule {
        if payload.is_none() && rule.reads_payload() {
            return Err(Filtered(
                "match: the body is not JSON, so its payload rules cannot match".into(),
            ));
        }
        let mut scan = Scan {
            headers,
            payload: payload.unwrap_or(&Value::Null),
            regex_bytes: 0,
        };
        eval(rule, "match", &mut scan).map_err(|stop| match stop {
            Stop::NoMatch(f) | Stop::Exhausted(f) => f,
        })?;
    }
    Ok(())
}

/// What one delivery's `match` tree is evaluated against, and the regex input it has read.
struct Scan<'a> {
    headers: &'a [(String, String)],
    payload: &'a Value,
    /// Bytes the `regex` leaves have read so far (at most [`MAX_REGEX_TOTAL`]).
    regex_bytes: usize,
}

/// Why evaluation of a rule stopped short of a match.
enum Stop {
    /// The rule did not match (a `not` turns this into a match).
    NoMatch(Filtered),
    /// The delivery's regex input budget is spent: the whole delivery is filtered out.
    Exhausted(Filtered),
}

fn check_events(events: &[String], ev: &Event) -> Result<(), Filtered> {
    let Some(name) = &ev.name else {
        return Err(Filtered(
            "events: the delivery names no event (no event header, or no event type in the payload)"
                .into(),
        ));
    };
    let full = ev.action.as_ref().map(|a| format!("{name}.{a}"));
    let hit = events.iter().any(|e| {
        e.eq_ignore_ascii_case(name) || full.as_ref().is_some_and(|f| e.eq_ignore_ascii_case(f))
    });
    if hit {
        return Ok(());
    }
    Err(Filtered(format!(
        "events: {} is not one of {}",
        quote(&Value::String(full.unwrap_or_else(|| name.clone()))),
        events.join(", ")
    )))
}

fn eval(rule: &Rule, field: &str, scan: &mut Scan) -> Result<(), Stop> {
    match rule {
        Rule::All(rules) => {
            for (i, r) in rules.iter().enumerate() {
                eval(r, &format!("{field}.all[{i}]"), scan)?;
            }
            Ok(())
        }
        Rule::Any(rules) => {
            for (i, r) in rules.iter().enumerate() {
                match eval(r, &format!("{field}.any[{i}]"), scan) {
                    Ok(()) => return Ok(()),
                    Err(Stop::NoMatch(_)) => {}
                    Err(e @ Stop::Exhausted(_)) => return Err(e),
                }
            }
            Err(Stop::NoMatch(Filtered(format!(
                "{field}.any: none of its {} rules matched",
                rules.len()
            ))))
        }
        Rule::Not(r) => match eval(r, &format!("{field}.not"), scan) {
            Ok(()) => Err(Stop::NoMatch(Filtered(format!(
                "{field}.not: its rule matched"
            )))),
            Err(Stop::NoMatch(_)) => Ok(()),
            Err(e @ Stop::Exhausted(_)) => Err(e),
        },
        Rule::Leaf { path, test } => leaf(path, test, field, scan),
    }
}

fn leaf(path: &str, test: &Test, field: &str, scan: &mut Scan) -> Result<(), Stop> {
    // Header values are never quoted back (one may be a token); payload values are.
    // Borrowed: a leaf compares in place, it never copies a subtree of the payload.
    let header_value;
    let (found, what): (Option<&Value>, String) = match path.strip_prefix("header.") {
        Some(name) => {
            header_value = header(scan.headers, name).map(|v| Value::String(v.to_string()));
            (header_value.as_ref(), format!("header {name}"))
        }
        None => (
            crate::template::lookup(scan.payload, path),
            path.to_string(),
        ),
    };
    let is_header = path.starts_with("header.");
    let shown = |v: &Value| {
        if is_header {
            String::new()
        } else {
            format!(" {}", quote(v))
        }
    };
    let fail = |why: String| Err(Stop::NoMatch(Filtered(format!("{field}: {what}{why}"))));
    match (test, found) {
        (Test::Exists(true), Some(_)) | (Test::Exists(false), None) => Ok(()),
        (Test::Exists(true), None) => fail(" is missing".into()),
        (Test::Exists(false), Some(_)) => fail(" is present".into()),
        (_, None) => fail(" is missing".into()),
        (Test::Equals(want), Some(v)) => {
            if same(want, v) {
                Ok(())
            } else if is_header {
                fail(format!(" is not {}", quote(want)))
            } else {
                fail(format!(" is{}, not {}", shown(v), quote(want)))
            }
        }
        (Test::In(list), Some(v)) => {
            if list.iter().any(|w| same(w, v)) {
                Ok(())
            } else {
                let n = list.len();
                if is_header {
                    fail(format!(" is not one of the {n} values listed"))
                } else {
                    fail(format!(
                        " is {}, not one of the {n} values listed",
                        quote(v)
                    ))
                }
            }
        }
        (Test::Regex(re), Some(v)) => {
            let text: Option<std::borrow::Cow<str>> = match v {
                Value::String(s) => Some(s.as_str().into()),
                Value::Number(n) => Some(n.to_string().into()),
                Value::Bool(b) => Some(b.to_string().into()),
                _ => None,
            };
            if let Some(t) = &text {
                if t.len() <= MAX_REGEX_INPUT {
                    if scan.regex_bytes + t.len() > MAX_REGEX_TOTAL {
                        return Err(Stop::Exhausted(Filtered(format!(
                            "{field}: the regex rules would read more than {MAX_REGEX_TOTAL} bytes of this delivery in all; it is filtered out"
                        ))));
                    }
                    scan.regex_bytes += t.len();
                }
            }
            match text {
                Some(t) if t.len() > MAX_REGEX_INPUT => fail(format!(
                    " is {} bytes long; regex rules read at most {MAX_REGEX_INPUT}",
                    t.len()
                )),
                Some(t) if re.is_match(&t) => Ok(()),
                Some(_) => fail(format!("{} does not match /{}/", shown(v), re.as_str())),
                None => fail(format!(" is {}, not a string a regex can match", quote(v))),
            }
        }
    }
}

/// JSON equality, numbers by value, and a string equal to a number or boolean with that text.
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => {
            a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s == &n.to_string()
        }
        (Value::String(s), Value::Bool(b)) | (Value::Bool(b), Value::String(s)) => {
            s == if *b { "true" } else { "false" }
        }
        _ => want == got,
    }
}

/// A value as it is quoted in a reason: compact JSON, cut to [`QUOTE_MAX`] characters.
fn quote(v: &Value) -> String {
    let s = match v {
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    };
    if s.chars().count() <= QUOTE_MAX {
        return s;
    }
    let cut: String = s.chars().take(QUOTE_MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(events: &[&str], rule: Value) -> Filter {
        let events = (!events.is_empty()).then(|| events.iter().map(|e| e.to_string()).collect());
        Filter::parse(events, Some(&rule)).expect("a valid filter")
    }

    fn gh(event: &str) -> Vec<(String, String)> {
        vec![("x-github-event".into(), event.into())]
    }

    fn err_of(events: Option<Vec<String>>, rule: Value) -> RuleError {
        Filter::parse(events, Some(&rule)).expect_err("refused")
    }

    #[test]
    fn events_match_the_event_or_event_dot_action() {
        let f = filter(&["pull_request.opened", "push"], Value::Null);
        let pr = json!({"action": "opened"});
        assert_eq!(check(&f, None, &gh("pull_request"), Some(&pr)), Ok(()));
        assert_eq!(check(&f, None, &gh("push"), Some(&json!({}))), Ok(()));
        let closed = json!({"action": "closed"});
        assert_eq!(
            check(&f, None, &gh("pull_request"), Some(&closed)),
            Err(Filtered(
                "events: \"pull_request.closed\" is not one of pull_request.opened, push".into()
            ))
        );
        assert!(check(&f, None, &[], Some(&pr))
            .unwrap_err()
            .0
            .contains("names no event"));
        // A body that is not JSON has no action.
        assert!(check(&f, None, &gh("pull_request"), None).is_err());
        assert_eq!(check(&f, None, &gh("push"), None), Ok(()));
    }

    #[test]
    fn gitlab_events_are_named_as_in_payloads() {
        for (h, want) in [
            ("Merge Request Hook", "merge_request"),
            ("Push Hook", "push"),
            ("Tag Push Hook", "tag_push"),
            ("Note Hook", "note"),
            ("Confidential Note Hook", "note"),
            ("Issue Hook", "issue"),
            ("Confidential Issue Hook", "issue"),
            ("Pipeline Hook", "pipeline"),
            ("Job Hook", "build"),
            ("Wiki Page Hook", "wiki_page"),
            ("Feature Flag Hook", "feature_flag"),
            ("Resource Access Token Hook", "access_token"),
        ] {
            assert_eq!(gitlab_event(h), want, "{h}");
        }
        let f = filter(&["merge_request.open", "release.create"], Value::Null);
        let h = vec![(
            "X-Gitlab-Event".to_string(),
            "Merge Request Hook".to_string(),
        )];
        let mr = json!({"object_kind": "merge_request", "object_attributes": {"action": "open"}});
        assert_eq!(check(&f, None, &h, Some(&mr)), Ok(()));
        let rel = vec![("x-gitlab-event".to_string(), "Release Hook".to_string())];
        assert_eq!(
            check(&f, None, &rel, Some(&json!({"action": "create"}))),
            Ok(())
        );
        assert!(check(&f, None, &rel, Some(&json!({"action": "delete"}))).is_err());
        // `job test --event NAME` builds the header from a name, in either spelling.
        for name in ["merge_request", "Merge Request Hook"] {
            let h = event_headers(Some(Scheme::Gitlab), name);
            assert_eq!(
                check(&f, Some(Scheme::Gitlab), &h, Some(&mr)),
                Ok(()),
                "{name}"
            );
        }
        let gh = event_headers(None, "push");
        assert_eq!(event_of(None, &gh, None).name.as_deref(), Some("push"));
        assert!(event_headers(Some(Scheme::Stripe), "x").is_empty());
    }

    #[test]
    fn rules_all_any_not_and_leaves() {
        let f = filter(
            &[],
            json!({"all": [
                {"path": "pull_request.base.ref", "equals": "main"},
                {"any": [
                    {"path": "label.name", "in": ["agent", "bot"]},
                    {"path": "pull_request.head.ref", "regex": "^release/"}
                ]},
                {"not": {"path": "pull_request.draft", "equals": true}},
                {"path": "header.X-GitHub-Event", "equals": "pull_request"},
                {"path": "number", "equals": "42"}
            ]}),
        );
        let mut h = gh("pull_request");
        let p = json!({"number": 42, "label": {"name": "bot"},
            "pull_request": {"base": {"ref": "main"}, "head": {"ref": "x"}, "draft": false}});
        assert_eq!(check(&f, None, &h, Some(&p)), Ok(()));
        let mut q = p.clone();
        q["pull_request"]["base"]["ref"] = json!("dev");
        assert_eq!(
            check(&f, None, &h, Some(&q)).unwrap_err().0,
            "match.all[0]: pull_request.base.ref is \"dev\", not \"main\""
        );
        let mut q = p.clone();
        q["label"]["name"] = json!("docs");
        assert_eq!(
            check(&f, None, &h, Some(&q)).unwrap_err().0,
            "match.all[1].any: none of its 2 rules matched"
        );
        q["pull_request"]["head"]["ref"] = json!("release/1.2");
        assert_eq!(check(&f, None, &h, Some(&q)), Ok(()));
        let mut q = p.clone();
        q["pull_request"]["draft"] = json!(true);
        assert_eq!(
            check(&f, None, &h, Some(&q)).unwrap_err().0,
            "match.all[2].not: its rule matched"
        );
        h[0].1 = "push".into();
        assert_eq!(
            check(&f, None, &h, Some(&p)).unwrap_err().0,
            "match.all[3]: header X-GitHub-Event is not \"pull_request\""
        );
        let f = filter(&[], json!({"path": "x", "exists": true}));
        assert_eq!(
            check(&f, None, &[], Some(&json!({}))).unwrap_err().0,
            "match: x is missing"
        );
        assert_eq!(
            check(&f, None, &[], None).unwrap_err().0,
            "match: the body is not JSON, so its payload rules cannot match"
        );
        let f = filter(&[], json!({"path": "header.X-Token", "exists": false}));
        assert_eq!(
            check(&f, None, &[], None),
            Ok(()),
            "header rules need no JSON"
        );
    }

    #[test]
    fn reasons_never_quote_header_values_and_cut_long_values() {
        let f = filter(
            &[],
            json!({"path": "header.X-Gitlab-Token", "regex": "^abc$"}),
        );
        let h = vec![("x-gitlab-token".to_string(), "s3cret".to_string())];
        let why = check(&f, None, &h, None).unwrap_err().0;
        assert!(!why.contains("s3cret"), "{why}");
        let f = filter(&[], json!({"path": "t", "equals": "x"}));
        let long = "y".repeat(500);
        let why = check(&f, None, &[], Some(&json!({ "t": long })))
            .unwrap_err()
            .0;
        assert!(why.len() < 200, "{why}");
        let f = filter(&[], json!({"path": "t", "regex": "y"}));
        let huge = "y".repeat(MAX_REGEX_INPUT + 1);
        let why = check(&f, None, &[], Some(&json!({ "t": huge })))
            .unwrap_err()
            .0;
        assert!(why.contains("regex rules read at most"), "{why}");
    }

    #[test]
    fn regex_leaves_read_a_bounded_total_per_delivery() {
        // A slow pattern on 126 leaves, each within the per-value limit: without the
        // per-delivery cap one delivery would scan 126 x 64 KiB.
        let leaves: Vec<Value> = (0..126)
            .map(|_| json!({"path": "t", "regex": "(a|aa|aaa)*b$"}))
            .collect();
        let payload = json!({ "t": "a".repeat(MAX_REGEX_INPUT) });
        for rule in [json!({ "any": leaves }), json!({"not": { "any": leaves }})] {
            let f = filter(&[], rule);
            let mut scan = Scan {
                headers: &[],
                payload: &payload,
                regex_bytes: 0,
            };
            let stop = eval(f.rule.as_ref().unwrap(), "match", &mut scan);
            assert!(scan.regex_bytes <= MAX_REGEX_TOTAL, "{}", scan.regex_bytes);
            assert!(scan.regex_bytes >= MAX_REGEX_TOTAL - MAX_REGEX_INPUT);
            // Filtered out, also under a `not`: running out never lets a delivery through.
            assert!(matches!(stop, Err(Stop::Exhausted(_))));
            let why = check(&f, None, &[], Some(&payload)).unwrap_err().0;
            assert!(why.contains("would read more than"), "{why}");
        }
        // A pattern that expands past the (small) compiled size limit is refused.
        assert!(compile("[a-z]{500}").is_err() || compile("\\w{200}").is_err());
    }

    #[test]
    fn bad_rules_are_refused_with_their_field() {
        let cases = [
            (
                json!({"all": [{"path": "a", "equals": 1}, {"path": "b", "regex": "("}]}),
                "match.all[1].regex",
            ),
            (json!({"all": []}), "match.all"),
            (json!({"any": {"path": "a"}}), "match.any"),
            (json!({"path": "a"}), "match"),
            (json!({"path": "a", "equals": 1, "in": [1]}), "match"),
            (json!({"path": "a..b", "exists": true}), "match.path"),
            (json!({"path": "header.", "exists": true}), "match.path"),
            (json!({"path": 3, "exists": true}), "match.path"),
            (json!({"path": "a", "exists": "yes"}), "match.exists"),
            (json!({"path": "a", "in": []}), "match.in"),
            (json!({"path": "a", "like": "x"}), "match.like"),
            (json!({"some": []}), "match.some"),
            (json!({"all": [], "any": []}), "match"),
            (json!([1]), "match"),
            (
                json!({"path": "a", "regex": "a{1000}{1000}"}),
                "match.regex",
            ),
            (
                json!({"path": "a", "regex": "x".repeat(MAX_REGEX_LEN + 1)}),
                "match.regex",
            ),
        ];
        for (rule, field) in cases {
            let e = err_of(None, rule.clone());
            assert_eq!(e.field, field, "{rule}: {e}");
        }
        let e = err_of(None, json!({"path": "a", "regex": "a{1000}{1000}"}));
        assert!(e.error.contains("too large"), "{e}");
        let e = err_of(None, json!({"path": "a", "regex": "(ab"}));
        assert!(
            e.error.starts_with("invalid regular expression") && !e.error.contains('\n'),
            "{e}"
        );
        let e = err_of(Some(vec!["push".into(), "".into()]), Value::Null);
        assert_eq!(e.field, "events[1]");
        let e = err_of(Some(vec!["a b".into()]), Value::Null);
        assert_eq!(e.field, "events[0]");
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!({"path": "a", "exists": true});
        for _ in 0..MAX_DEPTH - 1 {
            deep = json!({ "not": deep });
        }
        assert!(Filter::parse(None, Some(&deep)).is_ok());
        let deeper = json!({ "not": deep });
        let e = err_of(None, deeper);
        assert!(e.error.contains("levels deep"), "{e}");
        let wide: Vec<Value> = (0..MAX_RULES)
            .map(|_| json!({"path": "a", "exists": true}))
            .collect();
        let e = err_of(None, json!({ "any": wide }));
        assert!(e.error.contains("at most"), "{e}");
        let many: Vec<String> = (0..=MAX_EVENTS).map(|i| format!("e{i}")).collect();
        assert_eq!(err_of(Some(many), Value::Null).field, "events");
    }

    #[test]
    fn filters_round_trip_through_the_job_json() {
        let rule = json!({"all": [{"path": "a.b", "regex": "^x"}, {"not": {"path": "c", "in": [1, "2"]}},
            {"any": [{"path": "header.X-A", "exists": true}, {"path": "d", "equals": {"k": null}}]}]});
        let f = filter(&["push"], rule.clone());
        assert_eq!(f.rule.as_ref().unwrap().to_json(), rule);
        let job = crate::job::validate_job(
            &json!({"name": "j", "prompt": "p", "triggers": [
                {"type": "webhook", "path": "/hooks/a", "secret_env": "S", "events": ["push"], "match": rule},
                {"type": "webhook", "path": "/hooks/b", "secret_env": "S"}]}),
            "id",
            "now",
        )
        .unwrap();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["triggers"][0]["events"], json!(["push"]));
        assert_eq!(v["triggers"][0]["match"], rule);
        assert_eq!(v["triggers"][0]["type"], "webhook");
        assert!(
            v["triggers"][1].get("events").is_none() && v["triggers"][1].get("match").is_none()
        );
        let again = crate::job::validate_job(&v, "id", "now").unwrap();
        assert_eq!(again, job);
        let e = crate::job::validate_job(
            &json!({"name": "j", "prompt": "p", "triggers": [
                {"type": "webhook", "path": "/hooks/a", "secret_env": "S",
                 "match": {"all": [{"path": "a", "exists": true}, {"path": "b", "regex": "(["}]}}]}),
            "id",
            "now",
        )
        .unwrap_err();
        assert_eq!(e.field, "triggers[0].match.all[1].regex");
    }
}
