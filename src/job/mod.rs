//! Jobs: the model as stored and served ([`model`]) and the validator that turns user JSON
//! into it with field-path errors ([`validate`]).

pub mod model;
pub mod validate;

pub use model::*;
pub use validate::{validate_job, FieldError};
