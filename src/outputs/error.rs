//! Why a delivery failed, as a value: [`DeliveryError`]. Each target builds the variant
//! that says what happened (a secret that is not set, an HTTP status, a transport error
//! with ureq's cause, an SMTP reply with lettre's, a local write); [`super::dispatch`]
//! turns it into text only when it files it in the run record's `dispatch_errors`.
//!
//! No secret is ever part of one: targets name the variable that holds a secret, never its
//! value, and text that comes from the network (a service's reply, an error message that
//! may quote a URL) passes [`DeliveryError::redact`] before the error leaves the target.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use super::limits::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// A failed delivery to one output. `Display` is the text users see in `dispatch_errors`.
#[derive(Debug)]
pub enum DeliveryError {
    /// The environment variable named by a job field (`token_env`, `hmac_secret_env`, ...)
    /// cannot be used. Nothing was sent.
    Secret {
        var: String,
        field: &'static str,
        problem: SecretProblem,
    },
    /// The email output's SMTP settings (`<prefix>HOST`, ...) are wrong. Nothing was sent.
    SmtpSettings(SmtpSettingsError),
    /// An output setting that validation should have ruled out.
    Config(&'static str),
    /// `github_comment`'s `issue` did not render to a positive number. Nothing was posted.
    IssueNumber {
        template: String,
        /// What it rendered to, cut to 60 characters.
        rendered: String,
        /// Template variables it names that the run's trigger context lacks.
        unknown: Vec<String>,
    },
    /// An e-mail address that lettre does not accept. Nothing was sent.
    Address {
        role: AddressRole,
        address: String,
        source: lettre::address::AddressError,
    },
    /// lettre could not build the mail. Nothing was sent.
    Mail(lettre::error::Error),
    /// A service answered with a status other than 2xx.
    Status {
        /// The endpoint as errors name it (`GitHub POST https://…`), without secrets.
        endpoint: String,
        code: u16,
        /// The reason phrase (`Not Found`).
        reason: String,
        /// The service's own error string, from the reply body.
        service: Option<String>,
        /// For a redirect: where to, as [`super::http::shown_url`] shows it.
        location: Option<String>,
        /// What the status likely means for this target.
        hint: Option<&'static str>,
    },
    /// The request did not get an HTTP answer (DNS, connect, I/O, timeout, bad reply).
    Transport {
        endpoint: String,
        /// What failed, in words (`cannot connect`).
        what: &'static str,
        /// The innermost cause's message (`Connection refused (os error 111)`), redacted.
        detail: String,
        cause: TransportCause,
    },
    /// A 2xx reply that is not the JSON the service promises.
    NotJson { endpoint: String, excerpt: String },
    /// Slack answered `ok: false`.
    Slack {
        channel: Option<String>,
        /// Slack's error code (`not_in_channel`).
        code: String,
    },
    /// lettre could not set up TLS for the SMTP host (only a build with the `tls` feature).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    TlsSetup {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP conversation failed (a reply, a TLS or connection error).
    Smtp {
        endpoint: String,
        /// lettre's message, redacted.
        text: String,
        /// What to check, for the common causes.
        hint: Option<String>,
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP server did not answer one command within the command timeout.
    SmtpTimeout {
        endpoint: String,
        after: Duration,
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP conversation overran the attempt's time and was abandoned (not retried: the
    /// server may still accept the mail).
    Abandoned { endpoint: String, after: Duration },
    /// `file`: the file could not be written.
    File {
        path: String,
        source: std::io::Error,
    },
    /// `stdout`: the daemon's stdout could not be written.
    Stdout(std::io::Error),
    /// Something local that a delivery needs failed (random bytes, a thread, encoding).
    Internal {
        /// What could not be done: `make a delivery id`.
        what: &'static str,
        source: Box<dyn Error + Send + Sync>,
    },
    /// The delivery's thread panicked (the panic is in the daemon's log).
    Panicked,
    /// The last failure of a delivery that was tried more than once, or not retried for a
    /// reason worth saying.
    GaveUp {
        last: Box<DeliveryError>,
        attempts: u32,
        elapsed: Duration,
        why: Option<GiveUp>,
    },
}

/// What is wrong with the variable named by a job field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretProblem {
    Unset,
    Empty,
    NotUnicode,
    /// `webhook_url_env` holds something other than an http:// or https:// URL.
    NotHttpUrl,
}

/// Which address of a mail was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRole {
    From,
    To,
}

/// Why the retry loop stopped before its retries were spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The service asked to wait longer than the daemon waits.
    RetryAfterTooLong { asked: Duration, max: Duration },
    /// The next retry would pass the delivery budget.
    Budget(Duration),
    /// The daemon is stopping.
    Stopping,
}

