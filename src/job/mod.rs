//! Jobs: the model as stored and served ([`model`]), the JSON a user writes as types
//! (`input`), and the validator that turns it into the model with field-path errors
//! ([`validate`]).

mod input;
pub mod model;
pub mod validate;

pub use model::*;
pub use validate::{validate_job, FieldError};
