//! The job model (README "Jobs"), as stored in `jobs/<id>.json` and returned by the API.
//!
//! These types are only ever built by [`super::validate`], so a `Job` in memory is always
//! valid (the plain enums derive `Deserialize` for its input types, and nothing else reads
//! them from JSON). They serialize with every default filled in, so a stored file says exactly what
//! the daemon will do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One job: what to run, when, and where to deliver what it says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub prompt: String,
    /// `None` means: `config.json` `default_agent`, else `bog-agents -p {prompt}`.
    pub agent: Option<Agent>,
    pub model: String,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub triggers: Vec<Trigger>,
    pub outputs: Vec<Output>,
    pub limits: Limits,
    pub overlap: Overlap,
    pub max_retries: u32,
    pub retry_backoff_seconds: f64,
    pub catch_up: bool,
    pub history: u32,
    pub enabled: bool,
    pub created_at: String,
    /// The dead-man's switch: when no run has succeeded in time, outputs with `on:
    /// ["missed"]` are told (triggers/clock.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// `expect`: how often a job must succeed (README "Dead-man's switch").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// `{"within_seconds": N}`: a successful run at least every N seconds.
    WithinSeconds(u64),
    /// `{"after_slot": S}`: a successful run within S seconds after each cron slot.
    AfterSlot(u64),
}

/// The agent command line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agent {
    /// argv; `{prompt}` in any element is replaced by the rendered prompt, `{prompt_file}`
    /// by the path of a file holding it.
    pub command: Vec<String>,
    pub prompt_via: PromptVia,
    /// Start from the daemon's environment (minus secrets); false: only `PATH HOME LANG
    /// USER TERM` and `env_allow`.
    #[serde(skip_serializing_if = "is_true")]
    pub inherit_env: bool,
    /// Daemon variables passed to the agent even with `inherit_env: false`, or when a job
    /// names them as secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_allow: Vec<String>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How the rendered prompt reaches the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptVia {
    /// Substituted for `{prompt}` in argv; stdin is `/dev/null`.
    Arg,
    /// Written to the agent's stdin.
    Stdin,
}

/// Resource limits applied to each agent process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    /// Wall-clock limit; the process group gets SIGTERM, then SIGKILL 5 s later.
    pub timeout_seconds: Option<u64>,
    /// `RLIMIT_CPU`.
    pub cpu_seconds: Option<u64>,
    /// MiB: the run's cgroup memory limit, else `RLIMIT_DATA`.
    pub memory_mb: Option<u64>,
    /// Processes of the run: its cgroup pids limit, else `RLIMIT_NPROC` (all processes of
    /// the agent's user; not enforced for root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u64>,
    /// Captured stdout beyond this many KiB is cut.
    pub max_output_kb: u64,
    /// Where the agent may write.
    #[serde(skip_serializing_if = "Filesystem::is_full")]
    pub filesystem: Filesystem,
    /// Run budget: at most this many runs start in any rolling hour; firings past it are
    /// recorded as `skipped` (engine/runs.rs `Budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs_per_hour: Option<u64>,
    /// Run budget: at most this many runs start in any rolling 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs_per_day: Option<u64>,
}

/// `limits.filesystem`: where the agent may write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filesystem {
    /// Wherever the daemon's user may.
    #[default]
    Full,
    /// Only in `working_dir`, a private `$TMPDIR` and a few device files (Landlock).
    WorkingDir,
}

impl Filesystem {
    fn is_full(&self) -> bool {
        *self == Filesystem::Full
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_seconds: Some(3600),
            cpu_seconds: None,
            memory_mb: None,
            max_processes: None,
            max_output_kb: 1024,
            filesystem: Filesystem::Full,
            max_runs_per_hour: None,
            max_runs_per_day: None,
        }
    }
}

/// What a firing does while a run of the same job is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// At most one pending run; further firings coalesce into it.
    Queue,
    /// Recorded as a `skipped` run.
    Skip,
    /// Runs side by side.
    Parallel,
}

