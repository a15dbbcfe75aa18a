//! The job table: jobs by id and by name, and the index of webhook paths. Plain data with no
//! locks and no I/O; the engine keeps it behind one lock and is its only writer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::job::{Job, Trigger};

/// Every loaded job, findable by id, by name, and by the webhook paths it listens on.
#[derive(Default)]
pub struct JobTable {
    by_id: HashMap<String, Arc<Job>>,
    by_name: HashMap<String, String>,
    /// Webhook path → ids of the jobs with a webhook trigger on it.
    hooks: HashMap<String, Vec<String>>,
}

impl JobTable {
    /// A table of `jobs` (their names are unique: the store refuses duplicates).
    pub fn new(jobs: Vec<Job>) -> JobTable {
        let mut t = JobTable::default();
        for j in jobs {
            t.insert(Arc::new(j));
        }
        t
    }

    /// A job by id, else by name.
    pub fn get(&self, id_or_name: &str) -> Option<Arc<Job>> {
        self.by_id.get(id_or_name).cloned().or_else(|| {
            self.by_name
                .get(id_or_name)
                .and_then(|id| self.by_id.get(id))
                .cloned()
        })
    }

    /// A job by id only.
    pub fn by_id(&self, id: &str) -> Option<Arc<Job>> {
        self.by_id.get(id).cloned()
    }

    /// All jobs, sorted by name.
    pub fn sorted(&self) -> Vec<Arc<Job>> {
        let mut v: Vec<_> = self.by_id.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Adds a job, or replaces the version with the same id (its old name and webhook
    /// paths are forgotten).
    pub fn insert(&mut self, job: Arc<Job>) {
        self.remove(&job.id);
        for p in hook_paths(&job) {
            let ids = self.hooks.entry(p).or_default();
            if !ids.contains(&job.id) {
                ids.push(job.id.clone());
            }
        }
        self.by_name.insert(job.name.clone(), job.id.clone());
        self.by_id.insert(job.id.clone(), job);
    }

    /// Removes a job by id; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Job>> {
        let old = self.by_id.remove(id)?;
        if self.by_name.get(&old.name) == Some(&old.id) {
            self.by_name.remove(&old.name);
        }
        for p in hook_paths(&old) {
            if let Some(ids) = self.hooks.get_mut(&p) {
                ids.retain(|i| i != &old.id);
                if ids.is_empty() {
                    self.hooks.remove(&p);
                }
            }
        }
        Some(old)
    }

    /// The jobs with a webhook trigger on `path`.
    pub fn hook_jobs(&self, path: &str) -> Vec<Arc<Job>> {
        self.hooks
            .get(path)
            .map(|ids| ids.iter().filter_map(|id| self.by_id(id)).collect())
            .unwrap_or_default()
    }
}

/// The webhook paths a job listens on.
fn hook_paths(job: &Job) -> Vec<String> {
    job.triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Webhook { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, name: &str, hooks: &[&str]) -> Arc<Job> {
        let triggers: Vec<serde_json::Value> = hooks
            .iter()
            .map(|p| serde_json::json!({"type": "webhook", "path": p, "secret_env": "S"}))
            .collect();
        let v = serde_json::json!({
            "name": name, "prompt": "p", "agent": {"command": ["true"]},
            "triggers": if triggers.is_empty() {
                serde_json::json!([{"type": "interval", "seconds": 60}])
            } else {
                serde_json::Value::Array(triggers)
            },
        });
        Arc::new(crate::job::validate_job(&v, id, "2026-01-01T00:00:00Z").expect("valid job"))
    }

    #[test]
    fn finds_by_id_name_and_hook_and_forgets_old_versions() {
        let mut t = JobTable::new(Vec::new());
        t.insert(job("job_a", "alpha", &["/hooks/x", "/hooks/y"]));
        t.insert(job("job_b", "beta", &["/hooks/x"]));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("alpha").map(|j| j.id.clone()), Some("job_a".into()));
        assert_eq!(t.get("job_b").map(|j| j.name.clone()), Some("beta".into()));
        assert_eq!(t.hook_jobs("/hooks/x").len(), 2);
        // A new version renames alpha and drops /hooks/y.
        t.insert(job("job_a", "gamma", &["/hooks/x"]));
        assert!(t.get("alpha").is_none());
        assert_eq!(t.get("gamma").map(|j| j.id.clone()), Some("job_a".into()));
        assert!(t.hook_jobs("/hooks/y").is_empty());
        assert_eq!(t.hook_jobs("/hooks/x").len(), 2);
        let names: Vec<_> = t.sorted().iter().map(|j| j.name.clone()).collect();
        assert_eq!(names, ["beta", "gamma"]);
        assert!(t.remove("job_b").is_some());
        assert_eq!(t.hook_jobs("/hooks/x").len(), 1);
        assert!(t.remove("job_b").is_none());
        assert_eq!(t.len(), 1);
    }
}