/// What is wrong with the SMTP settings in the environment; each names its variable and
/// none quotes the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmtpSettingsError {
    HostUnset {
        prefix: String,
    },
    BadPort {
        prefix: String,
        value: String,
    },
    /// `TLS=none` to a host that is not on the loopback interface.
    PlainToRemote {
        prefix: String,
        host: String,
    },
    BadTls {
        prefix: String,
        value: String,
    },
    /// One of `USER` and `PASSWORD` without the other; `set` is the one given.
    HalfCredentials {
        prefix: String,
        set: &'static str,
    },
}

/// ureq's transport error, kept as the cause of [`DeliveryError::Transport`]. Its own
/// `Display` and `Debug` quote the request URL, which can be a secret (a Slack
/// incoming-webhook URL), so neither is ever shown: `Debug` gives its kind, and
/// [`DeliveryError::source`] starts below it, at the error ureq wraps
/// (`Connection refused`, a timeout).
pub struct TransportCause(Box<ureq::Transport>);

impl fmt::Debug for TransportCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ureq::Transport")
            .field("kind", &self.0.kind())
            .finish_non_exhaustive()
    }
}

impl TransportCause {
    /// The innermost error ureq wraps, if any.
    fn root(&self) -> Option<&(dyn Error + 'static)> {
        let mut root = self.0.source()?;
        while let Some(s) = root.source() {
            root = s;
        }
        Some(root)
    }
}

impl DeliveryError {
    /// A transport error from ureq: `what` says what failed; the detail is the innermost
    /// cause's message (ureq nests its errors; that one says "Connection refused").
    pub fn transport(endpoint: &str, what: &'static str, t: ureq::Transport) -> DeliveryError {
        let cause = TransportCause(Box::new(t));
        let detail = match cause.root() {
            Some(r) => r.to_string(),
            None => cause.0.message().unwrap_or_default().to_string(),
        };
        DeliveryError::Transport {
            endpoint: endpoint.to_string(),
            what,
            detail,
            cause,
        }
    }

    /// The HTTP status of the failure (through [`DeliveryError::GaveUp`]), if it is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { code, .. } => Some(*code),
            DeliveryError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Adds `hint` to a status failure (through [`DeliveryError::GaveUp`]).
    pub fn with_status_hint(mut self, hint: &'static str) -> DeliveryError {
        match &mut self {
            DeliveryError::Status { hint: h, .. } => *h = Some(hint),
            DeliveryError::GaveUp { last, .. } => {
                let inner = std::mem::replace(last.as_mut(), DeliveryError::Panicked);
                **last = inner.with_status_hint(hint);
            }
            _ => {}
        }
        self
    }

    /// Whether a timeout ended the request.
    pub fn timed_out(&self) -> bool {
        match self {
            DeliveryError::Transport { detail, cause, .. } => {
                detail.contains("timed out")
                    || cause.root().is_some_and(|r| {
                        r.downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
                    })
            }
            DeliveryError::SmtpTimeout { .. } | DeliveryError::Abandoned { .. } => true,
            DeliveryError::GaveUp { last, .. } => last.timed_out(),
            _ => false,
        }
    }

