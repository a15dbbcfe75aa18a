//! `email`: a plain-text mail per run, sent with lettre's blocking SMTP client over rustls.
//!
//! Server settings come from the environment at dispatch time, under the output's
//! `smtp_env_prefix` (default `SMTP_`): `HOST` (required), `PORT` (587), `USER` and
//! `PASSWORD` (both or neither), `TLS`: `starttls` (default; the server must offer it),
//! `tls` (implicit TLS, usually port 465), `none` (plain text, only to a loopback host such
//! as a local relay) or `none-force` (plain text to any host: the password and the mail
//! cross the network readable).
//!
//! Connection errors, timeouts and 4xx SMTP replies are retried; 5xx replies, TLS and
//! authentication failures are not. Each SMTP command has a timeout, and each attempt a
//! total one: a server that never finishes cannot hold the worker.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::SmtpTransportBuilder;
use lettre::{Message, SmtpTransport, Transport};

use super::error::{AddressRole, DeliveryError, SmtpSettingsError};
use super::retry::{self, Failure};
use super::Ctx;
use crate::job::Job;
use crate::run::RunRecord;

/// Timeout of the connection and of each SMTP command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time for one whole SMTP conversation.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of output in a mail body.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const DEFAULT_PORT: u16 = 587;

/// How the connection is protected (`<prefix>TLS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    StartTls,
    Implicit,
    Plain,
}

/// The SMTP server settings read from the environment.
#[derive(Debug, PartialEq)]
struct Settings {
    /// `smtp_env_prefix`, for error texts.
    prefix: String,
    host: String,
    port: u16,
    security: Security,
    /// User and password.
    credentials: Option<(String, String)>,
}

/// Mails the run to every address in `to`.
pub fn deliver(
    to: &[String],
    from: Option<&str>,
    prefix: &str,
    job: &Job,
    run: &RunRecord,
    ctx: &Ctx,
) -> Result<(), DeliveryError> {
    let s = Settings::from_env(prefix, |k| std::env::var(k).ok())?;
    let secrets: Vec<String> = s.credentials.iter().map(|(_, p)| p.clone()).collect();
    let msg = message(to, from, job, run)?;
    let transport = transport(&s)?;
    let shown = format!("SMTP {}:{}", s.host, s.port);
    retry::run(ctx.retries, ctx.stop, |left| {
        send_once(&transport, &msg, &shown, &s, left)
    })
    .map_err(|e| e.redact(&secrets))
}

impl Settings {
    /// Reads `<prefix>HOST` and the rest through `get`; errors name the variable, and never
    /// quote the password.
    fn from_env(
        prefix: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SmtpSettingsError> {
        let var = |k: &str| get(&format!("{prefix}{k}")).filter(|v| !v.is_empty());
        let prefix_s = || prefix.to_string();
        let host =
            var("HOST").ok_or_else(|| SmtpSettingsError::HostUnset { prefix: prefix_s() })?;
        let port = match var("PORT") {
            None => DEFAULT_PORT,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| SmtpSettingsError::BadPort {
                    prefix: prefix_s(),
                    value: p.clone(),
                })?,
        };
        let tls = var("TLS").unwrap_or_else(|| "starttls".into());
        let security = match tls.trim().to_ascii_lowercase().as_str() {
            "starttls" => Security::StartTls,
            "tls" => Security::Implicit,
            "none" if is_loopback(&host) => Security::Plain,
            "none" => {
                return Err(SmtpSettingsError::PlainToRemote {
                    prefix: prefix_s(),
                    host,
                })
            }
            "none-force" => Security::Plain,
            other => {
                return Err(SmtpSettingsError::BadTls {
                    prefix: prefix_s(),
                    value: other.to_string(),
                })
            }
        };
        let credentials = match (var("USER"), var("PASSWORD")) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SmtpSettingsError::HalfCredentials {
                    prefix: prefix_s(),
                    set: "USER",
                })
            }
            (None, Some(_)) => {
                return Err(SmtpSettingsError::HalfCredentials {
                    prefix: prefix_s(),
                    set: "PASSWORD",
                })
            }
        };
        Ok(Settings {
            prefix: prefix.to_string(),
            host,
            port,
            security,
            credentials,
        })
    }
}

/// `localhost`, or an IP address on the loopback interface.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn transport(s: &Settings) -> Result<SmtpTransport, DeliveryError> {
    let b = SmtpTransport::builder_dangerous(s.host.as_str())
        .port(s.port)
        .timeout(Some(COMMAND_TIMEOUT));
    let mut b = with_tls(b, s)?;
    if let Some((u, p)) = &s.credentials {
        b = b.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(b.build())
}

/// The connection's TLS as `s.security` asks.
#[cfg(feature = "tls")]
fn with_tls(b: SmtpTransportBuilder, s: &Settings) -> Result<SmtpTransportBuilder, DeliveryError> {
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    let tls_params = || {
        TlsParameters::new(s.host.clone()).map_err(|source| DeliveryError::TlsSetup {
            host: s.host.clone(),
            source,
        })
    };
    Ok(b.tls(match s.security {
        Security::StartTls => Tls::Required(tls_params()?),
        Security::Implicit => Tls::Wrapper(tls_params()?),
        Security::Plain => Tls::None,
    }))
}

