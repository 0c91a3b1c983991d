//! Progress output of long work (image builds, model readiness): indicatif spinners and bars on a
//! terminal, plain lines otherwise.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes (stderr).
pub struct Ui {
    multi: MultiProgress,
    tty: bool,
    quiet: bool,
    prefix: &'static str,
}

/// One running step (a spinner or a byte bar).
pub struct Step {
    bar: ProgressBar,
    plain: bool,
    label: String,
    prefix: &'static str,
    /// A status spinner leaves no trace when dropped; a build step's stays as it was.
    clear_on_drop: bool,
}

impl Ui {
    /// Progress on stderr: animated when it is a terminal, plain lines starting `prefix: ` when
    /// not, nothing when `quiet`.
    pub fn new(prefix: &'static str, quiet: bool) -> Ui {
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
            prefix,
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
            eprintln!("{}: {msg}", self.prefix);
        }
    }

    /// Starts a spinner for `label`; its message shows the latest detail line.
    pub fn spinner(&self, label: &str) -> Step {
        let step = self.start(self.spinner_bar(label), label, false);
        step.started();
        step
    }

    /// Starts a spinner for `label` that prints no plain start line (its caller writes its own
    /// lines with [`Step::line`]) and disappears when dropped.
    pub fn status(&self, label: &str) -> Step {
        self.start(self.spinner_bar(label), label, true)
    }

    /// A spinner bar labelled `label`, ticking on a terminal.
    fn spinner_bar(&self, label: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        if self.tty {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        bar
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
        let step = self.start(bar, label, false);
        step.started();
        step
    }

    fn start(&self, bar: ProgressBar, label: &str, clear_on_drop: bool) -> Step {
        Step {
            bar,
            plain: !self.tty && !self.quiet,
            label: label.to_string(),
            prefix: self.prefix,
            clear_on_drop,
        }
    }
}

impl Step {
    /// The plain start line, `prefix: label ...`.
    fn started(&self) {
        if self.plain {
            eprintln!("{}: {} ...", self.prefix, self.label);
        }
    }

    /// Shows `msg` as the current detail (terminal only).
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.trim().to_string());
    }

    /// Whether progress is animated (a terminal), so that details are worth updating often.
    pub fn is_live(&self) -> bool {
        !self.plain && !self.bar.is_hidden()
    }

    /// Prints `prefix: msg` as a line of its own (above the spinners on a terminal; nothing
    /// when quiet).
    pub fn line(&self, msg: &str) {
        if self.plain {
            eprintln!("{}: {msg}", self.prefix);
        } else {
            self.bar.println(format!("{}: {msg}", self.prefix));
        }
    }

    /// A handle usable from another task.
    pub fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Ends the step with a final message.
    pub fn done(self, msg: &str) {
        if self.plain {
            eprintln!("{}: {}: {msg}", self.prefix, self.label);
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if self.clear_on_drop {
            self.bar.finish_and_clear();
        } else if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}
