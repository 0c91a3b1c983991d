//! bottle: sealed Docker sandboxes for coding agents. The `bottle` binary (`main.rs`) is a thin
//! CLI over these modules.
//!
//! | module | what |
//! |---|---|
//! | [`manifest`] | bottle / agent TOML → a resolved [`manifest::Plan`] |
//! | [`images`] | the offline image build, cached by content hash |
//! | [`doctor`] | `bottle doctor`: engine, runtimes, images, address pool |
//! | [`launch`] | plan + images + resolved secrets → [`runtime::spec::LaunchSpec`] |
//! | [`runtime`] | the Docker objects of a bottle and the verbs on running bottles |
//! | [`termfilter`] | agent output made safe for the user's terminal |
//! | [`trust`] | repository agents the user has reviewed (`bottle trust`) |
//! | [`guard`] | workspace checks: no config/state dir inside it, git metadata read-only |
//! | [`settings`] | every `BOTTLE_*` environment variable, read once at start |
pub mod agent_result;
pub mod doctor;
pub mod guard;
pub mod images;
pub mod launch;
pub mod manifest;
pub mod progress;
pub mod runtime;
pub mod settings;
pub mod termfilter;
pub mod trust;
