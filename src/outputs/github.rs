//! `github_comment`: `POST {api_url}/repos/{repo}/issues/{issue}/comments` with the run as
//! a Markdown comment. `issue` may be a template rendered from the firing's context, so a
//! job fired by a GitHub webhook can comment on the pull request that fired it
//! (`{{payload.pull_request.number}}`); a value that is not a positive number is an error.

use serde_json::json;

use super::error::DeliveryError;
use super::http::{self, Post};
use super::Ctx;
use crate::job::Job;
use crate::run::RunRecord;

/// GitHub's limit on a comment body, in characters.
pub const MAX_BODY_CHARS: usize = 65_536;
/// Room kept for the truncation note and fences.
const NOTE_ROOM: usize = 200;

/// Comments on the issue or pull request.
pub fn deliver(
    repo: &str,
    issue: &str,
    token_env: &str,
    api_url: &str,
    job: &Job,
    run: &RunRecord,
    ctx: &Ctx,
) -> Result<(), DeliveryError> {
    let number = issue_number(issue, ctx.vars)?;
    let token = super::secret_env(token_env, "token_env")?;
    let url = format!(
        "{}/repos/{repo}/issues/{number}/comments",
        api_url.trim_end_matches('/')
    );
    let post = Post {
        url: &url,
        shown_as: format!("GitHub POST {}", http::shown_url(&url)),
        headers: vec![
            ("Accept".into(), "application/vnd.github+json".into()),
            ("X-GitHub-Api-Version".into(), "2022-11-28".into()),
            ("Authorization".into(), format!("Bearer {token}")),
        ],
        body: json!({"body": comment(job, run)}).to_string().into_bytes(),
        secrets: vec![token],
    };
    http::post(&post, ctx.retries, ctx.stop)
        .map(|_| ())
        .map_err(|e| match e.status() {
            Some(404) => e.with_status_hint(
                "the repository or issue does not exist, or the token cannot see it",
            ),
            _ => e,
        })
}

/// The issue number: the literal, or the template rendered against the firing's template
/// variables.
fn issue_number(issue: &str, vars: &serde_json::Value) -> Result<u64, DeliveryError> {
    let (text, unknown) = crate::template::render(issue, vars);
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => {
            let mut shown: String = text.chars().take(60).collect();
            if text.chars().count() > 60 {
                shown.push('…');
            }
            Err(DeliveryError::IssueNumber {
                template: issue.to_string(),
                rendered: shown,
                unknown,
            })
        }
    }
}

/// The comment: a summary line, the error if any, and the output in a fenced block, all
/// within [`MAX_BODY_CHARS`].
pub fn comment(job: &Job, run: &RunRecord) -> String {
    let mut c = format!(
        "**{}** {} (trigger: {}, duration: {}, run `{}`)\n",
        job.name,
        super::status_words(run),
        super::trigger_name(run),
        super::human_duration(run.duration_ms),
        run.id
    );
    if let Some(e) = &run.error {
        let e: String = e.chars().take(2000).collect();
        c.push_str(&format!("\n> error: {}\n", e.replace('\n', " ")));
    }
    let out = run.output.trim_end();
    if out.is_empty() {
        c.push_str("\n_(no output)_\n");
        return c;
    }
    // A fence longer than any run of backticks in the output cannot be closed by it.
    let fence = "`".repeat(longest_backtick_run(out).max(2) + 1);
    let room = MAX_BODY_CHARS.saturating_sub(c.chars().count() + 2 * fence.len() + NOTE_ROOM);
    let max_bytes = out.char_indices().nth(room).map_or(out.len(), |(i, _)| i);
    let (kept, note) = super::cut(out, max_bytes, &run.id);
    c.push_str(&format!("\n{fence}\n{kept}\n{fence}\n"));
    if let Some(n) = note {
        c.push_str(&format!("\n{n}\n"));
    }
    c
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStatus;

    fn job() -> Job {
        crate::job::validate_job(
            &json!({"name": "review", "prompt": "p", "triggers": [{"type": "interval", "seconds": 9}]}),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    fn run(trigger: serde_json::Value, output: String) -> RunRecord {
        let mut r = RunRecord::queued("run_7".into(), "job_1", "review", trigger);
        r.status = RunStatus::Succeeded;
        r.output = output;
        r
    }

    #[test]
    fn issue_templates_render_from_the_firing_context() {
        let r = run(
            json!({"type": "webhook", "path": "/hooks/gh"}),
            String::new(),
        );
        let mut extra = serde_json::Map::new();
        extra.insert("payload".into(), json!({"pull_request": {"number": 42}}));
        let vars = crate::worker::template_vars(&job(), &r.trigger, &extra);
        assert_eq!(
            issue_number("{{payload.pull_request.number}}", &vars).ok(),
            Some(42)
        );
        assert_eq!(issue_number("7", &vars).ok(), Some(7));
        let e = issue_number("{{payload.issue.number}}", &vars)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rendered to \"\"") && e.contains("payload.issue.number not in"),
            "{e}"
        );
        let e = issue_number("{{trigger}}", &vars).unwrap_err().to_string();
        assert!(e.contains("rendered to \"webhook\""), "{e}");
    }

    #[test]
    fn long_output_fits_githubs_limit_with_a_note() {
        let r = run(
            json!({"type": "manual"}),
            format!("```\n{}", "é".repeat(70_000)),
        );
        let c = comment(&job(), &r);
        assert!(c.chars().count() <= MAX_BODY_CHARS, "{}", c.chars().count());
        assert!(
            c.contains("\n````\n```\n"),
            "fence longer than the output's backticks"
        );
        assert!(c.contains("bytes more; full output in run run_7)"));
        let short = comment(&job(), &run(json!({"type": "manual"}), "hi\n".into()));
        assert_eq!(
            short,
            "**review** succeeded (trigger: manual, duration: -, run `run_7`)\n\n```\nhi\n```\n"
        );
    }
}
