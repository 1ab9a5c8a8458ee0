//! What this binary was built from, for `--version` and `/healthz`: the
//! crate version and the git commit given at build time in
//! `PORTICO_GIT_COMMIT` (the Dockerfiles pass their `GIT_COMMIT` build
//! argument), "unknown" when the build had none. Read by `option_env!`, so
//! a build never runs git and never fails for lack of it.

use std::sync::OnceLock;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const COMMIT: &str = match option_env!("PORTICO_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// `0.1.0 (commit 1a2b3c4)`, as `--version` prints it.
pub fn long_version() -> &'static str {
    static LONG: OnceLock<String> = OnceLock::new();
    LONG.get_or_init(|| format!("{VERSION} (commit {COMMIT})"))
}