/// A build without the `tls` feature (Cargo.toml) sends in clear text only.
#[cfg(not(feature = "tls"))]
fn with_tls(b: SmtpTransportBuilder, s: &Settings) -> Result<SmtpTransportBuilder, DeliveryError> {
    match s.security {
        Security::Plain => Ok(b),
        _ => Err(DeliveryError::Config(
            "this build of the daemon has no TLS (built without the `tls` feature); use TLS=none with a loopback relay, or a build with TLS; nothing was sent",
        )),
    }
}

/// Whether the error is the TLS layer's (never, without the `tls` feature).
fn is_tls(e: &lettre::transport::smtp::Error) -> bool {
    #[cfg(feature = "tls")]
    return e.is_tls();
    #[cfg(not(feature = "tls"))]
    return {
        let _ = e;
        false
    };
}

/// One SMTP conversation on a helper thread, waited for at most `left` (and at most
/// [`ATTEMPT_TIMEOUT`]). A conversation that overruns is abandoned and not retried: the
/// server may still accept the mail, and a retry would send it twice.
fn send_once(
    transport: &SmtpTransport,
    msg: &Message,
    shown: &str,
    s: &Settings,
    left: Duration,
) -> Result<(), Failure> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (t, m) = (transport.clone(), msg.clone());
    std::thread::Builder::new()
        .name("smtp-send".into())
        .spawn(move || {
            let _ = tx.send(t.send(&m));
        })
        .map_err(|e| {
            Failure::transient(DeliveryError::Internal {
                what: "start a thread for SMTP",
                source: e.into(),
            })
        })?;
    let wait = left.min(ATTEMPT_TIMEOUT);
    match rx.recv_timeout(wait) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(e, shown, s)),
        Err(_) => Err(Failure::permanent(DeliveryError::Abandoned {
            endpoint: shown.to_string(),
            after: wait,
        })),
    }
}

/// Turns a lettre error into a failure (lettre's error its cause) with the retry verdict.
fn classify(e: lettre::transport::smtp::Error, shown: &str, s: &Settings) -> Failure {
    let p = &s.prefix;
    let text = e.to_string();
    if is_timeout(&e) && !e.is_permanent() {
        return Failure::transient(DeliveryError::SmtpTimeout {
            endpoint: shown.to_string(),
            after: COMMAND_TIMEOUT,
            source: e,
        });
    }
    let (hint, transient) = if e.is_permanent() {
        let auth = text.contains("(535)") || text.contains("(534)") || text.contains("(530)");
        (
            auth.then(|| format!("check {p}USER and {p}PASSWORD")),
            false,
        )
    } else if e.is_transient() {
        (None, true)
    } else if is_tls(&e) {
        let hint = match s.security {
            Security::Implicit => format!("{p}TLS=tls expects implicit TLS (usually port 465); for port 587 use starttls"),
            _ => format!("{p}TLS=starttls; for implicit TLS (usually port 465) use tls; the certificate must be valid for {}", s.host),
        };
        (Some(hint), false)
    } else if e.is_client() || e.is_response() {
        let hint = text.contains("STARTTLS is not supported").then(|| {
            "the server does not offer STARTTLS: use a server that does, tls for implicit TLS, or none for a loopback relay".to_string()
        });
        (hint, false)
    } else {
        // Connection and network errors: refused, reset, unreachable.
        (None, true)
    };
    let error = DeliveryError::Smtp {
        endpoint: shown.to_string(),
        text,
        hint,
        source: e,
    };
    if transient {
        Failure::transient(error)
    } else {
        Failure::permanent(error)
    }
}

/// Whether an I/O timeout caused `e`. A socket read timeout is `WouldBlock` (EAGAIN) on
/// Linux, which lettre's own `is_timeout` does not count.
fn is_timeout(e: &lettre::transport::smtp::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
        }
        src = s.source();
    }
    false
}

/// The mail: `[bog-agents] <job> <status>`, Date, a Message-ID unique to this delivery
/// (kept across retries), and a plain-text body.
fn message(
    to: &[String],
    from: Option<&str>,
    job: &Job,
    run: &RunRecord,
) -> Result<Message, DeliveryError> {
    let host = hostname();
    let from_text = from
        .map(str::to_string)
        .unwrap_or_else(|| format!("bog-agents-daemon@{host}"));
    let from_mb: Mailbox = from_text.parse().map_err(|source| DeliveryError::Address {
        role: AddressRole::From,
        address: from_text.clone(),
        source,
    })?;
    let mut nonce = [0u8; 6];
    crate::ids::random_bytes(&mut nonce).map_err(|e| DeliveryError::Internal {
        what: "make a Message-ID",
        source: e.into(),
    })?;
    let mut b = Message::builder()
        .from(from_mb)
        .subject(format!("[bog-agents] {} {}", job.name, run.status.as_str()))
        .date_now()
        .message_id(Some(format!(
            "<{}.{}@{host}>",
            run.id,
            crate::ids::hex(&nonce)
        )))
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        let mb: Mailbox = a.parse().map_err(|source| DeliveryError::Address {
            role: AddressRole::To,
            address: a.clone(),
            source,
        })?;
        b = b.to(mb);
    }
    b.body(body(job, run)).map_err(DeliveryError::Mail)
}

