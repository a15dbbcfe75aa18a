//! The command line (README "CLI", the man page): argument definitions and dispatch. Exit codes: 0 ok,
//! 1 failure, 2 bad usage or invalid input.

mod change;
mod client;
mod duration;
mod format;
mod githook;
mod job;
mod logs;
mod next;
mod service;
pub mod shellwords;
mod test;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::daemon::{self, RunOptions};
use crate::logging::Format;

/// Runs AI agents when something happens: a cron schedule, an interval, a file change, a
/// signed webhook, a git push.
#[derive(Parser, Debug)]
#[command(name = "bog-agents-daemon", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (default: $BOG_AGENTS_HOME/daemon, else ~/.bog-agents/daemon)
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon in the foreground
    Run(RunArgs),
    /// Add, change, list, show, remove, run and inspect jobs; read their runs' output
    #[command(subcommand)]
    Job(JobCmd),
    /// Print the next fire times of a cron expression
    Next(NextArgs),
    /// Print the API token (created if missing)
    Token(TokenArgs),
    /// Install a post-receive hook that tells the daemon about pushes at once
    InstallGitHook(githook::HookArgs),
    /// Install a systemd unit (user unit by default) that runs the daemon
    InstallSystemd(service::SystemdArgs),
    /// Remove the systemd unit written by install-systemd
    UninstallSystemd(service::UninstallSystemdArgs),
    /// Install a launchd agent (macOS) that runs the daemon at login
    InstallLaunchd(service::LaunchdArgs),
    /// Remove the launchd agent written by install-launchd
    UninstallLaunchd,
    /// Write (and on Windows register) a Task Scheduler task that runs the daemon at logon
    InstallWindowsTask(service::InstallArgs),
    /// Remove the Task Scheduler task written by install-windows-task
    UninstallWindowsTask,
    /// Install the man page where `man` finds it (share/man next to the binary's bin/)
    InstallMan(service::ManArgs),
    /// Remove the man page written by install-man
    UninstallMan(service::ManArgs),
    /// Is a daemon running on the data dir? (exit 0 running, 1 not, 3 stale lock)
    Status,
    /// Stop the daemon running on the data dir (SIGTERM, or its stop event on Windows, then
    /// wait for it to drain)
    Stop(service::StopArgs),
}

/// Flags of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TCP port of the REST API (default 7878; 0 picks a free port, written to daemon.lock)
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address to bind (default 127.0.0.1)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Worker threads, i.e. agents that can run at once (default 4)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Seconds to let running agents finish on SIGTERM before killing them (default 30)
    #[arg(long, value_name = "S")]
    pub grace: Option<u64>,
    /// Log format on stderr: text or json
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<Format>,
    /// Milliseconds between reads of the repositories of git_push triggers (default 1000)
    #[arg(long, value_name = "MS")]
    pub git_poll_ms: Option<u64>,
    /// Cluster mode: etcd client URLs, comma-separated (jobs, leader, claims live there)
    #[arg(long, value_name = "URLS")]
    pub etcd: Option<String>,
    /// Cluster mode: this node's name (default: the host name)
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Cluster mode: prefix of every etcd key (default /bog-agents/)
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
}

/// Flags of `token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Print the cluster's token, kept in etcd at these client URLs (comma-separated)
    #[arg(long, value_name = "URLS")]
    pub etcd: Option<String>,
    /// With --etcd: prefix of the cluster's etcd keys (default /bog-agents/)
    #[arg(long, value_name = "PREFIX", requires = "etcd")]
    pub etcd_prefix: Option<String>,
}

/// `job` subcommands.
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Add a job (through the daemon when it runs, else by writing the job file)
    Add(Box<job::AddArgs>),
    /// Change a job: only what the flags name (prints the changes it applied)
    Set(Box<change::SetArgs>),
    /// Edit a job's JSON in $VISUAL/$EDITOR (vi); validated on save
    Edit {
        /// Job id or name
        id: String,
    },
    /// List jobs
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one job as JSON
    Show { id: String },
    /// Remove a job and its run records
    Rm { id: String },
    /// Run a job now (needs the daemon)
    Run {
        id: String,
        /// Wait for the run to finish, print its output, exit 0 if it succeeded
        #[arg(long)]
        wait: bool,
        /// Print JSON: the run id and status (with --wait: the finished run record)
        #[arg(long)]
        json: bool,
    },
    /// Print a run's output, error and exit code (default: the job's latest run)
    Logs(logs::LogsArgs),
    /// List a job's runs, newest first
    Runs {
        id: String,
        /// At most this many runs
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show what a run would get (prompt, argv, environment, event file, outputs) without
    /// running it; --exec runs the agent once, delivering and recording nothing
    Test(Box<test::TestArgs>),
    /// Enable a job
    Enable { id: String },
    /// Disable a job (its triggers stop firing)
    Disable { id: String },
}

