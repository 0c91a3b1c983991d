//! Progress output of image builds: indicatif spinners/bars on a terminal, plain lines otherwise.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where build progress goes (stderr).
pub struct Ui {
    multi: MultiProgress,
    tty: bool,
    quiet: bool,
}

/// One running step (a spinner or a byte bar).
pub struct Step {
    bar: ProgressBar,
    plain: bool,
    label: String,
}

impl Ui {
    /// Progress on stderr: animated when it is a terminal, plain lines when not, nothing when `quiet`.
    pub fn new(quiet: bool) -> Ui {
        let tty = !quiet && std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Ui {
            multi: MultiProgress::with_draw_target(target),
            tty,
            quiet,
        }
    }

    /// A one-line message (kept above the running spinners).
    pub fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            let _ = self.multi.println(format!("  {msg}"));
        } else {
            eprintln!("bottle images: {msg}");
        }
    }

    /// Starts a spinner for `label`; its message shows the latest detail line.
    pub fn spinner(&self, label: &str) -> Step {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        if self.tty {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.start(bar, label)
    }

    /// Starts a byte progress bar of `total` bytes for `label`.
    pub fn bytes(&self, label: &str, total: u64) -> Step {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:.bold} [{elapsed}] {bar:30} {bytes}/{total_bytes} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label.to_string());
        self.start(bar, label)
    }

    fn start(&self, bar: ProgressBar, label: &str) -> Step {
        let plain = !self.tty && !self.quiet;
        if plain {
            eprintln!("bottle images: {label} ...");
        }
        Step {
            bar,
            plain,
            label: label.to_string(),
        }
    }
}

impl Step {
    /// Shows `msg` as the current detail (terminal only).
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.trim().to_string());
    }

    /// A handle usable from another task.
    pub fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Ends the step with a final message.
    pub fn done(self, msg: &str) {
        if self.plain {
            eprintln!("bottle images: {}: {msg}", self.label);
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}