/// When a job fires.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    Cron {
        cron: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// `vixie` (crontab, the default, not written) or `quartz`.
        #[serde(skip_serializing_if = "crate::schedule::Dialect::is_vixie")]
        dialect: crate::schedule::Dialect,
    },
    Interval {
        seconds: u64,
    },
    FileChange {
        patterns: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        root: Option<String>,
        debounce_seconds: f64,
        /// Cluster mode: the node whose files are watched (README "Running a cluster").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    Webhook {
        path: String,
        secret_env: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_age_seconds: Option<u64>,
        /// How the sender signs (README "Webhook senders"); absent: GitHub's signature or
        /// GitLab's token.
        #[serde(skip_serializing_if = "Option::is_none")]
        scheme: Option<crate::triggers::scheme::Scheme>,
        /// `events` and `match` (README "Webhook filters"); empty: every delivery runs.
        #[serde(flatten)]
        filter: crate::triggers::filter::Filter,
    },
    GitPush {
        repo: String,
        branch: String,
        /// Run the agent in a fresh `git worktree` at the pushed commit (`crate::checkout`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        checkout: bool,
        /// Keep that worktree when the run fails.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        keep_checkout_on_failure: bool,
    },
}

/// Where a run's result goes, and for which statuses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Output {
    #[serde(flatten)]
    pub target: Target,
    pub on: Vec<OnStatus>,
}

/// The statuses an output can be limited to (`timed_out` counts as `failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStatus {
    Succeeded,
    Failed,
    /// The dead-man's switch went off (`expect`): no successful run in time.
    Missed,
}

/// An output target and its settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Log,
    Stdout,
    File {
        path: String,
        append: bool,
    },
    Slack {
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_env: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        webhook_url_env: Option<String>,
        api_url: String,
    },
    Webhook {
        url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hmac_secret_env: Option<String>,
        headers: BTreeMap<String, String>,
    },
    Email {
        to: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        smtp_env_prefix: String,
    },
    GithubComment {
        repo: String,
        issue: String,
        token_env: String,
        api_url: String,
    },
}

impl Target {
    /// The `type` string of this target.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Log => "log",
            Target::Stdout => "stdout",
            Target::File { .. } => "file",
            Target::Slack { .. } => "slack",
            Target::Webhook { .. } => "webhook",
            Target::Email { .. } => "email",
            Target::GithubComment { .. } => "github_comment",
        }
    }
}

impl Job {
    /// The environment variables this job names as secrets (`*_env` fields) and the
    /// prefixes of secret families (`smtp_env_prefix`). No agent sees them.
    pub fn secret_env(&self) -> (Vec<&str>, Vec<&str>) {
        let mut names = Vec::new();
        let mut prefixes = Vec::new();
        for t in &self.triggers {
            if let Trigger::Webhook { secret_env, .. } = t {
                names.push(secret_env.as_str());
            }
        }
        for o in &self.outputs {
            match &o.target {
                Target::Slack {
                    token_env,
                    webhook_url_env,
                    ..
                } => names.extend(token_env.iter().chain(webhook_url_env).map(String::as_str)),
                Target::Webhook {
                    hmac_secret_env, ..
                } => names.extend(hmac_secret_env.as_deref()),
                Target::Email {
                    smtp_env_prefix, ..
                } => prefixes.push(smtp_env_prefix.as_str()),
                Target::GithubComment { token_env, .. } => names.push(token_env.as_str()),
                Target::Log | Target::Stdout | Target::File { .. } => {}
            }
        }
        (names, prefixes)
    }

    /// Plain-language notes about what of the job this machine cannot do as asked (today:
    /// `limits.filesystem: "working_dir"` without Landlock). Empty when all of it works.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.limits.filesystem == Filesystem::WorkingDir {
            if let Err(why) = crate::contain::landlock_status() {
                w.push(format!(
                    "limits.filesystem: \"working_dir\" cannot be enforced on this machine ({why}): every run of this job fails until it can"
                ));
            }
        }
        w
    }
}
