//! `job set` and `job edit`: change a job, through the API when a daemon runs (a JSON merge
//! patch of exactly what changed) and in its file when none does. Both print the changes
//! they applied, field by field.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::Client;
use super::job::{
    absolute, api_error, checkout_flags, client_if_running, e1, e2, enc, field_message,
    find_on_disk, offline_view, output_options_need_outputs, outputs_from_flags, record_output,
    record_trigger, report_saved, save_error, unique_name, webhook_filter_flags, AddArgs,
    CmdResult, Origins,
};
use crate::job::validate_job;
use crate::store::Store;

/// Flags of `job set`: the flags of `job add`, meaning "change this", plus the ones that
/// pick or remove list entries.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// Job id or name
    pub id: String,
    #[command(flatten)]
    pub flags: AddArgs,
    /// The trigger the trigger flags change, by index (0 is the first, as `job show` lists them)
    #[arg(long, value_name = "N", conflicts_with = "add_trigger")]
    pub trigger: Option<usize>,
    /// Trigger flags add a new trigger instead of changing the job's trigger of that type
    #[arg(long)]
    pub add_trigger: bool,
    /// Remove the trigger with this index (repeatable)
    #[arg(long, value_name = "N")]
    pub rm_trigger: Vec<usize>,
    /// Add an output (repeatable; same SPEC as --output, which replaces all outputs)
    #[arg(long, value_name = "SPEC")]
    pub add_output: Vec<String>,
    /// Remove outputs: the one with index N, or every output of a TYPE (repeatable)
    #[arg(long, value_name = "N|TYPE")]
    pub rm_output: Vec<String>,
    /// Remove an environment variable of the agent (repeatable)
    #[arg(long, value_name = "NAME")]
    pub rm_env: Vec<String>,
    /// Enable the job
    #[arg(long, conflicts_with = "disabled")]
    pub enabled: bool,
    /// Turn catch_up off
    #[arg(long, conflicts_with = "catch_up")]
    pub no_catch_up: bool,
    /// Run the git_push trigger's agent in the repository again, not in a fresh checkout
    #[arg(long, conflicts_with_all = ["checkout", "keep_checkout_on_failure"])]
    pub no_checkout: bool,
    /// Start the agent from the daemon's environment again (undoes --no-inherit-env)
    #[arg(long, conflicts_with = "no_inherit_env")]
    pub inherit_env: bool,
    /// Give the prompt in {prompt} again instead of on stdin
    #[arg(long, conflicts_with = "prompt_stdin")]
    pub prompt_arg: bool,
    /// Remove a field so its default applies (repeatable): model, agent, limits.memory_mb,
    /// limits.max_runs_per_day, expect, triggers[0].timezone ...
    #[arg(long, value_name = "FIELD")]
    pub unset: Vec<String>,
}

/// Where the job lives: the running daemon, or the files.
enum Backend {
    Api(Client),
    Files(Store),
}

/// Fields the daemon computes; never part of what a user changes.
const COMPUTED: &[&str] = &["id", "created_at", "next_fire_at", "warnings"];

fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for k in COMPUTED {
            m.remove(*k);
        }
    }
    v
}

/// The job `id` (id or name) as its full view, and where it lives.
fn load(dir: &Path, id: &str) -> Result<(Backend, Value), (i32, String)> {
    if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call("GET", &format!("/jobs/{}", enc(id)), None)
            .map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
        return Ok((Backend::Api(c), body));
    }
    let store = Store::at(dir);
    let job = find_on_disk(&store, id)?;
    Ok((Backend::Files(store), offline_view(&job)))
}

/// Saves `new` (a job without computed fields) over `current` (the full view); returns the
/// saved job's full view.
fn save(
    b: &Backend,
    current: &Value,
    new: &Value,
    origins: &Origins,
) -> Result<Value, (i32, String)> {
    let id = current["id"].as_str().unwrap_or("");
    match b {
        Backend::Api(c) => {
            let patch = merge_diff(&strip(current), new);
            if patch.as_object().is_some_and(Map::is_empty) {
                return Ok(current.clone());
            }
            let (st, body) = c
                .call("PATCH", &format!("/jobs/{}", enc(id)), Some(&patch))
                .map_err(e1)?;
            if st != 200 {
                return Err(save_error(st, &body, origins));
            }
            Ok(body)
        }
        Backend::Files(store) => {
            let created = current["created_at"].as_str().unwrap_or("");
            let job = validate_job(new, id, created)
                .map_err(|fe| e2(field_message(&fe.field, &fe.error, origins)))?;
            unique_name(store, &job.name, &job.id)?;
            store.save_job(&job).map_err(|e| e1(e.to_string()))?;
            Ok(offline_view(&job))
        }
    }
}