    /// Replaces every secret value in the text this error quotes from elsewhere (reply
    /// bodies, library messages, endpoints) with `[redacted]`.
    pub fn redact(mut self, secrets: &[String]) -> DeliveryError {
        let r = |s: &mut String| *s = redact(s, secrets);
        match &mut self {
            DeliveryError::Status {
                endpoint,
                reason,
                service,
                location,
                ..
            } => {
                r(endpoint);
                r(reason);
                service.iter_mut().chain(location.iter_mut()).for_each(r);
            }
            DeliveryError::Transport {
                endpoint, detail, ..
            } => {
                r(endpoint);
                r(detail);
            }
            DeliveryError::NotJson { endpoint, excerpt } => {
                r(endpoint);
                r(excerpt);
            }
            DeliveryError::Slack { channel, code } => {
                channel.iter_mut().for_each(r);
                r(code);
            }
            DeliveryError::Smtp { endpoint, text, .. } => {
                r(endpoint);
                r(text);
            }
            DeliveryError::GaveUp { last, .. } => {
                let inner = std::mem::replace(last.as_mut(), DeliveryError::Panicked);
                **last = inner.redact(secrets);
            }
            _ => {}
        }
        self
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Secret {
                var,
                field,
                problem,
            } => {
                let what = match problem {
                    SecretProblem::Unset => "is not set in the daemon's environment",
                    SecretProblem::Empty => "is empty in the daemon's environment",
                    SecretProblem::NotUnicode => "is not valid UTF-8",
                    SecretProblem::NotHttpUrl => "does not hold an http:// or https:// URL",
                };
                write!(
                    f,
                    "environment variable {var} (named by {field}) {what}; nothing was sent"
                )
            }
            DeliveryError::SmtpSettings(e) => write!(f, "{e}"),
            DeliveryError::Config(e) => write!(f, "{e}"),
            DeliveryError::IssueNumber {
                template,
                rendered,
                unknown,
            } => {
                write!(
                    f,
                    "issue \"{template}\" rendered to \"{rendered}\", which is not a positive issue number"
                )?;
                if !unknown.is_empty() {
                    write!(f, " ({} not in this run's trigger context)", unknown.join(", "))?;
                }
                write!(f, "; nothing was posted")
            }
            DeliveryError::Address {
                role: AddressRole::From,
                address,
                source,
            } => write!(
                f,
                "cannot send from \"{address}\": {source} (set \"from\" in the output); nothing was sent"
            ),
            DeliveryError::Address {
                role: AddressRole::To,
                address,
                source,
            } => write!(f, "cannot send to \"{address}\": {source}; nothing was sent"),
            DeliveryError::Mail(e) => write!(f, "cannot build the mail: {e}; nothing was sent"),
            DeliveryError::Status {
                endpoint,
                code,
                reason,
                service,
                location,
                hint,
            } => {
                write!(f, "{endpoint}: HTTP {code}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                if let Some(m) = service {
                    write!(f, ": {m}")?;
                }
                if (300..400).contains(code) {
                    match location {
                        Some(l) => write!(
                            f,
                            " (redirects are not followed; point the output at {l})"
                        )?,
                        None => write!(f, " (redirects are not followed)")?,
                    }
                }
                if let Some(h) = hint {
                    write!(f, " ({h})")?;
                }
                Ok(())
            }
            DeliveryError::Transport {
                endpoint,
                what,
                detail,
                ..
            } => {
                write!(f, "{endpoint}: {what}")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                if self.timed_out() {
                    write!(
                        f,
                        " (timeouts: {} s to connect, {} s per request)",
                        CONNECT_TIMEOUT.as_secs(),
                        REQUEST_TIMEOUT.as_secs()
                    )?;
                }
                Ok(())
            }
            DeliveryError::NotJson { endpoint, excerpt } => {
                write!(f, "{endpoint}: the reply is not JSON: {excerpt}")
            }
            DeliveryError::Slack { channel, code } => {
                let hint = match code.as_str() {
                    "not_authed" | "invalid_auth" | "token_revoked" | "token_expired"
                    | "account_inactive" => {
                        " (check the bot token in the variable named by token_env)"
                    }
                    "channel_not_found" => {
                        " (check the channel name or ID, and that the bot can see it)"
                    }
                    "not_in_channel" => " (invite the app to the channel first)",
                    "missing_scope" => " (the token needs the chat:write scope)",
                    _ => "",
                };
                write!(
                    f,
                    "Slack chat.postMessage to {}: ok=false, error \"{code}\"{hint}",
                    channel.as_deref().unwrap_or("(no channel)")
                )
            }
            DeliveryError::TlsSetup { host, source } => {
                write!(f, "cannot set up TLS for {host}: {source}")
            }
            DeliveryError::Smtp {
                endpoint,
                text,
                hint,
                ..
            } => {
                write!(f, "{endpoint}: {text}")?;
                if let Some(h) = hint {
                    write!(f, " ({h})")?;
                }
                Ok(())
            }
            DeliveryError::SmtpTimeout {
                endpoint, after, ..
            } => write!(
                f,
                "{endpoint}: timed out: no answer from the server within {} s",
                after.as_secs()
            ),
            DeliveryError::Abandoned { endpoint, after } => write!(
                f,
                "{endpoint}: the SMTP conversation did not finish within {} s; abandoned, not retried (the mail may still arrive)",
                after.as_secs()
            ),
            DeliveryError::File { path, source } => write!(f, "cannot write {path}: {source}"),
            DeliveryError::Stdout(e) => write!(f, "cannot write to the daemon's stdout: {e}"),
            DeliveryError::Internal { what, source } => write!(f, "cannot {what}: {source}"),
            DeliveryError::Panicked => {
                write!(f, "internal error while delivering (see the daemon's log)")
            }
            DeliveryError::GaveUp {
                last,
                attempts,
                elapsed,
                why,
            } => {
                write!(f, "{last}")?;
                let why = why.map(|w| match w {
                    GiveUp::RetryAfterTooLong { asked, max } => format!(
                        "not retried: the service asked to wait {} s, longer than the {} s the daemon waits",
                        asked.as_secs(),
                        max.as_secs()
                    ),
                    GiveUp::Budget(b) => format!(
                        "the next retry would pass the {} s delivery budget",
                        b.as_secs()
                    ),
                    GiveUp::Stopping => "not retried: the daemon is stopping".to_string(),
                });
                match (attempts, why) {
                    (2.., why) => {
                        write!(
                            f,
                            " (gave up after {attempts} attempts in {:.1} s",
                            elapsed.as_secs_f64()
                        )?;
                        if let Some(w) = why {
                            write!(f, "; {w}")?;
                        }
                        write!(f, ")")
                    }
                    (_, Some(w)) => write!(f, " ({w})"),
                    (_, None) => Ok(()),
                }
            }
        }
    }
}

