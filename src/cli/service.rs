//! `install-*` / `uninstall-*` (service files for systemd, launchd, the Windows Task
//! Scheduler), `status` and `stop`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::service::{self, launchd, systemd, windows, Options};
use crate::store::lock::{holder, Holder};
use crate::store::resolve_data_dir;

/// Flags shared by the installers.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Write the file to stdout and change nothing
    #[arg(long)]
    pub print: bool,
    /// Port the service's daemon listens on (default: config.json's port, else 7878)
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address the service's daemon binds (default: config.json's bind, else 127.0.0.1)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Seconds the daemon lets agents finish on stop (default: config.json's grace_seconds,
    /// else 30); the service manager waits 15 s longer
    #[arg(long, value_name = "S")]
    pub grace: Option<u64>,
    /// Path of the daemon binary to run (default: this binary)
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

/// Flags of `install-systemd`.
#[derive(Args, Debug, Clone)]
pub struct SystemdArgs {
    /// Install a user unit in ~/.config/systemd/user (the default)
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// Install a system unit in /etc/systemd/system (needs root), running as --run-as
    #[arg(long)]
    pub system: bool,
    /// User a system unit runs as (default: $SUDO_USER, else $USER)
    #[arg(long, value_name = "NAME", requires = "system")]
    pub run_as: Option<String>,
    #[command(flatten)]
    pub common: InstallArgs,
}

/// Flags of `uninstall-systemd`.
#[derive(Args, Debug, Clone)]
pub struct UninstallSystemdArgs {
    /// Remove the user unit (the default)
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// Remove the system unit
    #[arg(long)]
    pub system: bool,
}

/// Flags of `install-launchd`.
#[derive(Args, Debug, Clone)]
pub struct LaunchdArgs {
    /// Install a per-user agent in ~/Library/LaunchAgents (the only kind; accepted for clarity)
    #[arg(long)]
    pub user: bool,
    #[command(flatten)]
    pub common: InstallArgs,
}

/// Flags of `stop`.
#[derive(Args, Debug, Clone)]
pub struct StopArgs {
    /// Seconds to wait for the daemon to drain and exit
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub timeout: u64,
}

/// Why an installer, uninstaller or `install-man` failed.
#[derive(Debug)]
enum Error {
    NoHome,
    /// `install-systemd --system` without `--run-as`, `$SUDO_USER` or `$USER`.
    NoUser,
    UnknownUser(String),
    /// This binary's path is unknown; `flag` names the flag that gives it instead.
    CurrentExe {
        flag: &'static str,
        source: Option<std::io::Error>,
    },
    DataDir(std::io::Error),
    /// `config.json` does not load.
    Config(crate::config::ConfigError),
    File(service::FileError),
    Schtasks(std::io::Error),
    SchtasksFailed(std::process::ExitStatus),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoHome => write!(f, "HOME is not set"),
            Error::NoUser => write!(
                f,
                "cannot tell which user the service runs as; pass --run-as"
            ),
            Error::UnknownUser(u) => write!(f, "user {u} does not exist"),
            Error::CurrentExe {
                flag,
                source: Some(e),
            } => write!(f, "cannot find this binary's path: {e}; pass {flag}"),
            Error::CurrentExe { flag, source: None } => {
                write!(f, "cannot find this binary's directory; pass {flag}")
            }
            Error::DataDir(e) => write!(f, "{e}"),
            Error::Config(e) => write!(f, "{e} (fix it, or pass --grace)"),
            Error::File(e) => write!(f, "{e}"),
            Error::Schtasks(e) => write!(f, "cannot run schtasks: {e}"),
            Error::SchtasksFailed(st) => write!(f, "schtasks /Create failed ({st})"),
        }
    }
}

impl std::error::Error for Error {}

impl From<service::FileError> for Error {
    fn from(e: service::FileError) -> Error {
        Error::File(e)
    }
}

fn home() -> Result<PathBuf, Error> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or(Error::NoHome)
}

fn options(a: &InstallArgs, data_dir: Option<&Path>, home: PathBuf) -> Result<Options, Error> {
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| Error::CurrentExe {
            flag: "--binary",
            source: Some(e),
        })?,
    };
    let data_dir = match data_dir {
        Some(d) => Some(resolve_data_dir(Some(d)).map_err(Error::DataDir)?),
        None => None,
    };
    let mut o = Options {
        binary,
        port: a.port,
        bind: a.bind.clone(),
        grace: a.grace,
        grace_seconds: service::DRAIN_GRACE_SECONDS,
        data_dir,
        home,
    };
    // The daemon reads config.json at each start; only the stop timeout has to be known
    // now, so the unit waits longer than the grace the daemon will take.
    let cfg = crate::config::load(&o.effective_data_dir()).map_err(Error::Config)?;
    o.grace_seconds = a
        .grace
        .or(cfg.grace_seconds)
        .unwrap_or(service::DRAIN_GRACE_SECONDS);
    Ok(o)
}