/// The RFC 7396 merge patch that turns `old` into `new`.
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut p = Map::new();
            for (k, ov) in o {
                match n.get(k) {
                    None => {
                        p.insert(k.clone(), Value::Null);
                    }
                    Some(nv) if nv != ov => {
                        let d = if nv.is_object() && ov.is_object() {
                            merge_diff(ov, nv)
                        } else {
                            nv.clone()
                        };
                        p.insert(k.clone(), d);
                    }
                    _ => {}
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    p.insert(k.clone(), nv.clone());
                }
            }
            Value::Object(p)
        }
        _ => new.clone(),
    }
}

fn diff_into(old: Option<&Value>, new: Option<&Value>, path: &str, out: &mut Vec<String>) {
    let key = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        // Entries of different types (a file output where a stdout one was) are shown whole.
        (Some(Value::Object(o)), Some(Value::Object(n))) if o.get("type") == n.get("type") => {
            for (k, ov) in o {
                diff_into(Some(ov), n.get(k), &key(k), out);
            }
            for (k, nv) in n.iter().filter(|(k, _)| !o.contains_key(*k)) {
                diff_into(None, Some(nv), &key(k), out);
            }
        }
        (Some(Value::Array(o)), Some(Value::Array(n))) => {
            for i in 0..o.len().max(n.len()) {
                diff_into(o.get(i), n.get(i), &format!("{path}[{i}]"), out);
            }
        }
        (o, n) if o != n => {
            let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
            out.push(format!("  {path}: {} -> {}", show(o), show(n)));
        }
        _ => {}
    }
}

/// The changes from `old` to `new`, one line per field: `triggers[0].cron: "a" -> "b"`.
pub fn diff_lines(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into(Some(&strip(old)), Some(&strip(new)), "", &mut out);
    out
}

/// Prints what a save changed; "no changes" when nothing did.
fn report_change(old: &Value, saved: &Value, online: bool, as_json: bool) -> CmdResult {
    let lines = diff_lines(old, saved);
    if as_json {
        return report_saved("changed", saved, online, true);
    }
    if lines.is_empty() {
        println!("no changes to job {}", saved["name"].as_str().unwrap_or(""));
        return Ok(0);
    }
    for l in &lines {
        println!("{l}");
    }
    report_saved("changed", saved, online, false)
}

// ---- job set ----

/// `job set NAME [flags]`.
pub fn set(dir: &Path, a: &SetArgs) -> CmdResult {
    let (backend, current) = load(dir, &a.id)?;
    let mut new = strip(&current);
    if let Some(p) = &a.flags.file {
        let patch = super::job::read_json_file(p)?;
        crate::job::merge_patch(&mut new, &patch);
    }
    let mut origins = Origins::new();
    let Value::Object(m) = &mut new else {
        return Err(e1("the job is not a JSON object"));
    };
    super::job::apply_scalars(m, &a.flags, false, &mut origins)?;
    if a.prompt_arg {
        match m.get_mut("agent") {
            Some(Value::Object(ag)) => {
                ag.insert("prompt_via".into(), json!("arg"));
            }
            _ => return Err(e2("--prompt-arg: the job uses the default agent, which already takes the prompt as an argument")),
        }
    }
    if a.enabled {
        m.insert("enabled".into(), json!(true));
    }
    if a.no_catch_up {
        m.insert("catch_up".into(), json!(false));
    }
    if a.inherit_env {
        if let Some(Value::Object(ag)) = m.get_mut("agent") {
            ag.remove("inherit_env");
        }
    }
    if let Some(Value::Object(env)) = m.get_mut("env") {
        for k in &a.rm_env {
            if env.remove(k).is_none() {
                return Err(e2(format!("--rm-env {k}: the job has no such variable")));
            }
        }
    } else if let Some(k) = a.rm_env.first() {
        return Err(e2(format!("--rm-env {k}: the job has no such variable")));
    }
    set_triggers(m, a, &mut origins)?;
    set_outputs(m, a, &mut origins)?;
    for f in &a.unset {
        unset(&mut new, f)?;
    }
    if a.unset.iter().any(|f| f == "expect") && new.get("expect").is_none() {
        let outs = new["outputs"].as_array().cloned().unwrap_or_default();
        if let Some(i) = outs.iter().position(|o| {
            o["on"]
                .as_array()
                .is_some_and(|on| on.iter().any(|s| s == "missed"))
        }) {
            return Err(e2(format!(
                "--unset expect: output {i} is told when the dead-man's switch goes off (its \"on\" names missed); remove it in the same command with --rm-output {i}, or change its statuses with job edit"
            )));
        }
    }
    if new == strip(&current) {
        // "no changes" (or, with --json, the job as it is).
        return report_change(
            &current,
            &current,
            matches!(backend, Backend::Api(_)),
            a.flags.json,
        );
    }
    let saved = save(&backend, &current, &new, &origins)?;
    report_change(
        &current,
        &saved,
        matches!(backend, Backend::Api(_)),
        a.flags.json,
    )
}