impl Error for DeliveryError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            DeliveryError::SmtpSettings(e) => Some(e),
            DeliveryError::Address { source, .. } => Some(source),
            DeliveryError::Mail(e) => Some(e),
            DeliveryError::Transport { cause, .. } => cause.root(),
            DeliveryError::TlsSetup { source, .. }
            | DeliveryError::Smtp { source, .. }
            | DeliveryError::SmtpTimeout { source, .. } => Some(source),
            DeliveryError::File { source, .. } | DeliveryError::Stdout(source) => Some(source),
            DeliveryError::Internal { source, .. } => Some(source.as_ref()),
            DeliveryError::GaveUp { last, .. } => Some(last.as_ref()),
            _ => None,
        }
    }
}

impl From<SmtpSettingsError> for DeliveryError {
    fn from(e: SmtpSettingsError) -> DeliveryError {
        DeliveryError::SmtpSettings(e)
    }
}

impl fmt::Display for SmtpSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpSettingsError::HostUnset { prefix } => write!(
                f,
                "environment variable {prefix}HOST (from smtp_env_prefix \"{prefix}\") is not set in the daemon's environment"
            ),
            SmtpSettingsError::BadPort { prefix, value } => {
                write!(f, "{prefix}PORT is \"{value}\", not a port number")
            }
            SmtpSettingsError::PlainToRemote { prefix, host } => write!(
                f,
                "{prefix}TLS=none sends the mail and the password unencrypted, so it is only used with a loopback host, and {host} is not one; use starttls or tls, or {prefix}TLS=none-force to send in clear text anyway"
            ),
            SmtpSettingsError::BadTls { prefix, value } => write!(
                f,
                "{prefix}TLS is \"{value}\": expected starttls, tls, none (loopback hosts only) or none-force"
            ),
            SmtpSettingsError::HalfCredentials { prefix, set } => {
                let other = if *set == "USER" { "PASSWORD" } else { "USER" };
                write!(f, "{prefix}{set} is set but {prefix}{other} is not")
            }
        }?;
        write!(f, "; nothing was sent")
    }
}

impl Error for SmtpSettingsError {}

/// `text` with every secret value replaced by `[redacted]`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        t = t.replace(s.as_str(), "[redacted]");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_every_secret() {
        assert_eq!(
            redact("a tok b tok", &["tok".into(), String::new()]),
            "a [redacted] b [redacted]"
        );
    }

    fn status(code: u16) -> DeliveryError {
        DeliveryError::Status {
            endpoint: "GitHub POST https://api.example/x".into(),
            code,
            reason: "Not Found".into(),
            service: Some("Not Found tok".into()),
            location: None,
            hint: None,
        }
    }

    #[test]
    fn hints_and_redaction_reach_the_last_failure() {
        let e = DeliveryError::GaveUp {
            last: Box::new(status(404)),
            attempts: 1,
            elapsed: Duration::ZERO,
            why: Some(GiveUp::Stopping),
        };
        assert_eq!(e.status(), Some(404));
        let e = e.with_status_hint("check it").redact(&["tok".into()]);
        assert_eq!(
            e.to_string(),
            "GitHub POST https://api.example/x: HTTP 404 Not Found: Not Found [redacted] (check it) (not retried: the daemon is stopping)"
        );
        assert!(e
            .source()
            .is_some_and(|s| s.to_string().contains("(check it)")));
    }

    #[test]
    fn transport_errors_show_and_keep_the_innermost_cause_never_the_url() {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .build();
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let t = match agent.post("http://127.0.0.1:9/secret-path").call() {
            Err(ureq::Error::Transport(t)) => t,
            other => panic!("expected a transport error, got {other:?}"),
        };
        let e = DeliveryError::transport("webhook POST (URL from $X)", "cannot connect", t);
        let text = e.to_string();
        assert!(
            text.starts_with("webhook POST (URL from $X): cannot connect: "),
            "{text}"
        );
        assert!(!text.contains("secret-path"), "{text}");
        assert!(!format!("{e:?}").contains("secret-path"));
        let src = e.source().expect("the cause is kept");
        assert!(!src.to_string().contains("secret-path"), "{src}");
        assert!(src.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn smtp_settings_errors_name_the_variable() {
        let e = SmtpSettingsError::HalfCredentials {
            prefix: "M_".into(),
            set: "PASSWORD",
        };
        assert_eq!(
            DeliveryError::from(e).to_string(),
            "M_PASSWORD is set but M_USER is not; nothing was sent"
        );
    }
}