/// What the installed service will do, for the installers' summary.
fn describe(o: &Options) -> String {
    let cfg = crate::config::load(&o.effective_data_dir()).unwrap_or_default();
    let port = o.port.or(cfg.port).unwrap_or(7878);
    let bind = o
        .bind
        .clone()
        .or(cfg.bind)
        .unwrap_or_else(|| "127.0.0.1".into());
    format!(
        "the daemon will listen on {bind}:{port} with data dir {} and {} s to drain on stop{}",
        o.effective_data_dir().display(),
        o.grace_seconds,
        if o.port.is_none() || o.bind.is_none() {
            " (what no flag sets comes from config.json at each start)"
        } else {
            ""
        }
    )
}

fn report(r: Result<(), Error>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `install-systemd`.
pub fn install_systemd(data_dir: Option<&Path>, a: &SystemdArgs) -> i32 {
    report((|| {
        let (user, home) = if a.system {
            let user = a
                .run_as
                .clone()
                .or_else(|| std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()))
                .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
                .ok_or(Error::NoUser)?;
            let h = crate::sys::home_of(&user).ok_or_else(|| Error::UnknownUser(user.clone()))?;
            (Some(user), h)
        } else {
            (None, home()?)
        };
        let o = options(&a.common, data_dir, home.clone())?;
        let text = systemd::unit(&o, user.as_deref());
        if a.common.print {
            print!("{text}");
            return Ok(());
        }
        let path = systemd::unit_path(&home, a.system);
        let changed = service::write_file(&path, text.as_bytes())?;
        println!(
            "{} {}",
            if changed { "wrote" } else { "unchanged:" },
            path.display()
        );
        println!("{}", describe(&o));
        let scope = if a.system { "" } else { " --user" };
        if systemd::systemd_running() {
            let ok = std::process::Command::new("systemctl")
                .args(if a.system {
                    vec!["daemon-reload"]
                } else {
                    vec!["--user", "daemon-reload"]
                })
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                println!("ran: systemctl{scope} daemon-reload");
            }
        }
        println!("start it now and at every login/boot with:");
        if !a.system {
            println!("  systemctl --user daemon-reload");
        } else {
            println!("  systemctl daemon-reload");
        }
        println!("  systemctl{scope} enable --now bog-agents-daemon");
        if !a.system {
            println!("to keep it running while you are logged out (and start it at boot):");
            println!("  loginctl enable-linger $USER");
        }
        println!("logs: journalctl{scope} -u bog-agents-daemon -f");
        Ok(())
    })())
}

/// `uninstall-systemd`.
pub fn uninstall_systemd(a: &UninstallSystemdArgs) -> i32 {
    report((|| {
        let path = systemd::unit_path(&home()?, a.system);
        let scope = if a.system { "" } else { " --user" };
        if service::remove_file(&path)? {
            println!("removed {}", path.display());
            println!("if it was running: systemctl{scope} disable --now bog-agents-daemon; systemctl{scope} daemon-reload");
        } else {
            println!("nothing to remove: {} does not exist", path.display());
        }
        Ok(())
    })())
}

/// `install-launchd`.
pub fn install_launchd(data_dir: Option<&Path>, a: &LaunchdArgs) -> i32 {
    report((|| {
        let home = home()?;
        let o = options(&a.common, data_dir, home.clone())?;
        let text = launchd::plist(&o);
        if a.common.print {
            print!("{text}");
            return Ok(());
        }
        create_data_dir(&o.effective_data_dir())?;
        let path = launchd::plist_path(&home);
        let changed = service::write_file(&path, text.as_bytes())?;
        println!(
            "{} {}",
            if changed { "wrote" } else { "unchanged:" },
            path.display()
        );
        println!("{}", describe(&o));
        println!("load it now (it also starts at every login):");
        println!("  launchctl bootstrap gui/$(id -u) {}", path.display());
        println!(
            "logs: {}",
            o.effective_data_dir().join("daemon.err.log").display()
        );
        Ok(())
    })())
}

