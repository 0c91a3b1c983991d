//! The Docker backend: every engine call of the launcher's runtime, by what it does.
//!
//! | module | what |
//! |---|---|
//! | [`backend`] | [`DockerBackend`]: the [`crate::runtime::backend::Backend`] trait over these |
//! | [`probe`] | connecting, engine facts, which OCI runtime works (probe containers) |
//! | [`networks`] | the internal network, the egress network, subnet allocation |
//! | [`container_spec`] | the sidecar's and the agent's container specs (pure data) |
//! | [`model_spec`] | a model sidecar's container spec (pure data) |
//! | [`models`] | model sidecars: create, start, readiness (probed from the sidecar) |
//! | [`containers`] | creating, attaching, killing and removing containers |
//! | [`gate`] | the sidecar's wiring: create, attach, join, start with its bootstrap, ready |
//! | [`images`] | what the launch reads from the agent image (config, CA bundle, passwd) |
//! | [`bottle`] | one bottle's objects in order ([`bottle::Bottle`]) and their teardown |
//! | [`reap`] | removing the objects of bottles whose launcher is gone |
//! | [`lifecycle`] | pause, resume, kill, exec, capture, send-keys on a running bottle |
//! | [`verbs`] | list, logs, end |
pub mod backend;
pub mod bottle;
pub mod container_spec;
pub mod containers;
pub mod gate;
pub mod images;
pub mod lifecycle;
pub mod model_spec;
pub mod models;
pub mod networks;
pub mod probe;
pub mod reap;
pub mod verbs;

pub use backend::DockerBackend;

/// Whether an engine error means "no such object".
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