/// The plain-text body: what ran and how it ended, then the output.
fn body(job: &Job, run: &RunRecord) -> String {
    let mut status = super::status_words(run).to_string();
    if let Some(c) = run.exit_code {
        status.push_str(&format!(" (exit code {c})"));
    }
    let mut b = format!("Job:      {} ({})\nStatus:   {status}\n", job.name, job.id);
    if let Some(e) = &run.error {
        b.push_str(&format!("Error:    {e}\n"));
    }
    b.push_str(&format!(
        "Trigger:  {}\nRun:      {}\nStarted:  {}\nFinished: {}\nDuration: {}\n\n",
        super::trigger_name(run),
        run.id,
        run.started_at.as_deref().unwrap_or("-"),
        run.finished_at.as_deref().unwrap_or("-"),
        super::human_duration(run.duration_ms),
    ));
    let out = run.output.trim_end();
    if out.is_empty() {
        b.push_str("(no output)\n");
        return b;
    }
    let (kept, note) = super::cut(out, MAX_OUTPUT_BYTES, &run.id);
    b.push_str("--- output ---\n");
    b.push_str(kept);
    b.push('\n');
    if let Some(n) = note {
        b.push_str(&format!("{n}\n"));
    }
    b
}

/// This machine's host name (as sent in EHLO), for the default sender and Message-ID.
fn hostname() -> String {
    match ClientId::default() {
        ClientId::Domain(d) if !d.is_empty() => d,
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SmtpSettingsError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env("M_", |k| m.get(k).cloned())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        settings(vars).unwrap_err().to_string()
    }

    #[test]
    fn settings_defaults_and_errors_name_the_variable() {
        let s = settings(&[("M_HOST", "mail.example.com")]).unwrap();
        assert_eq!(
            s,
            Settings {
                prefix: "M_".into(),
                host: "mail.example.com".into(),
                port: 587,
                security: Security::StartTls,
                credentials: None
            }
        );
        assert!(error(&[]).contains("M_HOST"));
        let e = error(&[("M_HOST", "h"), ("M_PORT", "x")]);
        assert!(e.contains("M_PORT is \"x\""), "{e}");
        let e = error(&[("M_HOST", "h"), ("M_USER", "u")]);
        assert!(e.contains("M_PASSWORD is not"), "{e}");
        let e = error(&[("M_HOST", "h"), ("M_PASSWORD", "hunter2")]);
        assert!(!e.contains("hunter2"), "{e}");
        let e = error(&[("M_HOST", "h"), ("M_TLS", "ssl")]);
        assert!(e.contains("expected starttls"), "{e}");
    }

    #[test]
    fn plain_text_only_to_loopback_unless_forced() {
        let e = error(&[("M_HOST", "mail.example.com"), ("M_TLS", "none")]);
        assert!(e.contains("none-force"), "{e}");
        for h in ["localhost", "127.0.0.1", "::1", "[::1]", "127.1.2.3"] {
            let s = settings(&[("M_HOST", h), ("M_TLS", "none")]).unwrap();
            assert_eq!(s.security, Security::Plain, "{h}");
        }
        let s = settings(&[("M_HOST", "mail.example.com"), ("M_TLS", "none-force")]).unwrap();
        assert_eq!(s.security, Security::Plain);
        let s = settings(&[("M_HOST", "h"), ("M_TLS", "tls"), ("M_PORT", "465")]).unwrap();
        assert_eq!((s.security, s.port), (Security::Implicit, 465));
    }

    #[test]
    fn body_names_the_run_and_cuts_long_output() {
        let j = crate::job::validate_job(
            &serde_json::json!({"name": "n", "prompt": "p", "triggers": [{"type": "interval", "seconds": 9}]}),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        let mut r = RunRecord::queued(
            "run_1".into(),
            "job_1",
            "n",
            serde_json::json!({"type": "cron"}),
        );
        r.status = crate::run::RunStatus::Failed;
        r.exit_code = Some(2);
        r.output = "x".repeat(MAX_OUTPUT_BYTES + 10);
        let b = body(&j, &r);
        assert!(
            b.starts_with("Job:      n (job_1)\nStatus:   failed (exit code 2)\nTrigger:  cron\n"),
            "{}",
            &b[..100]
        );
        assert!(b.ends_with("(truncated, 10 bytes more; full output in run run_1)\n"));
        let m = message(
            &["a@example.com".into(), "B <b@example.com>".into()],
            None,
            &j,
            &r,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&m.formatted()).into_owned();
        assert!(
            text.contains("Subject: [bog-agents] n failed\r\n"),
            "{}",
            &text[..400]
        );
        assert!(text.contains("Message-ID: <run_1."));
        assert!(text.contains("Date: "));
    }
}