/// Flags of `next`.
#[derive(Args, Debug)]
pub struct NextArgs {
    /// Cron expression (5 fields, or 6 with leading seconds, or @daily etc.; Quartz: 6 or 7)
    pub expr: String,
    /// How many fire times to print
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub count: u32,
    /// Start after this instant (RFC 3339; default now)
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    /// IANA time zone (default local)
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Cron dialect: vixie (crontab, default) or quartz (seconds first, optional year, SUN=1)
    #[arg(long, value_name = "DIALECT", default_value = "vixie", value_parser = ["vixie", "quartz"])]
    pub dialect: String,
}

/// Parses the command line and runs it; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // A command whose output goes into `| head` ends quietly when the reader does.
        crate::sys::restore_sigpipe();
    }
    match cli.cmd {
        Cmd::Run(a) => daemon::run(RunOptions {
            data_dir: cli.data_dir,
            port: a.port,
            bind: a.bind,
            workers: a.workers.map(usize::from),
            grace: a.grace,
            log_format: a.log_format,
            git_poll_ms: a.git_poll_ms,
            etcd: a.etcd,
            node: a.node,
            etcd_prefix: a.etcd_prefix,
        }),
        Cmd::Next(a) => next::run(&a),
        Cmd::Token(a) => job::token(cli.data_dir.as_deref(), &a),
        Cmd::InstallGitHook(a) => githook::run(cli.data_dir.as_deref(), &a),
        Cmd::InstallSystemd(a) => service::install_systemd(cli.data_dir.as_deref(), &a),
        Cmd::UninstallSystemd(a) => service::uninstall_systemd(&a),
        Cmd::InstallLaunchd(a) => service::install_launchd(cli.data_dir.as_deref(), &a),
        Cmd::UninstallLaunchd => service::uninstall_launchd(),
        Cmd::InstallWindowsTask(a) => service::install_windows_task(cli.data_dir.as_deref(), &a),
        Cmd::UninstallWindowsTask => service::uninstall_windows_task(cli.data_dir.as_deref()),
        Cmd::InstallMan(a) => service::install_man(&a),
        Cmd::UninstallMan(a) => service::uninstall_man(&a),
        Cmd::Status => service::status(cli.data_dir.as_deref()),
        Cmd::Stop(a) => service::stop(cli.data_dir.as_deref(), &a),
        Cmd::Job(j) => run_job(cli.data_dir.as_deref(), j),
    }
}

/// Runs a `job` subcommand (here, not in `job.rs`, so that `job.rs`, whose helpers the
/// other subcommands' files use, does not depend on them in turn).
fn run_job(dir_flag: Option<&std::path::Path>, cmd: JobCmd) -> i32 {
    let dir = match crate::store::resolve_data_dir(dir_flag) {
        Ok(d) => d,
        Err(e) => return job::fail(1, &e.to_string()),
    };
    let r = match cmd {
        JobCmd::Add(a) => job::add(&dir, &a),
        JobCmd::List { json } => job::list(&dir, json),
        JobCmd::Show { id } => job::show(&dir, &id),
        JobCmd::Rm { id } => job::rm(&dir, &id),
        JobCmd::Run { id, wait, json } => job::run_now(&dir, &id, wait, json),
        JobCmd::Set(a) => change::set(&dir, &a),
        JobCmd::Edit { id } => change::edit(&dir, &id),
        JobCmd::Logs(a) => logs::logs(&dir, &a),
        JobCmd::Runs { id, limit, json } => job::runs(&dir, &id, limit, json),
        JobCmd::Test(a) => test::test(&dir, &a),
        JobCmd::Enable { id } => job::set_enabled(&dir, &id, true),
        JobCmd::Disable { id } => job::set_enabled(&dir, &id, false),
    };
    match r {
        Ok(code) => code,
        Err((code, msg)) => job::fail(code, &msg),
    }
}
