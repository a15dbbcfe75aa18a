//! A real SMTP server for the email tests: Python's aiosmtpd running `smtp_sink.py`.
//! Panics with install instructions when aiosmtpd is missing (CI installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::wait_for;

/// A running aiosmtpd; killed on drop.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl SmtpSink {
    /// Starts the sink with its files in `dir`; waits until it listens.
    pub fn start(dir: &Path) -> SmtpSink {
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output();
        match check {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "the email tests need Python 3 with aiosmtpd (a real SMTP server): install it with \
                 `python3 -m pip install aiosmtpd` or `apt-get install python3-aiosmtpd` (.ci/run does this)"
            ),
        }
        let script = dir.join("smtp_sink.py");
        std::fs::write(&script, include_str!("smtp_sink.py")).unwrap();
        let out = dir.join("mail.jsonl");
        let port_file = dir.join("smtp.port");
        let err = dir.join("smtp.err");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start python3");
        let port = wait_for(20, "the SMTP server's port file", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "SMTP server exited with {st}: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        SmtpSink { child, port, out }
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("sink JSON line"))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
