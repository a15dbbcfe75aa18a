//! The API's job reads served from memory (issue 11): each job's JSON as `GET /jobs/{id}`
//! shows it, and the whole `GET /jobs` list, kept serialised and dropped when they change.
//! Serialising 100 jobs and recomputing their next fire times per request cost ~30 times what
//! the HTTP layer costs; a read is now a lookup and a copy.
//!
//! A cached view is stale when (a) its job changed (`install`/`forget` in `changes.rs`), (b)
//! the clock published a new plan for it ([`Engine::set_next_fire`]), or (c) its
//! `next_fire_at` has passed (the clock is about to fire it and re-plan). (a) and (b) call
//! [`Views::invalidate`]; (c) is checked per read. A job with a run budget shows its use
//! (`budget_use`): a firing it admits invalidates the view, and the view expires when the
//! oldest counted run leaves a window. Each cached job also keeps the `Arc<Job>`
//! it was made from, so a view is never served for another version of the job even if an
//! invalidation were missed. A generation counter keeps a view computed while an
//! invalidation ran from being stored. The lock is a leaf: nothing else is taken while it is
//! held, and rendering happens outside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{lock, Engine};
use crate::job::Job;

/// Renders one job as the API shows it, given its next fire time.
pub type Render<'a> = &'a dyn Fn(&Job, Option<DateTime<Utc>>) -> Vec<u8>;

#[derive(Clone)]
struct Cached {
    job: Arc<Job>,
    bytes: Arc<[u8]>,
    /// The view's `next_fire_at`: it is stale from then on.
    expires: Option<DateTime<Utc>>,
}

#[derive(Clone)]
struct CachedList {
    bytes: Arc<[u8]>,
    expires: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    /// Bumped by every invalidation.
    generation: u64,
    jobs: HashMap<String, Cached>,
    list: Option<CachedList>,
}

/// The serialised views; see the module doc.
#[derive(Default)]
pub struct Views {
    state: Mutex<State>,
}

fn fresh(expires: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires.is_none_or(|t| now < t)
}

impl Views {
    /// Drops the view of job `id` and the list.
    pub fn invalidate(&self, id: &str) {
        let mut s = lock(&self.state);
        s.generation = s.generation.wrapping_add(1);
        s.jobs.remove(id);
        s.list = None;
    }

    /// Drops every view (SIGHUP).
    pub fn invalidate_all(&self) {
        let mut s = lock(&self.state);
        s.generation = s.generation.wrapping_add(1);
        s.jobs.clear();
        s.list = None;
    }

    fn cached_job(&self, job: &Arc<Job>, now: DateTime<Utc>) -> (Option<Cached>, u64) {
        let s = lock(&self.state);
        let hit = s
            .jobs
            .get(&job.id)
            .filter(|c| Arc::ptr_eq(&c.job, job) && fresh(c.expires, now))
            .cloned();
        (hit, s.generation)
    }
}

impl Engine {
    fn job_view(&self, job: &Arc<Job>, now: DateTime<Utc>, render: Render<'_>) -> Cached {
        let (hit, generation) = self.views.cached_job(job, now);
        if let Some(c) = hit {
            return c;
        }
        let next = self.next_fire(job);
        // A run budget's use drops as its windows slide: stale then too.
        let budget_change = self.budget_use(job).1;
        let c = Cached {
            job: job.clone(),
            bytes: render(job, next).into(),
            expires: next.into_iter().chain(budget_change).min(),
        };
        let mut s = lock(&self.views.state);
        if s.generation == generation {
            s.jobs.insert(job.id.clone(), c.clone());
        }
        c
    }

    /// The JSON of `GET /jobs/{id}` for `job`, from memory when it is still valid.
    pub fn job_json(&self, job: &Arc<Job>, render: Render<'_>) -> Arc<[u8]> {
        self.job_view(job, Utc::now(), render).bytes
    }

    /// The JSON of `GET /jobs` (every job, sorted by name), from memory when still valid.
    pub fn jobs_json(&self, render: Render<'_>) -> Arc<[u8]> {
        let now = Utc::now();
        let generation = {
            let s = lock(&self.views.state);
            if let Some(l) = s.list.as_ref().filter(|l| fresh(l.expires, now)) {
                return l.bytes.clone();
            }
            s.generation
        };
        let jobs = self.jobs();
        let parts: Vec<Cached> = jobs.iter().map(|j| self.job_view(j, now, render)).collect();
        let mut out =
            Vec::with_capacity(2 + parts.iter().map(|c| c.bytes.len() + 1).sum::<usize>());
        out.push(b'[');
        for (i, c) in parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&c.bytes);
        }
        out.push(b']');
        let bytes: Arc<[u8]> = out.into();
        let expires = parts.iter().filter_map(|c| c.expires).min();
        let mut s = lock(&self.views.state);
        if s.generation == generation {
            s.list = Some(CachedList {
                bytes: bytes.clone(),
                expires,
            });
        }
        bytes
    }
}
