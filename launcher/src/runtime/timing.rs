//! Per-phase launch timings on stderr (`BOTTLE_TRACE_TIMING=1`), for finding where the
//! start-up and teardown time of a bottle goes (bench/launcher/README.md).
//!
//! Each line is `bottle: timing [<ms since start>] <phase> <ms>`; phases that run
//! concurrently overlap. Nothing but phase names and durations is printed.
use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether timings are printed (`BOTTLE_TRACE_TIMING` set to anything but `0` or empty).
pub fn enabled() -> bool {
    *ENABLED.get_or_init(|| crate::settings::current().trace_timing())
}

/// Fixes the time origin (the first call wins; call it first thing in `main`).
pub fn init() -> Instant {
    *ORIGIN.get_or_init(Instant::now)
}

/// Prints one finished phase that started at `since`.
pub fn mark(phase: &str, since: Instant) {
    if enabled() {
        let origin = init();
        eprintln!(
            "bottle: timing [{:>7.1} ms] {phase:<28} {:>7.1} ms",
            origin.elapsed().as_secs_f64() * 1e3,
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Runs `fut` and prints how long it took as `phase`.
pub async fn timed<F: Future>(phase: &str, fut: F) -> F::Output {
    let t = Instant::now();
    let out = fut.await;
    mark(phase, t);
    out
}

/// Runs a synchronous step and prints how long it took as `phase`.
pub fn timed_sync<T>(phase: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    mark(phase, t);
    out
}