/// One trigger type's flags: (JSON key, value or null to remove, flag).
type Fields = Vec<(&'static str, Value, &'static str)>;

fn set_triggers(
    m: &mut Map<String, Value>,
    a: &SetArgs,
    origins: &mut Origins,
) -> Result<(), (i32, String)> {
    let f = &a.flags;
    let mut groups: Vec<(&str, &str, Fields)> = Vec::new();
    let mut cron: Fields = Vec::new();
    if let Some(c) = &f.cron {
        cron.push(("cron", json!(c), "--cron"));
    }
    if let Some(tz) = &f.timezone {
        let v = if tz.is_empty() {
            Value::Null
        } else {
            json!(tz)
        };
        cron.push(("timezone", v, "--timezone"));
    }
    if let Some(d) = &f.dialect {
        cron.push(("dialect", json!(d), "--dialect"));
    }
    groups.push(("cron", "--cron", cron));
    let mut interval: Fields = Vec::new();
    if let Some(s) = f.interval {
        interval.push(("seconds", json!(s), "--interval"));
    }
    groups.push(("interval", "--interval", interval));
    let mut files: Fields = Vec::new();
    if !f.watch.is_empty() {
        files.push(("patterns", json!(f.watch), "--watch"));
    }
    if let Some(r) = &f.root {
        files.push(("root", json!(absolute(r)?), "--root"));
    }
    if let Some(d) = f.debounce {
        files.push(("debounce_seconds", json!(d), "--debounce"));
    }
    groups.push(("file_change", "--watch", files));
    let mut hook: Fields = Vec::new();
    if let Some(p) = &f.webhook {
        hook.push(("path", json!(p), "--webhook"));
    }
    if let Some(s) = &f.secret_env {
        hook.push(("secret_env", json!(s), "--secret-env"));
    }
    if let Some(x) = f.max_age {
        hook.push(("max_age_seconds", json!(x), "--max-age"));
    }
    if let Some(x) = &f.scheme {
        hook.push(("scheme", json!(x), "--scheme"));
    }
    hook.extend(webhook_filter_flags(f)?);
    groups.push(("webhook", "--webhook", hook));
    let mut git: Fields = Vec::new();
    if let Some(r) = &f.git_repo {
        git.push(("repo", json!(absolute(r)?), "--git-repo"));
    }
    if let Some(b) = &f.branch {
        git.push(("branch", json!(b), "--branch"));
    }
    git.extend(checkout_flags(f));
    if a.no_checkout {
        git.push(("checkout", Value::Null, "--no-checkout"));
        git.push(("keep_checkout_on_failure", Value::Null, "--no-checkout"));
    }
    groups.push(("git_push", "--git-repo", git));

    let list = m.entry("triggers").or_insert_with(|| json!([]));
    let Value::Array(list) = list else {
        return Err(e1("the job's triggers are not a list"));
    };
    let original_len = list.len();
    let given: Vec<_> = groups.into_iter().filter(|g| !g.2.is_empty()).collect();
    if a.trigger.is_some() && given.len() != 1 {
        return Err(e2(
            "--trigger N goes with the flags of one trigger type (e.g. --trigger 1 --cron EXPR)",
        ));
    }
    for (kind, main, fields) in given {
        let first_flag = fields[0].2;
        let of_kind: Vec<usize> = (0..list.len())
            .filter(|&i| list[i]["type"] == kind)
            .collect();
        let idx = if a.add_trigger {
            None
        } else if let Some(n) = a.trigger {
            match list.get(n) {
                Some(t) if t["type"] == kind => Some(n),
                Some(t) => {
                    return Err(e2(format!(
                        "--trigger {n}: trigger {n} is a {} trigger, and {first_flag} changes {kind} triggers",
                        t["type"].as_str().unwrap_or("?")
                    )))
                }
                None => {
                    return Err(e2(format!(
                        "--trigger {n}: the job has {} trigger(s), numbered from 0",
                        list.len()
                    )))
                }
            }
        } else {
            match of_kind.as_slice() {
                [] => None,
                [i] => Some(*i),
                many => {
                    return Err(e2(format!(
                        "{first_flag}: the job has {} {kind} triggers ({}); say which with --trigger N, or add one with --add-trigger",
                        many.len(),
                        many.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        };
        let idx = match idx {
            Some(i) => i,
            None => {
                if !fields.iter().any(|x| x.2 == main) {
                    return Err(e2(format!(
                        "{first_flag}: the job has no {kind} trigger to change; add one with {main}"
                    )));
                }
                let mut t = json!({"type": kind});
                match kind {
                    "webhook" => t["secret_env"] = json!("BOG_WEBHOOK_SECRET"),
                    "git_push" => t["branch"] = json!("*"),
                    _ => {}
                }
                list.push(t);
                list.len() - 1
            }
        };
        let t = &mut list[idx];
        for (k, v, _) in &fields {
            if v.is_null() {
                if let Value::Object(o) = t {
                    o.remove(*k);
                }
            } else {
                t[*k] = v.clone();
            }
        }
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, _, fl)| (*k, *fl)).collect();
        record_trigger(origins, idx, &pairs);
    }
    let mut rm = a.rm_trigger.clone();
    rm.sort_unstable();
    rm.dedup();
    for &n in rm.iter().rev() {
        if n >= original_len {
            return Err(e2(format!(
                "--rm-trigger {n}: the job has {original_len} trigger(s), numbered from 0"
            )));
        }
        list.remove(n);
    }
    Ok(())
}

fn set_outputs(
    m: &mut Map<String, Value>,
    a: &SetArgs,
    origins: &mut Origins,
) -> Result<(), (i32, String)> {
    let f = &a.flags;
    let list = m.entry("outputs").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Value::Array(list) = list else {
        return Err(e1("the job's outputs are not a list"));
    };
    let mut drop = vec![false; list.len()];
    for r in &a.rm_output {
        if let Ok(n) = r.parse::<usize>() {
            match drop.get_mut(n) {
                Some(d) => *d = true,
                None => {
                    return Err(e2(format!(
                        "--rm-output {n}: the job has {} output(s), numbered from 0",
                        list.len()
                    )))
                }
            }
        } else {
            let mut any = false;
            for (i, o) in list.iter().enumerate() {
                if o["type"] == r.as_str() {
                    drop[i] = true;
                    any = true;
                }
            }
            if !any {
                return Err(e2(format!(
                    "--rm-output {r}: the job has no {r} output (give a type such as file, or an index)"
                )));
            }
        }
    }
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    if !f.outputs.is_empty() {
        list.clear();
        for (o, flag) in outputs_from_flags(&f.outputs, "--output", f)? {
            record_output(origins, list.len(), flag, f);
            list.push(o);
        }
    }
    if !a.add_output.is_empty() {
        for (o, flag) in outputs_from_flags(&a.add_output, "--add-output", f)? {
            record_output(origins, list.len(), flag, f);
            list.push(o);
        }
    }
    if f.outputs.is_empty() && a.add_output.is_empty() {
        output_options_need_outputs(f)?;
    }
    Ok(())
}

/// Removes the field at a path like `limits.memory_mb` or `triggers[0].timezone`.
fn unset(v: &mut Value, path: &str) -> Result<(), (i32, String)> {
    let missing = || e2(format!("--unset {path}: the job has no such field"));
    /// One step of the path: an object key or a list index.
    enum Step {
        Key(String),
        Index(usize),
    }
    let mut steps: Vec<Step> = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            steps.push(Step::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let n = idx.trim_end_matches(']').parse::<usize>().map_err(|_| {
                e2(format!(
                    "--unset {path}: expected FIELD, FIELD.SUB or LIST[N]"
                ))
            })?;
            steps.push(Step::Index(n));
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return Err(missing());
    };
    let mut cur = v;
    for s in parents {
        cur = match s {
            Step::Key(k) => cur.get_mut(k.as_str()),
            Step::Index(n) => cur.get_mut(*n),
        }
        .ok_or_else(missing)?;
    }
    let removed = match (last, cur) {
        (Step::Key(k), Value::Object(o)) => o.remove(k.as_str()).is_some(),
        (Step::Index(n), Value::Array(a)) if *n < a.len() => {
            a.remove(*n);
            true
        }
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(missing())
    }
}

// ---- job edit ----

const HELP: &str = "# Lines starting with # are ignored. Save and quit to apply the change;\n# quit without saving to change nothing. An empty file cancels.\n";

/// `job edit NAME`: the job's JSON in the user's editor, validated on save; on an error the
/// file is reopened with the error at the top.
pub fn edit(dir: &Path, id: &str) -> CmdResult {
    let (backend, current) = load(dir, id)?;
    let original = strip(&current);
    let name = current["name"].as_str().unwrap_or("job").to_string();
    let header = format!(
        "# Editing job {name} ({}){}.\n{HELP}",
        current["id"].as_str().unwrap_or(""),
        match backend {
            Backend::Api(_) => " through the running daemon",
            Backend::Files(_) => " in its file (no daemon is running)",
        }
    );
    let path = edit_file_path(&name);
    let mut body = serde_json::to_string_pretty(&original).unwrap_or_default() + "\n";
    let mut text = format!("{header}{body}");
    let mut after_error = false;
    loop {
        write_private(&path, &text)
            .map_err(|e| e1(format!("cannot write {}: {e}", path.display())))?;
        run_editor(&path)?;
        let edited = std::fs::read_to_string(&path)
            .map_err(|e| e1(format!("cannot read {}: {e}", path.display())))?;
        if after_error && edited == text {
            return Err(e1(format!(
                "edit cancelled: nothing was changed (your edit is kept in {})",
                path.display()
            )));
        }
        let json_text = blank_comments(&edited);
        if json_text.trim().is_empty() {
            let _ = std::fs::remove_file(&path);
            return Err(e1(
                "edit cancelled: the file was emptied; nothing was changed",
            ));
        }
        body = edited
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let error = match serde_json::from_str::<Value>(&json_text) {
            Err(e) => format!("not valid JSON: {e}"),
            Ok(v) if v == original => {
                let _ = std::fs::remove_file(&path);
                println!("no changes to job {name}");
                return Ok(0);
            }
            Ok(v) if !v.is_object() => "the job must be a JSON object".to_string(),
            Ok(v) => match save(&backend, &current, &strip(&v), &Origins::new()) {
                Ok(saved) => {
                    let _ = std::fs::remove_file(&path);
                    return report_change(
                        &current,
                        &saved,
                        matches!(backend, Backend::Api(_)),
                        false,
                    );
                }
                Err((2, msg)) => msg,
                Err((code, msg)) => {
                    return Err((
                        code,
                        format!("{msg} (your edit is kept in {})", path.display()),
                    ))
                }
            },
        };
        eprintln!("error: {error}; reopening the editor");
        text = format!(
            "# error: {}\n# Fix it and save, or quit without saving to give up.\n{header}{body}",
            error.replace('\n', "\n# ")
        );
        after_error = true;
    }
}

/// Comment lines become empty lines, so JSON error line numbers match the file.
fn blank_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn edit_file_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "bog-agents-daemon-edit-{name}-{}.json",
        std::process::id()
    ))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    crate::sys::set_file_mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Runs `$VISUAL`, else `$EDITOR`, else `vi` on `path` and waits for it.
fn run_editor(path: &Path) -> Result<(), (i32, String)> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    let argv = super::shellwords::split(&editor)
        .ok()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| e2(format!("cannot split the editor command {editor:?}; set $VISUAL or $EDITOR to a command line")))?;
    let st = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg(path)
        .status()
        .map_err(|e| {
            e1(format!(
                "cannot run the editor {:?}: {e} (set $VISUAL or $EDITOR)",
                argv[0]
            ))
        })?;
    if !st.success() {
        return Err(e1(format!(
            "the editor exited with {st}; nothing was changed (the file is {})",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_round_trips() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"});
        let new = json!({"a": 1, "b": {"c": 5}, "e": [1], "g": true});
        let p = merge_diff(&old, &new);
        assert_eq!(
            p,
            json!({"b": {"c": 5, "d": null}, "e": [1], "f": null, "g": true})
        );
        let mut x = old.clone();
        crate::job::merge_patch(&mut x, &p);
        assert_eq!(x, new);
    }

    #[test]
    fn diff_and_unset() {
        let old = json!({"triggers": [{"type": "cron", "cron": "0 9 * * *", "timezone": "Europe/Berlin"}]});
        let mut new = old.clone();
        new["triggers"][0]["cron"] = json!("30 8 * * *");
        unset(&mut new, "triggers[0].timezone").unwrap();
        assert_eq!(
            diff_lines(&old, &new),
            [
                "  triggers[0].cron: \"0 9 * * *\" -> \"30 8 * * *\"",
                "  triggers[0].timezone: \"Europe/Berlin\" -> (unset)"
            ]
        );
        assert!(unset(&mut new, "triggers[3]").is_err());
        assert!(unset(&mut new, "nope").is_err());
    }
}
