//! Jobs: the model as stored and served ([`model`]), the JSON a user writes as types
//! (`input`), and the validator that turns it into the model with field-path errors
//! ([`validate`]).

mod input;
pub mod model;
pub mod validate;

pub use model::*;
pub use validate::{validate_job, FieldError};

use serde_json::Value;

/// Applies an RFC 7396 JSON merge patch to a job's JSON: `PATCH /jobs/{id}` and the CLI's
/// `job set`/`job edit` (offline) both change a job this one way.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}