/// `uninstall-launchd`.
pub fn uninstall_launchd() -> i32 {
    report((|| {
        let path = launchd::plist_path(&home()?);
        if service::remove_file(&path)? {
            println!("removed {}", path.display());
            println!(
                "if it was loaded: launchctl bootout gui/$(id -u)/{}",
                launchd::LABEL
            );
        } else {
            println!("nothing to remove: {} does not exist", path.display());
        }
        Ok(())
    })())
}

/// Creates the data dir (and missing parents) with mode 0700, as `run` does.
fn create_data_dir(dir: &Path) -> Result<(), Error> {
    crate::fsio::create_dir_all_mode(dir, 0o700)
        .map_err(|e| Error::File(crate::fsio::PathError::at("create", dir)(e)))
}

fn task_file(data_dir: &Path) -> PathBuf {
    data_dir.join("bog-agents-daemon-task.xml")
}

/// `install-windows-task`.
pub fn install_windows_task(data_dir: Option<&Path>, a: &InstallArgs) -> i32 {
    report((|| {
        // On Windows the task runs as this user: name the data dir this user's daemon uses
        // (%APPDATA%, or $BOG_AGENTS_HOME), which is not under a HOME.
        let data_dir = match data_dir {
            None if crate::sys::WINDOWS => Some(resolve_data_dir(None).map_err(Error::DataDir)?),
            d => d.map(Path::to_path_buf),
        };
        let mut o = options(a, data_dir.as_deref(), home().unwrap_or_default())?;
        if a.binary.is_none() && !crate::sys::WINDOWS {
            // Elsewhere the XML is for another machine: name the Windows binary.
            o.binary = PathBuf::from(r"C:\Program Files\bog-agents-daemon\bog-agents-daemon.exe");
        }
        if a.print {
            print!("{}", windows::task_xml(&o));
            return Ok(());
        }
        let dir = resolve_data_dir(data_dir.as_deref()).map_err(Error::DataDir)?;
        create_data_dir(&dir)?;
        let path = task_file(&dir);
        service::write_file(&path, &windows::task_file(&o))?;
        println!("wrote {} (UTF-16, as schtasks expects)", path.display());
        println!("{}", describe(&o));
        register(&path)
    })())
}

/// Registers the task with `schtasks` on Windows; elsewhere says how.
fn register(path: &Path) -> Result<(), Error> {
    if crate::sys::WINDOWS {
        let st = std::process::Command::new("schtasks")
            .args(["/Create", "/XML"])
            .arg(path)
            .args(["/TN", windows::TASK, "/F"])
            .status()
            .map_err(Error::Schtasks)?;
        if !st.success() {
            return Err(Error::SchtasksFailed(st));
        }
        println!("registered task {}", windows::TASK);
        return Ok(());
    }
    println!("register it on the Windows machine with:");
    println!(
        "  schtasks /Create /XML {} /TN {} /F",
        path.display(),
        windows::TASK
    );
    Ok(())
}

/// `uninstall-windows-task`.
pub fn uninstall_windows_task(data_dir: Option<&Path>) -> i32 {
    report((|| {
        if crate::sys::WINDOWS {
            let _ = std::process::Command::new("schtasks")
                .args(["/Delete", "/TN", windows::TASK, "/F"])
                .status();
        }
        let dir = resolve_data_dir(data_dir).map_err(Error::DataDir)?;
        let path = task_file(&dir);
        if service::remove_file(&path)? {
            println!("removed {}", path.display());
        } else {
            println!("nothing to remove: {} does not exist", path.display());
        }
        if !crate::sys::WINDOWS {
            println!("on Windows: schtasks /Delete /TN {} /F", windows::TASK);
        }
        Ok(())
    })())
}

