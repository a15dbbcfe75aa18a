//! systemd units: a user unit (`~/.config/systemd/user/bog-agents-daemon.service`, started
//! at login, or at boot with lingering) and a system unit
//! (`/etc/systemd/system/bog-agents-daemon.service`, with `User=` and hardening).

use std::path::{Path, PathBuf};

use super::Options;

/// The unit's file name.
pub const UNIT: &str = "bog-agents-daemon.service";

/// Quotes one ExecStart argument for systemd if it needs it.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,@".contains(c))
    {
        arg.to_string()
    } else {
        format!(
            "\"{}\"",
            arg.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

/// The unit text. `system_user` is Some for a system unit.
pub fn unit(o: &Options, system_user: Option<&str>) -> String {
    let mut exec = vec![quote(&o.binary.display().to_string())];
    exec.extend(o.run_args().iter().map(|a| quote(a)));
    let env_file = match (&o.data_dir, system_user) {
        (None, None) => "%h/.bog-agents/daemon/env".to_string(),
        _ => o.effective_data_dir().join("env").display().to_string(),
    };
    let mut s = String::new();
    s.push_str("[Unit]\n");
    s.push_str("Description=bog-agents-daemon: runs AI agents on schedules, file changes, webhooks and git pushes\n");
    s.push_str("Documentation=man:bog-agents-daemon(1)\n");
    s.push_str("After=network-online.target\nWants=network-online.target\n\n");
    s.push_str("[Service]\nType=simple\n");
    if let Some(u) = system_user {
        s.push_str(&format!("User={u}\n"));
    }
    s.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    s.push_str(
        "# Provider keys and output secrets go in this file (NAME=value lines), not in the unit.\n",
    );
    s.push_str(&format!("EnvironmentFile=-{env_file}\n"));
    s.push_str("Restart=on-failure\nRestartSec=5\n");
    s.push_str(&format!(
        "# SIGTERM to the daemon only: it drains its agents ({} s grace), then kills their groups.\n",
        o.grace_seconds
    ));
    s.push_str("KillMode=mixed\nKillSignal=SIGTERM\n");
    s.push_str("# A cgroup subtree of its own: each agent run gets a child cgroup with its memory_mb and\n");
    s.push_str("# max_processes limits, and every process of a run is killed when the run ends.\n");
    s.push_str("Delegate=yes\n");
    s.push_str(&format!("TimeoutStopSec={}\n", o.stop_timeout()));
    if system_user.is_some() {
        s.push_str("# Hardening that still lets agents work in their working_dir under /home, /srv, /opt.\n");
        s.push_str(
            "NoNewPrivileges=yes\nProtectSystem=full\nPrivateTmp=yes\nProtectKernelTunables=yes\n",
        );
        // No ProtectControlGroups: it makes /sys/fs/cgroup read-only, and the daemon makes
        // a cgroup per run in its delegated subtree.
        s.push_str("ProtectKernelModules=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\n");
    }
    s.push_str("\n[Install]\n");
    s.push_str(if system_user.is_some() {
        "WantedBy=multi-user.target\n"
    } else {
        "WantedBy=default.target\n"
    });
    s
}

/// Where the unit goes.
pub fn unit_path(home: &Path, system: bool) -> PathBuf {
    if system {
        PathBuf::from("/etc/systemd/system").join(UNIT)
    } else {
        home.join(".config/systemd/user").join(UNIT)
    }
}

/// Whether systemd is the running init (so `systemctl` calls make sense).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            binary: "/usr/local/bin/bog-agents-daemon".into(),
            port: None,
            bind: None,
            grace: None,
            grace_seconds: 30,
            data_dir: None,
            home: "/home/me".into(),
        }
    }

    #[test]
    fn user_and_system_units() {
        let u = unit(&opts(), None);
        assert!(u.contains("ExecStart=/usr/local/bin/bog-agents-daemon run\n"));
        assert!(u.contains("EnvironmentFile=-%h/.bog-agents/daemon/env\n"));
        assert!(u.contains("KillMode=mixed\n") && u.contains("TimeoutStopSec=45\n"));
        assert!(u.contains("\nDelegate=yes\n"), "{u}");
        assert!(!u.contains("User="));
        let mut o = opts();
        o.data_dir = Some("/srv/bog data".into());
        o.port = Some(7878);
        o.grace_seconds = 120;
        let s = unit(&o, Some("bog"));
        assert!(s.contains("User=bog\n"));
        assert!(s.contains("ExecStart=/usr/local/bin/bog-agents-daemon run --port 7878 --data-dir \"/srv/bog data\"\n"), "{s}");
        assert!(s.contains("EnvironmentFile=-/srv/bog data/env\n"));
        assert!(
            s.contains("TimeoutStopSec=135\n") && s.contains("(120 s grace)"),
            "{s}"
        );
        assert!(s.contains("NoNewPrivileges=yes") && s.contains("WantedBy=multi-user.target"));
        // Delegation needs a writable cgroup tree.
        assert!(s.contains("\nDelegate=yes\n") && !s.contains("ProtectControlGroups"));
    }
}