/// `status`: 0 running, 1 not running, 3 stale lock.
pub fn status(data_dir: Option<&Path>) -> i32 {
    let dir = match resolve_data_dir(data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match holder(&dir) {
        Ok(Holder::Held(Some(info))) => {
            println!(
                "running: pid {}, listening on {}:{}, data dir {}",
                info.pid,
                info.bind,
                info.port,
                dir.display()
            );
            println!("started: {}", info.started_at);
            match super::client::Client::to(&dir, &info)
                .and_then(|c| c.call("GET", "/health", None))
            {
                Ok((200, h)) => println!(
                    "uptime: {} s, jobs: {}, running runs: {}, version {}",
                    h["uptime_seconds"],
                    h["jobs"],
                    h["running"],
                    h["version"].as_str().unwrap_or("?")
                ),
                Ok((st, _)) => println!("the API answered HTTP {st}"),
                Err(e) => println!("the API did not answer: {e}"),
            }
            0
        }
        Ok(Holder::Held(None)) => {
            println!(
                "starting: a daemon holds {} but is not listening yet",
                dir.display()
            );
            0
        }
        Ok(Holder::Free { stale: Some(info) }) => {
            println!(
                "not running, stale lock: {} names pid {} (started {}), which is gone; the next start clears it",
                crate::store::lock::lock_path(&dir).display(),
                info.pid,
                info.started_at
            );
            3
        }
        Ok(Holder::Free { stale: None }) => {
            println!("not running (data dir {})", dir.display());
            1
        }
        Err(e) => {
            eprintln!("error: cannot read the lock in {}: {e}", dir.display());
            1
        }
    }
}

/// `stop`: SIGTERM the daemon that holds the lock and wait for it to exit.
pub fn stop(data_dir: Option<&Path>, a: &StopArgs) -> i32 {
    let dir = match resolve_data_dir(data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let info = match holder(&dir) {
        Ok(Holder::Held(Some(info))) => info,
        Ok(Holder::Held(None)) => {
            eprintln!(
                "error: a daemon is starting on {}; try again in a moment",
                dir.display()
            );
            return 1;
        }
        Ok(Holder::Free { .. }) => {
            println!("no daemon is running on {}", dir.display());
            return 0;
        }
        Err(e) => {
            eprintln!("error: cannot read the lock in {}: {e}", dir.display());
            return 1;
        }
    };
    if let Err(e) = crate::sys::request_stop(info.pid) {
        eprintln!("error: cannot signal pid {}: {e}", info.pid);
        return 1;
    }
    println!(
        "sent {} to pid {}; waiting up to {} s for it to drain and exit",
        crate::sys::STOP_REQUEST,
        info.pid,
        a.timeout
    );
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut delay = Duration::from_millis(20);
    while Instant::now() < deadline {
        if matches!(holder(&dir), Ok(Holder::Free { .. })) {
            println!("stopped");
            return 0;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    eprintln!(
        "error: pid {} is still running after {} s",
        info.pid, a.timeout
    );
    1
}

/// The man page, built into the binary so `install-man` works from `cargo install`.
const MAN_PAGE: &str = include_str!("../../man/bog-agents-daemon.1");

/// Flags of `install-man` and `uninstall-man`.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Man directory (default: share/man next to the binary's bin/ directory, which `man`
    /// searches for every directory on PATH, e.g. ~/.cargo/share/man for cargo install)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write the page to stdout and change nothing
    #[arg(long)]
    pub print: bool,
}

fn man_dir(a: &ManArgs) -> Result<PathBuf, Error> {
    if let Some(d) = &a.dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().map_err(|e| Error::CurrentExe {
        flag: "--dir",
        source: Some(e),
    })?;
    let bin = exe.parent().ok_or(Error::CurrentExe {
        flag: "--dir",
        source: None,
    })?;
    let prefix = bin.parent().ok_or(Error::CurrentExe {
        flag: "--dir",
        source: None,
    })?;
    Ok(prefix.join("share").join("man"))
}

/// `install-man`: writes the man page to DIR/man1/bog-agents-daemon.1.
pub fn install_man(a: &ManArgs) -> i32 {
    report((|| {
        if a.print {
            print!("{MAN_PAGE}");
            return Ok(());
        }
        let dir = man_dir(a)?;
        let path = dir.join("man1").join("bog-agents-daemon.1");
        let changed = service::write_file(&path, MAN_PAGE.as_bytes())?;
        println!(
            "{} {}",
            if changed { "wrote" } else { "unchanged:" },
            path.display()
        );
        println!("read it with: man bog-agents-daemon");
        println!(
            "(man searches <dir>/../share/man for each <dir> on PATH; if it does not find it, add {} to MANPATH, e.g. export MANPATH=\"{}:\")",
            dir.display(),
            dir.display()
        );
        Ok(())
    })())
}

/// `uninstall-man`.
pub fn uninstall_man(a: &ManArgs) -> i32 {
    report((|| {
        let path = man_dir(a)?.join("man1").join("bog-agents-daemon.1");
        if service::remove_file(&path)? {
            println!("removed {}", path.display());
        } else {
            println!("nothing to remove: {} does not exist", path.display());
        }
        Ok(())
    })())
}
